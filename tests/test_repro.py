"""./run.sh repro: N seeded runs, their statistics, and going on after an interruption."""
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from export import repro
from legacy_eager.errors import UsageError
from tests.conftest import TRAINED_FLAGS

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _repro(*argv):
    return subprocess.run([sys.executable, "-m", "export.repro", *argv], cwd=ROOT,
                          env=dict(os.environ, PYTHONPATH=ROOT), capture_output=True, text=True,
                          timeout=600)


@pytest.mark.slow
def test_two_runs_report_their_distribution_and_a_rerun_only_finishes_what_is_missing(
        tree, exported_run, tmp_path):
    """Its folder starts with seed 0's run finished (the session's shared run, trained with
    the same flags, as if `--runs 1` had made it): --runs 2 adds seed 1 and reports both."""
    out = tmp_path / "r"
    flags = ["--runs", "2", "--target", "0.15", "--data", tree, *TRAINED_FLAGS, "--out", str(out)]
    shutil.copytree(exported_run[0], out / "run-0")
    first = _repro(*flags)
    assert first.returncode == 0, first.stderr[-2000:]
    assert first.stdout.splitlines()[:2] == [f"{out}/run-0: done", f"{out}/run-1: starting (seed 1)"]
    report = json.load(open(out / "repro.json"))
    summaries = [json.load(open(out / f"run-{i}" / "summary.json")) for i in range(2)]
    assert [r["seed"] for r in report["runs"]] == [0, 1]
    assert [s["config"]["seed"] for s in summaries] == [0, 1]
    accs = np.array([s["final"]["val_acc"] for s in summaries])
    stats = report["statistics"]
    assert stats["val_acc"]["mean"] == pytest.approx(accs.mean())
    assert stats["val_acc"]["std"] == pytest.approx(accs.std(ddof=1))
    assert (stats["val_acc"]["min"], stats["val_acc"]["max"]) == (accs.min(), accs.max())
    assert stats["reached_target"] == int((accs >= 0.15).sum())
    parities = [json.load(open(out / f"run-{i}" / "parity.json")) for i in range(2)]
    assert [r["onnx_accuracy_tta"] for r in report["runs"]] == [p["tta"]["onnx_accuracy"] for p in parities]
    table = (out / "repro.md").read_text()
    assert f"| seed 1 | {accs[1]:.4f} |" in table and f"| mean | {accs.mean():.4f} |" in table
    with Image.open(out / "repro.png") as img:
        assert img.format == "PNG" and img.size == (1200, 360)

    stamps = {i: os.stat(out / f"run-{i}" / "summary.json").st_mtime_ns for i in range(2)}
    again = _repro(*flags)
    assert again.returncode == 0
    assert again.stdout.splitlines()[:2] == [f"{out}/run-0: done", f"{out}/run-1: done"]
    assert {i: os.stat(out / f"run-{i}" / "summary.json").st_mtime_ns for i in range(2)} == stamps

    # Other flags into the same folder would mix two recipes in one report: refused.
    other = _repro(*flags, "--width", "8", "--cutout", "4")
    assert other.returncode == 2
    assert other.stderr.strip() == (
        f"error: --out {out}: {out}/run-0 was started with other flags (--width 4, not 8; "
        "--cutout 0, not 4); give the same flags to go on, or another --out")
    assert {i: os.stat(out / f"run-{i}" / "summary.json").st_mtime_ns for i in range(2)} == stamps

    # As if stopped before run-1's end: it is resumed from its checkpoint, run-0 left alone.
    os.remove(out / "run-1" / "summary.json")
    resumed = _repro(*flags)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert f"{out}/run-1: resuming (seed 1)" in resumed.stdout
    assert os.stat(out / "run-0" / "summary.json").st_mtime_ns == stamps[0]
    assert json.load(open(out / "repro.json"))["runs"][1]["val_acc"] == pytest.approx(accs[1])


@pytest.mark.slow
@pytest.mark.parametrize("signame", ["SIGINT", "SIGTERM"])
def test_a_signal_to_repro_lets_the_run_save_its_checkpoint(tree, tmp_path, signame):
    """SIGINT or SIGTERM to repro alone (as `kill`; Ctrl-C reaches both): the run in progress
    finishes its step (or its evaluation), saves a checkpoint and exits 130 or 143, and so
    does repro. Repro is started as a shell starts a background job, with SIGINT ignored:
    it must still pass the signal on."""
    import signal
    import time

    sig = getattr(signal, signame)
    out = tmp_path / "r"
    proc = subprocess.Popen([sys.executable, "-m", "export.repro", "--runs", "1", "--data", tree,
                             "--width", "4", "--batch-size", "4", "--epochs", "30", "--out", str(out)],
                            cwd=ROOT, env=dict(os.environ, PYTHONPATH=ROOT),
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    metrics = out / "run-0" / "metrics.jsonl"
    deadline = time.time() + 300
    while not (metrics.exists() and metrics.read_text().count("\n") >= 1) and time.time() < deadline:
        time.sleep(0.2)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=300)
    code = 128 + sig
    assert proc.returncode == code, err[-2000:]
    assert f"error: stopped by {signame}" in err and "checkpoint saved" in err
    assert f"run-0 stopped (exit {code})" in err.strip().splitlines()[-1]
    assert repro.run_state(str(out / "run-0")) == "resume"


def test_run_states(tmp_path):
    folder = str(tmp_path / "run-0")
    assert repro.run_state(folder) == "new"
    os.makedirs(folder)
    (tmp_path / "run-0" / "config.json").write_text("{}")
    assert repro.run_state(folder) == "resume"
    (tmp_path / "run-0" / "summary.json").write_text("{}")
    assert repro.run_state(folder) == "export"
    (tmp_path / "run-0" / "parity.json").write_text('{"result": "fail"}')
    assert repro.run_state(folder) == "export"
    (tmp_path / "run-0" / "parity.json").write_text('{"result": "pass"}')
    assert repro.run_state(folder) == "done"


def test_changed_flags_compares_the_recipe_not_where_it_is_written(tmp_path, monkeypatch):
    from legacy_eager.config import parse_args

    monkeypatch.chdir(tmp_path)
    folder = tmp_path / "r" / "run-1"
    folder.mkdir(parents=True)
    config = dict(parse_args(["--data", "cifar", "--epochs", "8", "--out", str(folder)]).to_dict(),
                  seed=1)
    (folder / "config.json").write_text(json.dumps(
        {"config": config, "data": {"path": str(tmp_path / "cifar"),
                                    "normalization": {"mean": [0, 0, 0]}, "classes": []}}))
    same = ["--data", str(tmp_path / "cifar"), "--epochs", "8", "--allow-cpu"]
    assert repro.changed_flags(str(folder), 1, same) == []
    assert repro.changed_flags(str(folder), 1, ["--epochs", "8"]) == []  # data: the default
    assert repro.changed_flags(str(folder), 2, ["--data", "other", "--epochs", "24"]) == [
        "--epochs 8, not 24", "--seed 1, not 2", f"--data {tmp_path}/cifar, not {tmp_path}/other"]
    # A run folder from before --dropout existed has no such key: it ran the seed's 0.05.
    del config["dropout"]
    (folder / "config.json").write_text(json.dumps(
        {"config": config, "data": {"path": str(tmp_path / "cifar"),
                                    "normalization": {"mean": [0, 0, 0]}, "classes": []}}))
    assert repro.changed_flags(str(folder), 1, ["--epochs", "8", "--dropout", "0.05"]) == []
    assert repro.changed_flags(str(folder), 1, ["--epochs", "8", "--dropout", "0"]) == [
        "--dropout 0.05, not 0.0"]


def test_the_training_flags_are_passed_on_as_given_and_repros_own_are_not():
    args, train_flags = repro.parse(["--recipe", "dawnbench", "--runs", "3", "--width", "16",
                                     "--out", "x", "--target=0.5", "--dropout", "0.1"])
    assert (args.runs, args.out, args.target) == (3, "x", 0.5)
    assert train_flags == ["--recipe", "dawnbench", "--width", "16", "--dropout", "0.1"]


@pytest.mark.parametrize("argv,message", [
    (["--runs", "2", "--out", "x", "--seed", "3"], "--seed: repro sets it for each run"),
    (["--runs", "2", "--out", "x", "--resume", "y"], "--resume: repro sets it for each run"),
    (["--runs", "0", "--out", "x"], "argument --runs: expected a positive integer, got 0"),
    (["--runs", "2", "--out", "x", "--target", "94"],
     "argument --target: expected an accuracy in (0, 1], got 94"),
    (["--runs", "2", "--out", "x", "--epochs", "-1"], "argument --epochs: expected a positive integer"),
    (["--runs", "2"], "the following arguments are required: --out"),
])
def test_bad_flags_fail_in_one_line_before_any_run(argv, message):
    with pytest.raises(UsageError) as e:
        repro.parse(argv)
    assert message in str(e.value)
