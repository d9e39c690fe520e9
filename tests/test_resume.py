"""Resume after SIGINT, a damaged checkpoint, determinism, and the non-finite-loss stop."""
import json
import os
import subprocess
import sys

import pytest

from legacy_eager import train
from tests import synthetic

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.parametrize("pipeline", ["fast"])
def test_interrupted_and_resumed_runs_equal_uninterrupted_ones(tmp_path, pipeline):
    done = subprocess.run([sys.executable, "-m", "tests.resume_run", str(tmp_path), pipeline],
                          cwd=ROOT, env=dict(os.environ, PYTHONPATH=ROOT),
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    r = json.loads(done.stdout.strip().splitlines()[-1])
    assert r["codes"] == {"a": 0, "a2": 0, "b_interrupted": 130, "b_resumed": 0,
                          "c_interrupted": 143, "c_resumed": 0}  # SIGINT 130, SIGTERM 143
    assert r["lines_while_stopped"] == 1  # stopped in epoch 2
    assert r["epochs"] == {k: [1, 2, 3] for k in ("a", "a2", "b", "c")}  # no gaps, no repeats
    assert r["repeat_identical"] and r["repeat_same_weights"]
    assert r["resumed_identical"] and r["resumed_same_weights"]
    assert r["fallback_identical"] and r["fallback_same_weights"]
    assert r["tensors"] > 40  # model, momentum slots and global step were all compared
    assert "is damaged" in done.stderr and "trying the one before" in done.stderr


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    root = tmp_path_factory.mktemp("data") / "cifar"
    (xt, yt), (xs, ys) = synthetic.make_arrays(48, 1), synthetic.make_arrays(20, 2)
    return synthetic.write_image_tree(str(root), xt, yt, xs, ys)


def test_absurd_learning_rate_stops_with_exit_3(tree, tmp_path, capsys):
    out = tmp_path / "nan"
    code = train.main(["--data", tree, "--out", str(out), "--width", "4", "--batch-size", "16",
                       "--epochs", "3", "--lr", "1e12"])
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert code == 3
    assert err.startswith("error: loss is not finite at global step ")
    assert "epoch" in err and "learning rate" in err and "last good checkpoint" in err
    assert not (out / "summary.json").exists()
    lines = (out / "metrics.jsonl").read_text().splitlines() if (out / "metrics.jsonl").exists() else []
    import math
    assert all(math.isfinite(json.loads(line)["train_loss"]) for line in lines)


def test_resume_refuses_other_flags(capsys):
    assert train.main(["--resume", "/tmp/somewhere", "--epochs", "5"]) == 2
    assert "--resume continues a run with its own flags; drop --epochs" in capsys.readouterr().err


def test_resume_of_a_folder_that_is_no_run(tmp_path, capsys):
    assert train.main(["--resume", str(tmp_path)]) == 2
    assert f"--resume {tmp_path}: no config.json" in capsys.readouterr().err
