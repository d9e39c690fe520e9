"""DavidNet (David Page's 9-layer ResNet for CIFAR-10) ported from TF 1.x eager mode.

Framework-free modules (import without TensorFlow): `schedule`, `report`, `data`,
`config`, `errors`. TensorFlow modules: `model`, `optim`, `pipeline`, `train`.
"""
