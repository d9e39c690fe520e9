"""The port's training step, for `python -m bench peers`: runs in the project's environment
and prints one JSON line.

    python -m bench.peers.port_step --precision fp32|bf16 --batch-sizes 256,512
        --warmup 2 --steps 4 --threads 2 --dropout 0.05

The step is the one training runs (legacy_eager.trainer.Trainer, function mode, the
default recipe with --dropout's rate: weight decay applied, Nesterov momentum), timed after
one tracing step and `warmup` more: the bf16 step's second call is still slow, so a single
untimed step would undercount it. Also measured here, in the same process: the 4096 x 4096
matmul peak of the step's precision in TensorFlow (GFLOP/s).
"""
import argparse
import json
import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from bench.timing import matmul_gflops

PRECISIONS = {"fp32": "fp32", "bf16": "mixed_bfloat16"}  # bench name: --precision


def measure(batch_size, precision, warmup, steps, dropout):
    """images/s of `steps` train steps after one tracing step and `warmup` more, and the
    shapes of the trainable variables."""
    import numpy as np
    import tensorflow as tf

    from legacy_eager.config import Config
    from legacy_eager.trainer import Trainer

    trainer = Trainer(Config(width=64, batch_size=batch_size, precision=PRECISIONS[precision],
                             dropout=dropout), 50000)
    x = tf.random.normal([batch_size, 32, 32, 3])
    y = tf.constant(np.arange(batch_size) % 10, tf.int64)
    for _ in range(1 + warmup):
        trainer.train_step(x, y)[0].numpy()
    t = time.perf_counter()
    for _ in range(steps):
        loss, _ = trainer.train_step(x, y)
    loss.numpy()
    shapes = [v.shape.as_list() for v in trainer.model.trainable_variables]
    return batch_size * steps / (time.perf_counter() - t), shapes


def main(argv=None):
    p = argparse.ArgumentParser(prog="python -m bench.peers.port_step")
    p.add_argument("--precision", choices=tuple(PRECISIONS), required=True)
    p.add_argument("--batch-sizes", default="256,512")
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--steps", type=int, default=4)
    p.add_argument("--threads", type=int, default=os.cpu_count())
    p.add_argument("--dropout", type=float, required=True)
    args = p.parse_args(argv)
    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(args.threads)
    result = {"engine": "tensorflow", "version": tf.__version__, "precision": args.precision,
              "threads": args.threads, "dropout": args.dropout, "images_per_s": {},
              "matmul_gflops": matmul_gflops(dtype=tf.float32 if args.precision == "fp32" else tf.bfloat16,
                                            warmups=2)}
    for b in map(int, args.batch_sizes.split(",")):
        result["images_per_s"][str(b)], result["parameter_shapes"] = measure(
            b, args.precision, args.warmup, args.steps, args.dropout)
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
