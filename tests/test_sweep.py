"""A sweep folder without training: its record (one recipe, one dataset, compared by
content), the report of finished, running and missing seeds, and the refusals. The run
folders here are written as the trainer writes them (config.json, metrics.jsonl,
summary.json, parity.json), with chosen accuracies; tests/test_repro.py trains real ones."""
import json
import os
import shutil

import numpy as np
import pytest

from export import claims, repro, sweep
from export.repro_report import statistics
from legacy_eager.config import parse_args
from legacy_eager.errors import UsageError
from legacy_eager.machine import describe_machine

FLAGS = ["--width", "4", "--batch-size", "16", "--epochs", "2"]


def write_run(folder, flags, seed, data, accs=None, epochs_done=None, machine=True, older=False):
    """A run folder as legacy_eager.run writes it: finished (with `accs`: val_acc, flip TTA,
    ONNX, ONNX TTA) or stopped after `epochs_done` epochs. older: config.json as written
    before the recipe and the machine were recorded."""
    config = parse_args(list(flags)).to_dict()
    config.update(seed=seed, out=str(folder), data=data)
    info = {"config": config, "recipe": None,
            "data": {"path": data, "source": f"{data} (image folders)", "len_train": 48,
                     "len_test": 20, "classes": ["airplane"] * 10,
                     "normalization": {"mean": [120.0] * 3, "std": [60.0] * 3}},
            "machine": describe_machine() if machine else None}
    if older:
        del info["recipe"], info["machine"], config["recipe"]
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, "config.json"), "w") as f:
        json.dump(info, f)
    epochs = config["epochs"] if accs else epochs_done
    with open(os.path.join(folder, "metrics.jsonl"), "w") as f:
        for epoch in range(1, epochs + 1):
            f.write(json.dumps({"epoch": epoch, "train_time_s": 10.0 * seed + epoch,
                                "val_acc": 0.5, "val_acc_tta": 0.5}) + "\n")
    if accs:
        with open(os.path.join(folder, "summary.json"), "w") as f:
            json.dump(dict(info, final={"val_acc": accs[0], "val_acc_tta": accs[1]},
                           total_time_s=99.0), f)
        with open(os.path.join(folder, "parity.json"), "w") as f:
            json.dump({"result": "pass", "onnx_accuracy": accs[2], "tta": {"onnx_accuracy": accs[3]}}, f)
    return str(folder)


def record(out, runs, flags, data):
    config = parse_args(list(flags) + ["--data", data])
    made, _ = sweep.open_sweep(str(out), sweep.new_record(runs, config, flags, sweep.content_digest(data)))
    return made


def test_the_report_of_a_half_finished_sweep_names_the_seeds_in_progress_and_missing(tmp_path, tree, capsys):
    out = tmp_path / "sweep"
    out.mkdir()
    record(out, 6, FLAGS, tree)
    write_run(out / "run-0", FLAGS, 0, tree, accs=(0.95, 0.96, 0.95, 0.96))
    write_run(out / "run-3", FLAGS, 3, tree, accs=(0.93, 0.94, 0.93, 0.94))
    write_run(out / "run-1", FLAGS, 1, tree, epochs_done=1)
    live = claims.acquire(sweep.claim_path(str(out), 1))  # this process trains seed 1
    write_run(out / "run-2", FLAGS, 2, tree, epochs_done=1)  # stopped, no claim
    claims.acquire(sweep.claim_path(str(out), 4))  # claimed, its run folder not made yet
    assert repro.main(["--report", str(out)]) == 0
    printed = capsys.readouterr().out
    report = json.load(open(out / "repro.json"))
    assert [r["seed"] for r in report["runs"]] == [0, 3]
    assert report["missing"] == [5]
    assert [(s["seed"], s["state"]) for s in report["in_progress"]] == [
        (1, "resume"), (2, "resume"), (4, "new")]
    assert report["in_progress"][2]["detail"].startswith(f"claimed by {live.info['host']} pid ")
    cpu = describe_machine()["cpu_model"]
    assert report["in_progress"][0]["detail"] == (
        f"epoch 1 of 2 done, fp32, CPU {cpu}; claimed by {live.info['host']} pid {os.getpid()}, "
        "heartbeat 0 s ago")
    assert report["in_progress"][1]["detail"] == (
        f"epoch 1 of 2 done, fp32, CPU {cpu}; no claim: stopped, or started by a repro that made none")
    table = (out / "repro.md").read_text()
    assert "| seed 3 | 0.9300 | 0.9400 | 0.9300 | 0.9400 | 63 | fp32 | " + cpu + " |" in table
    assert "| median | 0.9400 | 0.9500 | 0.9400 | 0.9500 |" in table
    assert "| at or above 0.94 | 1 | 2 | 1 | 2 |" in table
    assert "Missing: 5." in table and f"In progress: seed 1 ({report['in_progress'][0]['detail']}); seed 2" in table
    assert printed.strip().splitlines()[-1] == report["status"]
    assert report["status"].startswith(f"sweep {out}: 2 of 6 runs done; in progress: seed 1 (")
    assert report["status"].endswith("; missing: seed 5")
    assert os.path.exists(out / "repro.png")


def test_a_folder_from_before_sweeps_were_recorded_reports_what_it_can(tmp_path, tree, capsys):
    """Shaped as the five-seed sweep an older repro is running: no sweep.json, no claims,
    config.json without recipe or machine, run-0 half trained."""
    out = tmp_path / "page5"
    write_run(out / "run-0", ["--cutout", "8", "--dropout", "0", "--precision", "mixed_bfloat16"],
              0, tree, epochs_done=3, older=True)
    before = sorted(os.listdir(out / "run-0"))
    assert repro.main(["--report", str(out), "--runs", "5"]) == 0
    report = json.load(open(out / "repro.json"))
    assert report["runs"] == [] and report["statistics"] is None and report["missing"] == [1, 2, 3, 4]
    assert report["in_progress"][0]["detail"] == (
        "epoch 3 of 24 done, mixed_bfloat16, CPU not recorded; no claim: stopped, or started "
        "by a repro that made none")
    table = (out / "repro.md").read_text()
    assert table.startswith("No finished run yet.")
    assert "`--precision mixed_bfloat16 --cutout 8 --dropout 0.0`" in table
    assert f"Data: {tree} (by path" in table
    assert not os.path.exists(out / "repro.png") and not os.path.exists(out / sweep.RECORD)
    assert sorted(os.listdir(out / "run-0")) == before  # the runs are only read
    capsys.readouterr()
    # Without --runs the size is unknown: the seeds on disk, and a word on why.
    assert repro.main(["--report", str(out)]) == 0
    assert capsys.readouterr().out.strip().splitlines()[-1] == (
        f"sweep {out}: 0 of 1 (size not recorded) runs done; in progress: seed 0 (epoch 3 of 24 "
        "done, mixed_bfloat16, CPU not recorded; no claim: stopped, or started by a repro that "
        "made none); missing: none")
    assert "give --runs N to list the seeds never started" in (out / "repro.md").read_text()


def test_the_report_refuses_runs_of_different_recipes(tmp_path, tree, capsys):
    out = tmp_path / "mixed"
    write_run(out / "run-0", FLAGS, 0, tree, accs=(0.9, 0.9, 0.9, 0.9))
    write_run(out / "run-1", FLAGS + ["--width", "8"], 1, tree, accs=(0.9, 0.9, 0.9, 0.9))
    assert repro.main(["--report", str(out)]) == 2
    assert capsys.readouterr().err.strip() == (
        f"error: --report {out}: run-1 was trained with other flags than run-0 (--width 4, not 8); "
        "a report would mix two recipes")
    assert not os.path.exists(out / "repro.json")
    # A recipe's name is how flags were typed, not what ran: the same effective flags agree.
    shutil.rmtree(out / "run-1")
    write_run(out / "run-1", FLAGS + ["--recipe", "default"], 1, tree, accs=(0.9, 0.9, 0.9, 0.9))
    assert repro.main(["--report", str(out)]) == 0
    # With a record, every run is held to it.
    record(out, 2, FLAGS + ["--cutout", "4"], tree)
    assert repro.main(["--report", str(out)]) == 2
    assert capsys.readouterr().err.strip().endswith(
        "run-0 was trained with other flags than the sweep record (sweep.json) (--cutout 4, not 0); "
        "a report would mix two recipes")


def test_the_report_refuses_runs_of_different_data_and_compares_it_by_content(tmp_path, tree, capsys):
    out = tmp_path / "data"
    same = shutil.copytree(tree, tmp_path / "mounted-elsewhere")
    write_run(out / "run-0", FLAGS, 0, tree, accs=(0.9, 0.9, 0.9, 0.9))
    write_run(out / "run-1", FLAGS, 1, str(same), accs=(0.9, 0.9, 0.9, 0.9))
    assert repro.main(["--report", str(out)]) == 0  # other path, same images
    capsys.readouterr()
    image = next((same / "train" / "cat").iterdir())
    image.write_bytes(image.read_bytes() + b"\0")
    assert repro.main(["--report", str(out)]) == 2
    assert capsys.readouterr().err.strip() == (
        f"error: --report {out}: run-1 was trained with other flags than run-0 (--data {tree}, "
        f"not {same}); a report would mix two recipes")


def test_a_process_with_other_flags_size_or_data_than_the_sweep_is_refused_in_one_line(tmp_path, tree, capsys):
    out = tmp_path / "sweep"
    out.mkdir()
    record(out, 2, FLAGS, tree)
    base = ["--runs", "2", "--out", str(out), "--shard", "1/2", "--data", tree]
    assert repro.main(base[:1] + ["3"] + base[2:] + FLAGS[:4] + ["--epochs", "3", "--cutout", "4"]) == 2
    assert capsys.readouterr().err.strip() == (
        f"error: --out {out}: the sweep was started with other flags (--runs 2, not 3; --epochs 2, "
        "not 3; --cutout 0, not 4); give the same flags to go on, or another --out")
    other = shutil.copytree(tree, tmp_path / "other")
    image = next((other / "test" / "dog").iterdir())
    image.write_bytes(image.read_bytes()[:-1] + b"\1")
    assert repro.main(base[:-1] + [str(other)] + FLAGS) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"error: --out {out}: the sweep was started with other flags (--data "
                          f"{other}: other content than the sweep's (sha256:")
    assert err.endswith(f"recorded from {tree})); give the same flags to go on, or another --out")
    assert sorted(os.listdir(out)) == [sweep.RECORD]  # nothing started


def test_the_same_data_at_another_path_is_the_same_sweep(tmp_path, tree, capsys):
    """A second machine mounts the data elsewhere: it joins the sweep. Seed 0 is done, so
    the shard has nothing to train: no TensorFlow, only the status line."""
    out = tmp_path / "sweep"
    out.mkdir()
    record(out, 2, FLAGS, tree)
    write_run(out / "run-0", FLAGS, 0, tree, accs=(0.9, 0.9, 0.9, 0.9))
    mounted = shutil.copytree(tree, tmp_path / "mnt" / "cifar")
    assert repro.main(["--runs", "2", "--out", str(out), "--shard", "1/2", "--data", str(mounted), *FLAGS]) == 0
    assert capsys.readouterr().out.splitlines() == [
        f"{out}/run-0: done", f"sweep {out}: 1 of 2 runs done; in progress: none; missing: seed 1"]
    assert not os.path.exists(out / "repro.json")  # a shard writes no report


def test_two_processes_making_the_sweep_at_once_keep_one_record(tmp_path, tree):
    out = tmp_path / "sweep"
    out.mkdir()
    first = record(out, 2, FLAGS, tree)
    assert record(out, 2, FLAGS, tree) == first  # the second reads the first's, and agrees
    with pytest.raises(UsageError, match="--runs 2, not 3"):
        record(out, 3, FLAGS, tree)


def test_shards_split_the_seeds_and_bad_shards_are_refused():
    assert [sweep.Shard(k, 3).seeds(8) for k in (1, 2, 3)] == [[0, 3, 6], [1, 4, 7], [2, 5]]
    assert sweep.Shard(4, 4).seeds(3) == []
    for bad, message in (["0/2", "got 0/2"], ["3/2", "got 3/2"], ["1-2", "got 1-2"], ["a/b", "got a/b"]):
        with pytest.raises(UsageError, match=f"argument --shard: expected K/N with 1 <= K <= N, {message}"):
            repro.parse(["--runs", "2", "--out", "x", "--shard", bad])


@pytest.mark.parametrize("argv,message", [
    (["--report", "DIR", "--width", "8"], "--width: --report reads the runs' own flags; give only "
                                          "--runs, --target or --stale-after"),
    (["--report", "DIR", "--target", "2"], "argument --target: expected an accuracy in (0, 1], got 2"),
    (["--report", "/nonexistent/sweep"], "--report /nonexistent/sweep: no such folder"),
    (["--report", "DIR", "--runs", "0"], "argument --runs: expected a positive integer, got 0"),
])
def test_bad_report_flags_fail_in_one_line(tmp_path, argv, message, capsys):
    argv = [str(tmp_path) if a == "DIR" else a for a in argv]
    assert repro.main(argv) == 2
    assert capsys.readouterr().err.strip() == f"error: {message}"


def test_statistics_give_the_median_and_the_count_at_the_target():
    runs = [{"val_acc": a, "val_acc_tta": a + 0.01, "onnx_accuracy": a, "onnx_accuracy_tta": a + 0.01,
             "train_time_s": t} for a, t in ((0.93, 10), (0.95, 30), (0.94, 20), (0.90, 80))]
    stats = statistics(runs, 0.94)
    assert stats["val_acc"]["median"] == pytest.approx(0.935)  # the mean: 0.93
    assert stats["val_acc_tta"]["median"] == pytest.approx(0.945)
    assert stats["onnx_accuracy"]["median"] == pytest.approx(0.935)
    assert stats["train_time_s"]["median"] == 25
    assert stats["val_acc"]["mean"] == pytest.approx(0.93)
    assert stats["val_acc"]["std"] == pytest.approx(np.std([0.93, 0.95, 0.94, 0.90], ddof=1))
    assert (stats["reached_target"], stats["reached_target_tta"], stats["reached_target_onnx"]) == (2, 3, 2)


def test_wait_looks_again_at_a_held_seed_until_its_holder_finishes_it(tmp_path, tree):
    """--wait: seed 0 is held by a live process elsewhere; the shard waits (polling every
    heartbeat period, here 2 s) instead of ending, and ends once that process has finished
    the run and released its claim. Nothing trains here."""
    import subprocess
    import sys
    import time

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    out = tmp_path / "sweep"
    out.mkdir()
    claim = out / "run-0.claim"
    claim.write_text(json.dumps({"host": "node-7", "pid": 1, "machine": "elsewhere", "token": "t"}))
    proc = subprocess.Popen([sys.executable, "-m", "export.repro", "--runs", "1", "--out", str(out),
                             "--shard", "1/1", "--wait", "--stale-after", "40", "--data", tree, *FLAGS],
                            cwd=root, env=dict(os.environ, PYTHONPATH=root), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    assert proc.stdout.readline().startswith(f"{out}/run-0: claimed by node-7 pid 1, heartbeat ")
    assert proc.stdout.readline().startswith("waiting for run-0, claimed by other processes")
    time.sleep(3)
    assert proc.poll() is None  # still waiting
    write_run(out / "run-0", FLAGS, 0, tree, accs=(0.9, 0.9, 0.9, 0.9))  # the holder finishes
    claim.unlink()
    rest, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err[-2000:]
    assert rest.splitlines() == [f"{out}/run-0: done",
                                 f"sweep {out}: 1 of 1 runs done; in progress: none; missing: none"]
