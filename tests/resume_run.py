"""Deterministic runs, interrupted and resumed, compared with uninterrupted ones.

Run in its own process (tests/test_resume.py does): --deterministic switches on
TensorFlow's process-wide op determinism. A real SIGINT is sent to this process at a
chosen batch, so the signal handler, the mid-epoch checkpoint and --resume are all the
production code. Runs each case given as PIPELINE:PRECISION:SCOPE in turn (PIPELINE
`airbench` is --recipe airbench94, 4.5 epochs, stopped in its 4th, where the lookahead
EMA has started; the precision
belongs to each run's model, so cases share the process and its TensorFlow start) and
prints one JSON object per case with what the test checks.

    python -m tests.resume_run WORKDIR fast:fp32:full fast:mixed_bfloat16:light ..."""
import json
import os
import signal
import sys

import numpy as np
import tensorflow as tf

from legacy_eager import input_pipeline, train
from legacy_eager.config import parse_args
from legacy_eager.errors import run_cli
from legacy_eager.run import run
from tests import synthetic

EPOCHS = 3


def interrupt_at(epoch, batch, signum=signal.SIGINT):
    """A batch source for the run that sends `signum` to this process right after yielding
    that batch (the run then saves its checkpoint and stops)."""
    def batches(train_set, e, start=0):
        for k, item in enumerate(input_pipeline.epoch_batches(train_set, e, start), start=start):
            yield item
            if (e, k) == (epoch, batch):
                os.kill(os.getpid(), signum)
    return batches


def train_main(flags, batches=None):
    """legacy_eager.train's main, with the run's batch source given."""
    return run_cli(lambda: run(parse_args(flags), batches=batches))


def metrics(out):
    timing = {"train_time_s", "eval_time_s", "epoch_time_s", "elapsed_s", "images_per_s"}
    with open(os.path.join(out, "metrics.jsonl")) as f:
        return [{k: v for k, v in json.loads(line).items() if k not in timing} for line in f]


def final_tensors(out):
    reader = tf.train.load_checkpoint(tf.train.latest_checkpoint(os.path.join(out, "checkpoints")))
    return {k: reader.get_tensor(k) for k in reader.get_variable_to_shape_map()
            if k.startswith(("model/", "optimizer/", "global_step", "loss_scale/", "lookahead/"))}


def same_tensors(a, b):
    return sorted(a) == sorted(b) and all(np.array_equal(a[k], b[k]) for k in a)


def main(workdir, *cases):
    (xt, yt), (xs, ys) = synthetic.make_arrays(112, 1), synthetic.make_arrays(20, 2)
    tree = synthetic.write_image_tree(os.path.join(workdir, "data"), xt, yt, xs, ys)
    for case in cases:
        print(json.dumps(dict(case=case, **run_case(os.path.join(workdir, case.replace(":", "-")),
                                                    tree, *case.split(":")))), flush=True)


def run_case(workdir, tree, pipeline_name, precision, scope):
    flags = ["--data", tree, "--width", "4", "--batch-size", "16", "--epochs", str(EPOCHS),
             "--deterministic", "--pipeline", pipeline_name, "--precision", precision]
    stop_at = dict(epoch=1, batch=3)  # epoch 2, after its 4th batch (of 7)
    if pipeline_name == "airbench":  # 7 steps an epoch, 32 in all; the EMA starts at step 25
        flags = ["--data", tree, "--recipe", "airbench94", "--batch-size", "16", "--epochs", "4.5",
                 "--deterministic", "--precision", precision]
        stop_at = dict(epoch=3, batch=4)  # epoch 4, after step 26
    names = ("a", "a2", "b", "c") if scope == "full" else ("a", "b")
    out = {name: os.path.join(workdir, name) for name in names}
    codes = {name: train.main(flags + ["--out", out[name]]) for name in ("a", "a2") if name in out}

    codes["b_interrupted"] = train_main(flags + ["--out", out["b"]], interrupt_at(**stop_at))
    lines_while_stopped = len(metrics(out["b"]))
    codes["b_resumed"] = train.main(["--resume", out["b"]])
    a = final_tensors(out["a"])
    if scope != "full":
        return {
            "codes": codes, "lines_while_stopped": lines_while_stopped,
            "epochs": {k: [r["epoch"] for r in metrics(v)] for k, v in out.items()},
            "resumed_identical": metrics(out["a"]) == metrics(out["b"]),
            "resumed_same_weights": same_tensors(a, final_tensors(out["b"])),
            "tensors": len(a), "keys": sorted(a),
        }

    # C: stopped by SIGTERM, then its newest checkpoint damaged: resume falls back one.
    codes["c_interrupted"] = train_main(flags + ["--out", out["c"]],
                                        interrupt_at(epoch=1, batch=3, signum=signal.SIGTERM))
    newest = tf.train.latest_checkpoint(os.path.join(out["c"], "checkpoints"))
    with open(newest + ".data-00000-of-00001", "r+b") as f:
        f.truncate(100)
    codes["c_resumed"] = train.main(["--resume", out["c"]])

    return {
        "codes": codes,
        "lines_while_stopped": lines_while_stopped,
        "epochs": {k: [r["epoch"] for r in metrics(v)] for k, v in out.items()},
        "repeat_identical": metrics(out["a"]) == metrics(out["a2"]),
        "repeat_same_weights": same_tensors(a, final_tensors(out["a2"])),
        "resumed_identical": metrics(out["a"]) == metrics(out["b"]),
        "resumed_same_weights": same_tensors(a, final_tensors(out["b"])),
        "fallback_identical": metrics(out["a"]) == metrics(out["c"]),
        "fallback_same_weights": same_tensors(a, final_tensors(out["c"])),
        "tensors": len(a),
    }


if __name__ == "__main__":
    main(*sys.argv[1:])
