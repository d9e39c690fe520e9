"""What each TensorFlow setting does to the width-64 train step on this machine.

    python -m bench.step_variants [--batch-size 512] [--steps 3]

Each variant runs in its own process (thread counts and oneDNN must be set before
TensorFlow starts) and prints images/s of the compiled step; the table compares them
with the default settings measured in the same run.
"""
import argparse
import json
import os
import subprocess
import sys
import time

from legacy_eager.cli import Parser, positive
from legacy_eager.errors import run_cli

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

VARIANTS = {  # name: (environment, training flags)
    "default (function, fp32, oneDNN on)": ({}, {}),
    "oneDNN off (TF_ENABLE_ONEDNN_OPTS=0)": ({"TF_ENABLE_ONEDNN_OPTS": "0"}, {}),
    "1 inter-op thread": ({"DAVIDNET_INTER_OP": "1"}, {}),
    "4 intra-op threads (2 cores)": ({"DAVIDNET_INTRA_OP": "4"}, {}),
    "XLA (--mode xla)": ({}, {"mode": "xla"}),
    "bfloat16 (--precision mixed_bfloat16)": ({}, {"precision": "mixed_bfloat16"}),
    "float16 (--precision mixed_float16)": ({}, {"precision": "mixed_float16"}),
}


def child(batch_size, steps, flags):
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import numpy as np
    import tensorflow as tf

    if os.environ.get("DAVIDNET_INTER_OP"):
        tf.config.threading.set_inter_op_parallelism_threads(int(os.environ["DAVIDNET_INTER_OP"]))
    if os.environ.get("DAVIDNET_INTRA_OP"):
        tf.config.threading.set_intra_op_parallelism_threads(int(os.environ["DAVIDNET_INTRA_OP"]))
    from legacy_eager.config import Config
    from legacy_eager.trainer import Trainer

    trainer = Trainer(Config(width=64, batch_size=batch_size, **flags), 50000)
    x = tf.random.normal([batch_size, 32, 32, 3])
    y = tf.constant(np.arange(batch_size) % 10, tf.int64)
    trainer.train_step(x, y)[0].numpy()  # trace and compile, not timed
    t = time.perf_counter()
    for _ in range(steps):
        loss, _ = trainer.train_step(x, y)
    loss.numpy()
    print(batch_size * steps / (time.perf_counter() - t))


def parser():
    p = Parser(prog="python -m bench.step_variants", description=__doc__,
               formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--batch-size", type=positive(int, "integer"), default=512,
                   help="images per train step (default 512, the recipe's)")
    p.add_argument("--steps", type=positive(int, "integer"), default=3,
                   help="timed steps per variant, after one untimed step that traces and "
                        "compiles (default 3)")
    return p


def main(argv=None):
    return run_cli(compare, argv)


def compare(argv):
    args = parser().parse_args(argv)
    rates = {}
    for name, (env, flags) in VARIANTS.items():
        done = subprocess.run(
            [sys.executable, "-c", "import sys, json; from bench.step_variants import child; "
             f"child({args.batch_size}, {args.steps}, json.loads(sys.argv[1]))", json.dumps(flags)],
            cwd=ROOT, env=dict(os.environ, PYTHONPATH=ROOT, **env), capture_output=True, text=True)
        rates[name] = float(done.stdout.strip().splitlines()[-1]) if done.returncode == 0 else None
        shown = f"{rates[name]:8.1f} images/s" if rates[name] else "   failed: " + done.stderr[-200:]
        print(f"{name:<42} {shown}", flush=True)
    base = rates["default (function, fp32, oneDNN on)"]
    print(json.dumps({"batch_size": args.batch_size, "steps": args.steps, "images_per_s": rates,
                      "relative_to_default": {k: v / base for k, v in rates.items() if v}}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
