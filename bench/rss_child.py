"""One training process on 50,000 synthetic CIFAR-sized images; prints its peak RSS (MB).

    python -m bench.rss_child PIPELINE WIDTH STEPS
"""
import os
import sys

import numpy as np


def main(pipeline_name, width, steps):
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    from legacy_eager import input_pipeline
    from legacy_eager.config import Config
    from legacy_eager.trainer import Trainer

    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, size=(50000, 32, 32, 3), dtype=np.uint8)
    y = (np.arange(50000) % 10).astype(np.int64)
    mean, std = input_pipeline.channel_stats(x)
    make_train_set, _ = input_pipeline.PIPELINES[pipeline_name]
    train_set = make_train_set(x, y, mean, std, 512)
    del x  # as legacy_eager.train does: the pipeline holds its own copy
    trainer = Trainer(Config(width=width, pipeline=pipeline_name), 50000)
    for i, (bx, by) in enumerate(train_set):
        trainer.train_step(bx, by)
        if i + 1 == steps:
            break
    print(peak_rss_mb())


def peak_rss_mb():
    """This process's own high-water mark. (getrusage's ru_maxrss would do, but Linux keeps
    it across exec, so a child started by a large parent reports the parent's peak.)"""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM in /proc/self/status")


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]))
