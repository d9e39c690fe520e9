"""DavidNet (David Page's 9-layer ResNet for CIFAR-10) ported from TF 1.x eager mode.

Framework-free (import without TensorFlow): `schedule`, `report`, `data` (but for TFDS
folders), `config`, `cli`, `errors`, `atomic`, `signals`, `devices`, `streams`,
`run_folder`, `plots`, `tta`, and `run` and `train` until a run starts. TensorFlow: `model`,
`optim`, `input_pipeline`, `steps`, `loss_scale`, `trainer`, `loop`, `checkpoints`,
`tensorboard`.
"""
