"""Where the width-64 train step's time goes: a TensorFlow profiler trace of a few steps,
summed by kind of op.

    python -m bench.profile_step [--precision fp32|mixed_bfloat16] [--batch-size 256]
        [--steps 2] [--logdir DIR]

The step is traced and warmed up (three calls) before the profiler starts, so the trace
holds steady-state steps only; the trace is kept in --logdir (TensorBoard's profile
plugin reads it). The table sums the kernels' own time per kind (op types and name scopes,
KINDS below) over the traced steps, divided by the steps: with two threads, ops that run
side by side both count, so the total can exceed the wall time, which is printed beside it.
"""
import argparse
import collections
import glob
import json
import os
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

# (kind, test on (scope, op type)), first match wins. Names come from the trace's events,
# "scope/of/the/op:OpType".
KINDS = [
    ("dropout (random mask, select, scale)", lambda scope, op: "stateless_dropout" in scope),
    ("conv forward", lambda scope, op: op.endswith(("Conv2D", "FusedConv2D"))),
    ("conv backward, input gradient", lambda scope, op: op.endswith("Conv2DBackpropInput")),
    ("conv backward, filter gradient", lambda scope, op: op.endswith("Conv2DBackpropFilter")),
    ("BatchNorm forward", lambda scope, op: "FusedBatchNorm" in op and "Grad" not in op),
    ("BatchNorm backward", lambda scope, op: "FusedBatchNorm" in op and "Grad" in op),
    ("casts", lambda scope, op: op in ("Cast", "_MklCast")),
    ("layout reorders", lambda scope, op: "ToTf" in op or "Transpose" in op or "Reorder" in op
     or "InputConversion" in op),
    ("ReLU and its gradient", lambda scope, op: "Relu" in op),
    ("max-pooling and its gradient", lambda scope, op: "MaxPool" in op or op == "Max"
     and "global_max" in scope),
    ("optimizer and weight decay", lambda scope, op: op.startswith("ResourceApply") or
     scope.startswith("Momentum") or "AddN" in op),
    ("residual adds and other element-wise", lambda scope, op: op in (
        "AddV2", "Add", "Mul", "Sub", "RealDiv", "Select", "SelectV2", "ZerosLike", "OnesLike",
        "_MklAdd", "_MklAddV2", "BroadcastTo", "Tile")),
]
OTHER = "other (loss, reductions, variable reads, bookkeeping)"


def kind_of(event_name):
    """The KINDS entry for a trace event "scope/op_name:OpType", None for an event that
    is not an op (the executor's, Python's)."""
    if event_name.count(":") != 1 or " " in event_name:
        return None  # the executor's and Python's events: "ExecutorState::Process", "step"
    scope, _, op = event_name.partition(":")
    if not scope or not (op[:1].isalpha() or op.startswith("_")):
        return None
    for kind, test in KINDS:
        if test(scope, op):
            return kind
    return OTHER


def summarize(events, steps):
    """{kind: ms per step} from (event name, duration in ms) pairs, largest first."""
    per_kind = collections.Counter()
    for name, ms in events:
        kind = kind_of(name)
        if kind is not None:
            per_kind[kind] += ms / steps
    return dict(per_kind.most_common())


def table(result):
    rows = [f"train step, width 64, batch {result['batch_size']}, {result['precision']}: "
            f"{result['wall_ms_per_step']:.0f} ms a step ({result['images_per_s']:.1f} images/s) "
            f"over {result['steps']} traced steps; op time {result['op_ms_per_step']:.0f} ms a step",
            "  kind                                        ms/step   share of op time"]
    for kind, ms in result["kinds"].items():
        rows.append(f"  {kind:<42} {ms:>8.1f}   {100 * ms / result['op_ms_per_step']:>6.1f}%")
    return "\n".join(rows)


def _trace_events(logdir):
    from tensorflow.tsl.profiler.protobuf import xplane_pb2

    paths = glob.glob(os.path.join(logdir, "**", "*.xplane.pb"), recursive=True)
    space = xplane_pb2.XSpace()
    with open(max(paths, key=os.path.getmtime), "rb") as f:
        space.ParseFromString(f.read())
    for plane in space.planes:
        if plane.name != "/host:CPU":
            continue
        names = {k: v.name for k, v in plane.event_metadata.items()}
        for line in plane.lines:
            for event in line.events:
                yield names[event.metadata_id], event.duration_ps / 1e9


def profile(precision, batch_size, steps, logdir):
    import numpy as np
    import tensorflow as tf

    from legacy_eager.config import Config
    from legacy_eager.trainer import Trainer

    trainer = Trainer(Config(width=64, batch_size=batch_size, precision=precision), 50000)
    x = tf.random.normal([batch_size, 32, 32, 3])
    y = tf.constant(np.arange(batch_size) % 10, tf.int64)
    for _ in range(3):  # trace, then two warm-up steps
        trainer.train_step(x, y)[0].numpy()
    tf.profiler.experimental.start(logdir)
    t = time.perf_counter()
    for _ in range(steps):
        trainer.train_step(x, y)[0].numpy()
    wall = time.perf_counter() - t
    tf.profiler.experimental.stop()
    kinds = summarize(_trace_events(logdir), steps)
    return {"precision": precision, "batch_size": batch_size, "steps": steps,
            "wall_ms_per_step": 1000 * wall / steps, "images_per_s": batch_size * steps / wall,
            "op_ms_per_step": sum(kinds.values()), "kinds": kinds, "logdir": logdir}


def main(argv=None):
    from legacy_eager.cli import Parser, positive
    from legacy_eager.errors import run_cli

    def body():
        p = Parser(prog="python -m bench.profile_step", description=__doc__,
                   formatter_class=argparse.RawDescriptionHelpFormatter)
        p.add_argument("--precision", choices=("fp32", "mixed_bfloat16"), default="mixed_bfloat16")
        p.add_argument("--batch-size", type=positive(int, "integer"), default=256)
        p.add_argument("--steps", type=positive(int, "integer"), default=2)
        p.add_argument("--logdir", metavar="DIR", default=None,
                       help="where the trace is kept (default: a new folder under /tmp)")
        args = p.parse_args(argv)
        logdir = args.logdir or tempfile.mkdtemp(prefix="davidnet-profile-")
        result = profile(args.precision, args.batch_size, args.steps, logdir)
        print(table(result))
        print(json.dumps(result))
    return run_cli(body)


if __name__ == "__main__":
    sys.exit(main())
