"""What the benchmarks measure on: synthetic uint8 images of CIFAR-10's shape, and a
width-64 run folder exported to a SavedModel, ONNX and INT8 ONNX (untrained weights: speed
does not depend on them)."""
import os

import numpy as np


def synthetic(n, seed=0):
    rng = np.random.default_rng(seed)
    return (rng.integers(0, 256, size=(n, 32, 32, 3), dtype=np.uint8),
            (np.arange(n) % 10).astype(np.int64))


def make_export(folder, width=64):
    """A width-64 run folder (untrained weights: speed does not depend on them), exported."""
    import tensorflow as tf

    from export.onnx import convert, finish_model, quantize_int8
    from export.savedmodel import export_savedmodel
    from legacy_eager.data import CLASSES
    from legacy_eager.model import DavidNet, build
    from legacy_eager.atomic import write_json
    from legacy_eager.trainer import Progress

    model = build(DavidNet(c=width))
    progress = Progress()
    progress.set(epoch=1)  # a finished one-epoch run, which is what export accepts
    x, _ = synthetic(1024, seed=1)
    mean, std = x.mean(axis=(0, 1, 2)), x.std(axis=(0, 1, 2))
    run_info = {"config": {"width": width, "epochs": 1},
                "data": {"classes": list(CLASSES),
                         "normalization": {"mean": mean.tolist(), "std": std.tolist()}}}
    write_json(os.path.join(folder, "config.json"), run_info)
    tf.train.Checkpoint(model=model, progress=progress).save(os.path.join(folder, "checkpoints", "ckpt"))
    saved_model = export_savedmodel(folder)
    fp32 = os.path.join(folder, "model.onnx")
    convert(saved_model, fp32)
    finish_model(fp32, run_info)
    int8 = os.path.join(folder, "model.int8.onnx")
    quantize_int8(fp32, int8, x)
    return saved_model, fp32, int8
