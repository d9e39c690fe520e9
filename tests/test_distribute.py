"""Several devices (MirroredStrategy over logical CPUs) and several workers (loopback)."""
import json
import os
import subprocess
import sys

import pytest

from legacy_eager import train

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _replica_run(steps):
    done = subprocess.run([sys.executable, "-m", "tests.replica_run", str(steps)], cwd=ROOT,
                          env=dict(os.environ, PYTHONPATH=ROOT), capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_two_replica_step_equals_one_replica_step():
    """Summed loss, summed gradients, decay added once, one global step per global batch."""
    r = _replica_run(steps=1)
    assert r["replicas"] == [1, 2] and r["global_step"] == [1, 1] and r["moved"] > 0.01
    assert r["loss"] < 1e-5
    # float32 round-off of different kernel batch sizes (measured about 1e-5 and 6e-5)
    assert r["weights"] < 1e-4 and r["slots"] < 3e-4 and r["moving_means"] < 1e-4
    # Bessel's correction n/(n-1) with n per replica (measured 1.6e-4)
    assert r["moving_variances"] < 1e-3
    # Over more steps the losses keep agreeing and the step counts global batches.
    r = _replica_run(steps=3)
    assert r["global_step"] == [3, 3] and r["loss"] < 1e-5


def test_mixed_float16_is_refused_on_several_devices(capsys):
    assert train.main(["--devices", "2", "--precision", "mixed_float16"]) == 2
    err = capsys.readouterr().err.strip()
    assert "mixed_float16 runs on one device only" in err and "\n" not in err
