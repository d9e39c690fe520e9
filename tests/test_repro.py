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
    assert f"| median | {np.median(accs):.4f} |" in table
    assert [r["cpu"] for r in report["runs"]] == [
        json.load(open(out / f"run-{i}" / "config.json"))["machine"]["cpu_model"] for i in range(2)]
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
        f"error: --out {out}: the sweep was started with other flags (--width 4, not 8; "
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


def _start(*argv):
    return subprocess.Popen([sys.executable, "-m", "export.repro", *argv], cwd=ROOT,
                            env=dict(os.environ, PYTHONPATH=ROOT), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def _wait_for(condition, what, timeout=300):
    import time

    deadline = time.time() + timeout
    while not condition():
        assert time.time() < deadline, f"waited {timeout} s for {what}"
        time.sleep(0.2)


@pytest.mark.slow
def test_shards_started_together_train_disjoint_seeds_and_an_overlapping_one_trains_nothing_twice(
        tree, exported_run, tmp_path):
    """--runs 3 in one folder, seed 0 already done (the session's run): shards 1/2 (seeds 0,
    2) and 2/2 (seed 1) start at the same instant; while they train, --shard 1/1 (every
    seed) finds each seed done or claimed and trains none. The report covers all three."""
    from export import claims, sweep

    out = tmp_path / "fan"
    shutil.copytree(exported_run[0], out / "run-0")
    flags = ["--runs", "3", "--data", tree, *TRAINED_FLAGS, "--out", str(out)]
    first, second = _start(*flags, "--shard", "1/2"), _start(*flags, "--shard", "2/2")

    def training(seed):
        holder = claims.read_claim(sweep.claim_path(str(out), seed))
        return holder is not None and holder.child_pid is not None
    _wait_for(lambda: training(1) and training(2), "both shards to start their runs")
    third = _repro(*flags, "--shard", "1/1")
    assert third.returncode == 0, third.stderr[-2000:]
    lines = third.stdout.splitlines()
    assert lines[0] == f"{out}/run-0: done"
    for seed, line in zip((1, 2), lines[1:3]):
        assert line.startswith(f"{out}/run-{seed}: claimed by ") and line.endswith("; skipping it")
    assert lines[3].startswith(f"sweep {out}: 1 of 3 runs done; in progress: seed 1 (")
    assert len(lines) == 4 and not os.path.exists(out / "repro.json")

    outputs = {}
    for name, proc in (("1/2", first), ("2/2", second)):
        stdout, stderr = proc.communicate(timeout=600)
        assert proc.returncode == 0, stderr[-2000:]
        outputs[name] = stdout.splitlines()
    assert [line for line in outputs["1/2"] if line.startswith(str(out))] == [
        f"{out}/run-0: done", f"{out}/run-2: starting (seed 2)"]
    assert [line for line in outputs["2/2"] if line.startswith(str(out))] == [
        f"{out}/run-1: starting (seed 1)"]
    for name in outputs:  # each shard ends with the sweep's status, one line
        assert outputs[name][-1].startswith(f"sweep {out}: ")
    assert outputs["1/2"][-1] == f"sweep {out}: 3 of 3 runs done; in progress: none; missing: none" \
        or outputs["2/2"][-1] == f"sweep {out}: 3 of 3 runs done; in progress: none; missing: none"
    for seed in (1, 2):  # trained once, all of it, by the shard that claimed it
        assert json.load(open(out / f"run-{seed}" / "config.json"))["config"]["seed"] == seed
        assert sweep.run_state(str(out / f"run-{seed}")) == "done"
        assert [json.loads(line)["epoch"] for line in open(out / f"run-{seed}" / "metrics.jsonl")] == [1, 2]
    assert sorted(os.listdir(out)) == ["run-0", "run-1", "run-2", "sweep.json"]  # claims released

    report = _repro("--report", str(out), "--target", "0.15")
    assert report.returncode == 0, report.stderr[-2000:]
    result = json.load(open(out / "repro.json"))
    accs = [json.load(open(out / f"run-{i}" / "summary.json"))["final"]["val_acc"] for i in range(3)]
    assert [r["seed"] for r in result["runs"]] == [0, 1, 2]
    assert result["statistics"]["val_acc"]["median"] == pytest.approx(np.median(accs))
    assert result["missing"] == [] and result["in_progress"] == []
    assert f"| median | {np.median(accs):.4f} |" in (out / "repro.md").read_text()
    assert report.stdout.strip().splitlines()[-1] == (
        f"sweep {out}: 3 of 3 runs done; in progress: none; missing: none")


@pytest.mark.slow
def test_a_shard_killed_mid_run_is_resumed_by_starting_it_again(tree, tmp_path):
    """SIGKILL to the shard (no handler runs): its training child gets SIGTERM from the
    kernel, saves a checkpoint and exits; the claim stays, naming processes now gone on this
    machine, so the same command again takes it over at once and resumes the run."""
    import signal

    from export import claims, sweep

    out = tmp_path / "killed"
    flags = ["--runs", "1", "--shard", "1/1", "--data", tree, "--width", "4", "--batch-size", "4",
             "--epochs", "6", "--out", str(out)]
    shard = _start(*flags)
    metrics = out / "run-0" / "metrics.jsonl"
    _wait_for(lambda: metrics.exists() and metrics.read_text().count("\n") >= 1, "epoch 1")
    holder = claims.read_claim(sweep.claim_path(str(out), 0))
    assert holder.pid == shard.pid and claims.running(holder.child_pid)
    shard.kill()
    shard.communicate(timeout=60)
    _wait_for(lambda: not claims.running(holder.child_pid), "the orphaned run to stop", 120)
    assert sweep.run_state(str(out / "run-0")) == "resume"
    assert os.path.exists(out / "run-0" / "checkpoints")
    assert claims.read_claim(sweep.claim_path(str(out), 0)).token == holder.token  # left behind

    again = _repro(*flags)
    assert again.returncode == 0, again.stderr[-2000:]
    assert again.stdout.splitlines()[:2] == [
        f"{sweep.claim_path(str(out), 0)}: took over the stale claim of {holder.host} pid "
        f"{holder.pid} (pid {holder.pid} on this machine is gone)",
        f"{out}/run-0: resuming (seed 0)"]
    assert f"resuming {out}/run-0 from {out}/run-0/checkpoints" in again.stdout  # the trainer's
    assert [json.loads(line)["epoch"] for line in metrics.read_text().splitlines()] == [1, 2, 3, 4, 5, 6]
    assert sweep.run_state(str(out / "run-0")) == "done"
    assert not os.path.exists(sweep.claim_path(str(out), 0))  # released


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


def test_changed_flags_compares_the_recipe_not_where_it_is_written(tmp_path, tree, monkeypatch):
    """A run folder an older repro started (no sweep record) against the flags given now:
    effective flags, the seed, and the data by path or, where the paths differ, by content."""
    from export import sweep
    from legacy_eager.config import parse_args
    from legacy_eager.data.digest import content_digest

    monkeypatch.chdir(tmp_path)
    folder = tmp_path / "r" / "run-1"
    folder.mkdir(parents=True)
    config = dict(parse_args(["--data", "cifar", "--epochs", "8", "--out", str(folder)]).to_dict(),
                  seed=1)

    def started(config):
        (folder / "config.json").write_text(json.dumps(
            {"config": config, "data": {"path": str(tmp_path / "cifar"),
                                        "normalization": {"mean": [0, 0, 0]}, "classes": []}}))

    def changed(seed, *flags):
        wanted = parse_args(list(flags))
        return sweep.changed_flags(str(folder), seed, wanted,
                                   content_digest(os.path.abspath(wanted.data)) if wanted.data else None)
    started(config)
    shutil.copytree(tree, tmp_path / "cifar")
    assert changed(1, "--data", str(tmp_path / "cifar"), "--epochs", "8", "--allow-cpu") == []
    assert changed(1, "--data", "cifar", "--epochs", "8", "--recipe", "default") == []
    assert changed(1, "--epochs", "8") == []  # no data given: not compared
    shutil.copytree(tree, tmp_path / "mounted")  # the same images elsewhere
    assert changed(1, "--data", "mounted", "--epochs", "8") == []
    other = shutil.copytree(tree, tmp_path / "other")
    image = next((other / "train" / "cat").iterdir())
    image.write_bytes(image.read_bytes() + b"\0")
    assert changed(2, "--data", "other", "--epochs", "24") == [
        "--epochs 8, not 24", "--seed 1, not 2", f"--data {tmp_path}/cifar, not {tmp_path}/other"]
    # A run folder from before --dropout existed has no such key: it ran the seed's 0.05.
    del config["dropout"]
    started(config)
    assert changed(1, "--epochs", "8", "--dropout", "0.05") == []
    assert changed(1, "--epochs", "8", "--dropout", "0") == ["--dropout 0.05, not 0.0"]


def test_the_training_flags_are_passed_on_as_given_and_repros_own_are_not():
    args, train_flags, config = repro.parse(["--recipe", "dawnbench", "--runs", "3", "--width",
                                             "16", "--out", "x", "--target=0.5", "--shard", "1/2",
                                             "--dropout", "0.1", "--stale-after", "60"])
    assert (args.runs, args.out, args.target, args.stale_after) == (3, "x", 0.5, 60)
    assert train_flags == ["--recipe", "dawnbench", "--width", "16", "--dropout", "0.1"]
    assert (config.width, config.dropout, config.cutout) == (16, 0.1, 8)


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
