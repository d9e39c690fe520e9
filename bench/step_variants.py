"""What each TensorFlow setting does to the width-64 train step on this machine.

    python -m bench.step_variants [--batch-size 256] [--steps 3] [--rounds 3] [--only NAME ...]

Each variant runs in its own process (thread counts, oneDNN and grappler must be set before
TensorFlow starts or the step is traced), after one tracing step and two warm-up steps (the
bf16 step's second call is still slow: timing after one reads it low). The variants run in
turn, round after round, so that all of them see the same noise; each is reported as the
median of its images/s and the median, over rounds, of its ratio to the default measured
in the same round (bf16 variants also to the plain bf16 step).
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import time

from legacy_eager.cli import Parser, positive
from legacy_eager.errors import run_cli

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT = "default (function, fp32, oneDNN on)"
BF16 = "bfloat16 (--precision mixed_bfloat16)"

VARIANTS = {  # name: (environment, training flags)
    DEFAULT: ({}, {}),
    "oneDNN off (TF_ENABLE_ONEDNN_OPTS=0)": ({"TF_ENABLE_ONEDNN_OPTS": "0"}, {}),
    "1 inter-op thread": ({"DAVIDNET_INTER_OP": "1"}, {}),
    "4 intra-op threads (2 cores)": ({"DAVIDNET_INTRA_OP": "4"}, {}),
    "XLA (--mode xla)": ({}, {"mode": "xla"}),
    BF16: ({}, {"precision": "mixed_bfloat16"}),
    "float16 (--precision mixed_float16)": ({}, {"precision": "mixed_float16"}),
    # bf16 without the Keras policy: float32 tensors, oneDNN computing convolutions in bf16
    "fp32 model, oneDNN fpmath bf16 (ONEDNN_DEFAULT_FPMATH_MODE=BF16)":
        ({"ONEDNN_DEFAULT_FPMATH_MODE": "BF16"}, {}),
    # grappler's oneDNN bf16 rewrite of the float32 graph, instead of the Keras policy
    "fp32 model, grappler auto_mixed_precision_onednn_bfloat16":
        ({"DAVIDNET_GRAPPLER": "auto_mixed_precision_onednn_bfloat16"}, {}),
    # the bf16 step's gradient convolutions one at a time, each on both cores
    "bfloat16, 1 inter-op thread": ({"DAVIDNET_INTER_OP": "1"}, {"precision": "mixed_bfloat16"}),
}


def child(batch_size, steps, flags):
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import numpy as np
    import tensorflow as tf

    if os.environ.get("DAVIDNET_INTER_OP"):
        tf.config.threading.set_inter_op_parallelism_threads(int(os.environ["DAVIDNET_INTER_OP"]))
    if os.environ.get("DAVIDNET_INTRA_OP"):
        tf.config.threading.set_intra_op_parallelism_threads(int(os.environ["DAVIDNET_INTRA_OP"]))
    if os.environ.get("DAVIDNET_GRAPPLER"):
        tf.config.optimizer.set_experimental_options({os.environ["DAVIDNET_GRAPPLER"]: True})
    from legacy_eager.config import Config
    from legacy_eager.trainer import Trainer

    trainer = Trainer(Config(width=64, batch_size=batch_size, **flags), 50000)
    x = tf.random.normal([batch_size, 32, 32, 3])
    y = tf.constant(np.arange(batch_size) % 10, tf.int64)
    for _ in range(3):  # trace, then two warm-up steps, not timed
        trainer.train_step(x, y)[0].numpy()
    t = time.perf_counter()
    for _ in range(steps):
        loss, _ = trainer.train_step(x, y)
    loss.numpy()
    print(batch_size * steps / (time.perf_counter() - t))


def parser():
    p = Parser(prog="python -m bench.step_variants", description=__doc__,
               formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--batch-size", type=positive(int, "integer"), default=256,
                   help="images per train step (default 256)")
    p.add_argument("--steps", type=positive(int, "integer"), default=3,
                   help="timed steps per variant, after the untimed ones that trace and warm up "
                        "(default 3)")
    p.add_argument("--rounds", type=positive(int, "integer"), default=3,
                   help="alternations of the variants; the table takes medians (default 3)")
    p.add_argument("--only", choices=tuple(VARIANTS), action="append", metavar="NAME",
                   help="run this variant (repeatable; the default and the bf16 step always "
                        "run, as the references)")
    return p


def relative(rates, base):
    """Median over rounds of each variant's images/s over `base`'s in the same round
    (rounds where either failed are left out); None when no round has both."""
    out = {}
    for name, runs in rates.items():
        pairs = [a / b for a, b in zip(runs, rates[base]) if a and b]
        out[name] = statistics.median(pairs) if pairs else None
    return out


def main(argv=None):
    return run_cli(compare, argv)


def compare(argv):
    args = parser().parse_args(argv)
    names = [n for n in VARIANTS if not args.only or n in args.only or n in (DEFAULT, BF16)]
    rates = {name: [] for name in names}
    for r in range(args.rounds):
        for name in names:
            env, flags = VARIANTS[name]
            done = subprocess.run(
                [sys.executable, "-c", "import sys, json; from bench.step_variants import child; "
                 f"child({args.batch_size}, {args.steps}, json.loads(sys.argv[1]))", json.dumps(flags)],
                cwd=ROOT, env=dict(os.environ, PYTHONPATH=ROOT, **env), capture_output=True, text=True)
            rate = float(done.stdout.strip().splitlines()[-1]) if done.returncode == 0 else None
            rates[name].append(rate)
            shown = f"{rate:8.1f} images/s" if rate else "   failed: " + done.stderr[-200:]
            print(f"round {r + 1}: {name:<66} {shown}", file=sys.stderr, flush=True)
    to_default, to_bf16 = relative(rates, DEFAULT), relative(rates, BF16)
    print(f"{'variant':<66} {'images/s':>9} {'vs default':>11} {'vs bf16':>8}")
    for name in names:
        ok = [v for v in rates[name] if v]
        median = f"{statistics.median(ok):9.1f}" if ok else f"{'failed':>9}"
        a, b = to_default[name], to_bf16[name]
        print(f"{name:<66} {median} {'' if a is None else f'{a:10.2f}x':>11} "
              f"{'' if b is None else f'{b:7.2f}x':>8}")
    print(json.dumps({"batch_size": args.batch_size, "steps": args.steps, "rounds": args.rounds,
                      "images_per_s": rates, "relative_to_default": to_default,
                      "relative_to_bf16": to_bf16}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
