"""DavidNet (David Page's 9-layer ResNet for CIFAR-10) ported from TF 1.x eager mode.

Framework-free (import without TensorFlow): `schedule`, `report`, `data`, `config`,
`errors`, and `train` until it starts a run. TensorFlow: `model`, `optim`, `pipeline`,
`trainer`.
"""
