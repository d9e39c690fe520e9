"""Several devices (MirroredStrategy over logical CPUs) and several workers (loopback)."""
import json
import os
import subprocess
import sys

import pytest

from legacy_eager import train
from tests.children import run_child


ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _replica_run(steps):
    """What tests/replica_run measured after its first step and after its last."""
    return run_child("tests.replica_run", steps)[0]


@pytest.mark.slow
def test_two_replica_step_equals_one_replica_step():
    """Summed loss, summed gradients, decay added once, one global step per global batch."""
    r, last = _replica_run(steps=3)
    assert r["replicas"] == [1, 2] and r["global_step"] == [1, 1] and r["moved"] > 0.01
    assert r["loss"] < 1e-5
    # float32 round-off of different kernel batch sizes (measured about 1e-5 and 6e-5)
    assert r["weights"] < 1e-4 and r["slots"] < 3e-4 and r["moving_means"] < 1e-4
    # Bessel's correction n/(n-1) with n per replica (measured 1.6e-4)
    assert r["moving_variances"] < 1e-3
    # Over more steps the losses keep agreeing and the step counts global batches.
    assert last["global_step"] == [3, 3] and last["loss"] < 1e-5


def test_mixed_float16_is_refused_on_several_devices(capsys):
    assert train.main(["--devices", "2", "--precision", "mixed_float16"]) == 2
    err = capsys.readouterr().err.strip()
    assert "mixed_float16 runs on one device only" in err and "\n" not in err


@pytest.mark.slow
def test_two_device_run_learns_and_exports_what_it_evaluated(tmp_path):
    """Through ./run.sh's own job: training on 2 logical CPUs, then export, whose check
    fails (exit 1) unless ONNX accuracy equals the run's val_acc to 0.1 point."""
    from tests import synthetic

    (xt, yt), (xs, ys) = synthetic.make_arrays(192, 1), synthetic.make_arrays(40, 1)
    tree = synthetic.write_image_tree(str(tmp_path / "data"), xt, yt, xs, ys)
    out = tmp_path / "run"
    done = subprocess.run(
        [sys.executable, "-m", "export.train_and_export", "--data", tree, "--width", "8", "--batch-size",
         "32", "--epochs", "4", "--devices", "2", "--out", str(out)],
        cwd=ROOT, env=dict(os.environ, PYTHONPATH=ROOT), capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    summary = json.load(open(out / "summary.json"))
    assert any(d.endswith("CPU:1") for d in summary["devices"]["logical"])
    assert summary["devices"]["used"].startswith("CPU (")
    records = [json.loads(line) for line in open(out / "metrics.jsonl")]
    assert records[-1]["train_loss"] < 0.8 * records[0]["train_loss"]  # it learns
    assert records[-1]["global_step"] == 4 * 6  # 192 images in global batches of 32
