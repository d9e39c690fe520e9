"""`python -m legacy_eager.train`: what a run writes, and one-line errors with exit code 2."""
import json
import os
import subprocess
import sys
import time

import pytest

from legacy_eager import train

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY_FLAGS = ["--width", "4", "--batch-size", "16", "--epochs", "2"]


def _one_line_error(capsys, argv):
    assert train.main(argv) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
    return err.strip()


@pytest.mark.slow
@pytest.mark.parametrize("pipeline", ["fast", "seed"])
def test_run_writes_metrics_summary_config_and_checkpoints(tree, tmp_path, capsys, pipeline):
    out = str(tmp_path / "run")
    assert train.main(["--data", tree, "--out", out, "--train-subset", "40",
                       "--pipeline", pipeline, *TINY_FLAGS]) == 0
    printed = capsys.readouterr().out
    assert "train loss" in printed and "val acc" in printed

    records = [json.loads(line) for line in open(os.path.join(out, "metrics.jsonl"))]
    assert [r["epoch"] for r in records] == [1, 2]
    for key in ("epoch", "lr", "train_loss", "train_acc", "val_loss", "val_acc",
                "epoch_time_s", "elapsed_s", "images_per_s"):
        assert all(key in r for r in records), key
    assert records[-1]["global_step"] == 2 * 3  # 40 images in batches of 16: 3 steps an epoch

    summary = json.load(open(os.path.join(out, "summary.json")))
    assert summary["final"] == records[-1]
    assert summary["config"]["width"] == 4 and summary["data"]["len_train"] == 40
    assert summary["config"]["pipeline"] == pipeline
    config = json.load(open(os.path.join(out, "config.json")))
    assert len(config["data"]["normalization"]["mean"]) == 3
    assert config["batches_per_epoch"] == 40 // 16 + 1

    # The checkpoint by what it does: the model it restores scores the run's test images as
    # the last epoch's evaluation did.
    import numpy as np
    import tensorflow as tf

    from legacy_eager.data import load_data
    from legacy_eager.model import DavidNet
    from legacy_eager.run_folder import read_run_info, run_config

    latest = tf.train.latest_checkpoint(os.path.join(out, "checkpoints"))
    assert latest.endswith("ckpt-6")  # numbered by global step
    model = DavidNet(c=4)
    step = tf.Variable(0, dtype=tf.int64)
    status = tf.train.Checkpoint(model=model, global_step=step).restore(latest).expect_partial()
    model.logits(tf.zeros([1, 32, 32, 3]))  # creates the variables, which restore on creation
    status.assert_existing_objects_matched()
    assert int(step.numpy()) == 6
    _, _, (images, labels) = load_data(run_config(read_run_info(out)))
    norm = config["data"]["normalization"]
    x = (images.astype(np.float32) - np.float32(norm["mean"])) / np.float32(norm["std"])
    logits = model.logits(tf.constant(x), training=False).numpy().astype(np.float64)
    top = logits.max(axis=1)
    cross_entropy = top + np.log(np.exp(logits - top[:, None]).sum(axis=1)) - logits[np.arange(len(labels)), labels]
    assert float(np.mean(np.argmax(logits, 1) == labels)) == records[-1]["val_acc"]
    assert float(np.mean(cross_entropy)) == pytest.approx(records[-1]["val_loss"], rel=1e-5)


def test_existing_run_folder_is_refused_and_kept(tree, tmp_path, capsys):
    out = tmp_path / "old"
    out.mkdir()
    (out / "metrics.jsonl").write_text('{"epoch": 1}\n')
    err = _one_line_error(capsys, ["--data", tree, "--out", str(out), *TINY_FLAGS])
    assert f"--out {out}: already holds a run" in err
    assert (out / "metrics.jsonl").read_text() == '{"epoch": 1}\n'


@pytest.mark.parametrize("flag,value", [("--epochs", "0"), ("--batch-size", "-1"),
                                        ("--width", "0"), ("--lr", "0"), ("--lr", "fast"),
                                        ("--train-subset", "0"), ("--momentum", "1.5"),
                                        ("--mode", "jit"), ("--precision", "fp8"),
                                        ("--dropout", "1.5"), ("--dropout", "1"),
                                        ("--dropout", "-0.1"), ("--dropout", "none")])
def test_invalid_flags(capsys, flag, value):
    assert flag in _one_line_error(capsys, [flag, value])


def test_dropout_outside_its_range_names_the_range(capsys):
    assert _one_line_error(capsys, ["--dropout", "1.5"]) == (
        "error: argument --dropout: expected a number in [0, 1), got 1.5")


@pytest.mark.slow
def test_dropout_is_recorded_and_an_older_config_reads_as_the_seeds(tree, tmp_path, capsys):
    """--dropout 0 reaches the model that trained (the run hands back its trainer) and
    config.json; a config.json written before the flag existed (no "dropout" key) resumes
    with the seed's 0.05."""
    from legacy_eager.run import run
    from legacy_eager.run_folder import read_run_info, run_config

    out = str(tmp_path / "run")
    finished = run(train.parse_args(["--data", tree, "--out", out, "--train-subset", "16",
                                     "--dropout", "0", "--width", "4", "--batch-size", "16",
                                     "--epochs", "1"]), log=lambda line: None)
    assert [d.rate for d in _dropout_layers(finished.trainer.model)] == [0.0] * 8
    steps = int(finished.trainer.global_step.numpy())  # this trainer ran the run's steps
    assert steps == finished.summary["final"]["global_step"] > 0
    info = read_run_info(out)
    assert info["config"]["dropout"] == 0.0 and run_config(info).dropout == 0.0
    del info["config"]["dropout"]
    assert run_config(info).dropout == 0.05


def _dropout_layers(model):
    return [layer for layer in model.submodules if type(layer).__name__ == "StatelessDropout"]


def test_subset_larger_than_the_data(tree, tmp_path, capsys):
    err = _one_line_error(capsys, ["--data", tree, "--out", str(tmp_path / "r"),
                                   "--test-subset", "21"])
    assert "--test-subset 21: larger than the 20 images available" in err
    assert not (tmp_path / "r").exists()  # nothing made for a run that never started


def test_corrupt_image_exits_2_naming_it(tree, tmp_path, capsys):
    import shutil

    bad_tree = str(tmp_path / "bad")
    shutil.copytree(tree, bad_tree)
    bad = os.path.join(bad_tree, "train", "horse", "broken.png")
    with open(bad, "wb") as f:
        f.write(b"\x89PNG\r\n\x1a\n garbage")
    assert bad in _one_line_error(capsys, ["--data", bad_tree])


def test_missing_data_fails_fast_in_a_fresh_process(tmp_path):
    start = time.time()
    done = subprocess.run([sys.executable, "-m", "legacy_eager.train", "--data", "/nonexistent"],
                          cwd=ROOT, env=dict(os.environ, PYTHONPATH=ROOT),
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert done.stderr.strip() == "error: --data /nonexistent: no such file or folder"
    assert "tensorflow" not in done.stdout
    assert time.time() - start < 20


def test_tf_config_with_devices_is_refused_in_one_line(monkeypatch, capsys):
    from legacy_eager import train

    monkeypatch.setenv("TF_CONFIG", '{"cluster": {"worker": ["127.0.0.1:1", "127.0.0.1:2"]}, '
                                    '"task": {"type": "worker", "index": 0}}')
    assert train.main(["--data", "/nonexistent", "--devices", "2"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == ("error: --devices 2 with TF_CONFIG: a cluster trains one replica per worker; "
                   "drop --devices (or TF_CONFIG for one machine)")


def test_the_help_says_what_the_docs_say():
    """--data names every layout it reads and the variable it falls back to; --seed every
    random stream it keys (streams.STREAMS); --width no speed figure (measured: 4-5x, not
    the 10x it used to claim)."""
    from export import model_repository
    from legacy_eager.config import parser
    from legacy_eager.streams import STREAMS

    def helps(p):
        return {a.option_strings[0]: " ".join(a.help.split()) for a in p._actions
                if a.help and a.option_strings}
    training = helps(parser())
    for layout in ("cifar-10-python.tar.gz", "cifar-10-batches-py/", "cifar-10-binary.tar.gz",
                   "cifar-10-batches-bin/", "train/<class>/", ".tar.gz", "tensorflow_datasets/",
                   "$CIFAR10_DATA"):
        assert layout in training["--data"], layout
    for stream in STREAMS + ("subsets", "initialisation"):
        assert stream[:6] in training["--seed"], stream
    assert "faster" not in training["--width"]
    delay = helps(model_repository.parser())["--max-queue-delay-us"]
    assert "microseconds" in delay and "max_queue_delay_microseconds" in delay
