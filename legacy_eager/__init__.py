"""DavidNet (David Page's 9-layer ResNet for CIFAR-10) ported from TF 1.x eager mode.

Framework-free (import without TensorFlow): `schedule`, `report`, `data` (but for TFDS
folders), `config`, `errors`, `devices`, `streams`, `run_folder`, `plots`, and `train`
until it starts a run. TensorFlow: `model`, `optim`, `pipeline`, `steps`, `loss_scale`,
`trainer`, `loop`, `checkpoints`, `tensorboard`.
"""
