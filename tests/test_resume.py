"""Resume after SIGINT, a damaged checkpoint, determinism, and the non-finite-loss stop."""
import json
import os

import pytest
import tensorflow as tf

from legacy_eager import train
from legacy_eager.config import parse_args
from legacy_eager.errors import run_cli
from legacy_eager.run import run
from tests.children import run_child

RESUME_CASES = ("fast:fp32:full", "fast:mixed_bfloat16:light", "fast:mixed_float16:light",
                "airbench:fp32:light")


@pytest.fixture(scope="module")
def resumed(tmp_path_factory):
    """tests/resume_run's cases, run once in one child process (TensorFlow's op determinism
    is process-wide): {case: what it measured}, and the child's stderr."""
    results, stderr = run_child("tests.resume_run", tmp_path_factory.mktemp("resume"), *RESUME_CASES,
                                timeout=900)
    return {r.pop("case"): r for r in results}, stderr


@pytest.mark.slow
def test_interrupted_and_resumed_runs_equal_uninterrupted_ones(resumed):
    results, stderr = resumed
    r = results["fast:fp32:full"]
    assert r["codes"] == {"a": 0, "a2": 0, "b_interrupted": 130, "b_resumed": 0,
                          "c_interrupted": 143, "c_resumed": 0}  # SIGINT 130, SIGTERM 143
    assert r["lines_while_stopped"] == 1  # stopped in epoch 2
    assert r["epochs"] == {k: [1, 2, 3] for k in ("a", "a2", "b", "c")}  # no gaps, no repeats
    assert r["repeat_identical"] and r["repeat_same_weights"]
    assert r["resumed_identical"] and r["resumed_same_weights"]
    assert r["fallback_identical"] and r["fallback_same_weights"]
    assert r["tensors"] > 40  # model, momentum slots and global step were all compared
    assert "is damaged" in stderr and "trying the one before" in stderr


@pytest.mark.slow
@pytest.mark.parametrize("precision", ["mixed_bfloat16", "mixed_float16"])
def test_half_precision_runs_resume_exactly(resumed, precision):
    """Stopped by SIGINT in epoch 2 and resumed: the same metrics and tensors as the run
    left alone, the float16 loss scale and its count of finite steps included."""
    r = resumed[0][f"fast:{precision}:light"]
    assert r["codes"] == {"a": 0, "b_interrupted": 130, "b_resumed": 0}
    assert r["lines_while_stopped"] == 1
    assert r["epochs"] == {"a": [1, 2, 3], "b": [1, 2, 3]}
    assert r["resumed_identical"] and r["resumed_same_weights"] and r["tensors"] > 40
    if precision == "mixed_float16":
        assert {"loss_scale/scale/.ATTRIBUTES/VARIABLE_VALUE",
                "loss_scale/good_steps/.ATTRIBUTES/VARIABLE_VALUE"} <= set(r["keys"])


@pytest.mark.slow
def test_an_airbench94_run_resumes_exactly(resumed):
    """--recipe airbench94, stopped by SIGINT in its 4th epoch after the lookahead EMA has
    started, and resumed: the same metrics and tensors (network, momentum buffers, EMA,
    global step) as the run left alone, its last epoch cut short in both."""
    r = resumed[0]["airbench:fp32:light"]
    assert r["codes"] == {"a": 0, "b_interrupted": 130, "b_resumed": 0}
    assert r["lines_while_stopped"] == 3
    assert r["epochs"] == {"a": [1, 2, 3, 4, 5], "b": [1, 2, 3, 4, 5]}
    assert r["resumed_identical"] and r["resumed_same_weights"]
    assert any(k.startswith("lookahead/") for k in r["keys"]) and r["tensors"] > 60


@pytest.mark.slow
def test_seed_pipeline_resumes_as_the_readme_says(tree, tmp_path):
    """The seed's tf.data chain cannot replay an order: the resumed epoch runs only its
    remaining batches, drawn from a fresh shuffle, so the run still has every epoch once
    and the global step of an uninterrupted run."""
    import signal

    from legacy_eager import input_pipeline

    seen = []

    def batches(train_set, epoch, start=0):
        seen.append((epoch, start))
        for k, item in enumerate(input_pipeline.epoch_batches(train_set, epoch, start), start=start):
            yield item
            if (epoch, k) == (1, 0) and start == 0:
                os.kill(os.getpid(), signal.SIGINT)
    out = tmp_path / "seed"
    flags = ["--data", tree, "--out", str(out), "--width", "4", "--batch-size", "16",
             "--epochs", "3", "--pipeline", "seed"]
    assert run_cli(lambda: run(parse_args(flags), batches=batches)) == 130
    assert run_cli(lambda: run(parse_args(["--resume", str(out)]), batches=batches)) == 0
    # The signal arrives as batch 2 is fetched, so 2 batches ran; epoch 2 goes on from its 3rd.
    assert seen == [(0, 0), (1, 0), (1, 2), (2, 0)]
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in records] == [1, 2, 3]
    assert records[-1]["global_step"] == 3 * 3  # 48 images, batches of 16


@pytest.mark.slow
def test_half_written_metrics_line_is_dropped_on_resume(tree, tmp_path, monkeypatch):
    """A crash while epoch 2's line is being written (before its checkpoint): --resume
    drops the half line, recomputes epoch 2 and finishes with one line per epoch."""
    from legacy_eager import report

    real_write = report.JsonLines.write

    def crash_in_epoch_2(self, record):
        if record["epoch"] == 2:
            with open(self.path, "a", encoding="utf-8") as f:
                f.write(json.dumps(record)[:40])  # half a line, no newline
            raise KeyboardInterrupt  # stands in for the process dying here
        real_write(self, record)
    monkeypatch.setattr(report.JsonLines, "write", crash_in_epoch_2)
    out = tmp_path / "half"
    flags = ["--data", tree, "--out", str(out), "--width", "4", "--batch-size", "16", "--epochs", "3"]
    assert train.main(flags) == 130
    assert (out / "metrics.jsonl").read_text().count("\n") == 1  # epoch 1, then half a line
    monkeypatch.setattr(report.JsonLines, "write", real_write)
    assert train.main(["--resume", str(out)]) == 0
    lines = (out / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["epoch"] for line in lines] == [1, 2, 3]


def test_float16_loss_scale_state_is_checkpointed(tmp_path):
    import dataclasses

    from legacy_eager.config import Config
    from legacy_eager.trainer import Trainer

    config = dataclasses.replace(Config(), width=4, batch_size=16, precision="mixed_float16")
    trainer = Trainer(config, 48)
    trainer.loss_scale.scale.assign(256.0)
    trainer.loss_scale.good_steps.assign(1234)
    path = trainer.checkpoint.save(str(tmp_path / "ckpt"))
    fresh = Trainer(config, 48)
    fresh.checkpoint.restore(path).assert_existing_objects_matched()
    assert float(fresh.loss_scale.scale.numpy()) == 256.0
    assert int(fresh.loss_scale.good_steps.numpy()) == 1234


@pytest.mark.slow
def test_absurd_learning_rate_stops_with_exit_3(tree, tmp_path, capsys):
    out = tmp_path / "nan"
    code = train.main(["--data", tree, "--out", str(out), "--width", "4", "--batch-size", "16",
                       "--epochs", "3", "--lr", "1e12"])
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert code == 3
    assert err.startswith("error: ") and "not finite" in err and "epoch 1" in err
    assert err.endswith("the last good checkpoint is none (no epoch had finished)")
    assert not (out / "summary.json").exists()
    assert not (out / "checkpoints").exists()
    assert not (out / "metrics.jsonl").exists()  # nothing of the diverged epoch is kept
    assert sorted(p.name for p in out.iterdir()) == ["config.json"]


def _poison_after(monkeypatch, epoch, poison):
    """Make the given epoch's training end with `poison(trainer)` applied after its last
    step: the loss of every step stays finite, only the state is not."""
    from legacy_eager.trainer import Trainer

    real = Trainer.train_epoch
    calls = []

    def train_epoch(self, batches, **kwargs):
        result = real(self, batches, **kwargs)
        calls.append(1)
        if len(calls) == epoch:
            poison(self)
        return result
    monkeypatch.setattr(Trainer, "train_epoch", train_epoch)


def _overflow_weight(trainer):
    w = trainer.model.linear.kernel
    w.assign(tf.tensor_scatter_nd_update(w, [[0, 0]], [float("inf")]))


def _infinite_moving_variance(trainer):
    v = trainer.model.blk2.conv_bn.bn.moving_variance
    v.assign(tf.tensor_scatter_nd_update(v, [[0]], [float("inf")]))


@pytest.mark.parametrize("epoch,poison,named", [
    (1, _overflow_weight, "variable model/linear/kernel is not finite in epoch 1"),
    (3, _overflow_weight, "variable model/linear/kernel is not finite in epoch 3"),
    (2, _infinite_moving_variance, "variable model/blk2/conv_bn/bn/moving_variance is not finite in epoch 2"),
])
@pytest.mark.slow
def test_diverged_state_stops_before_saving(tree, tmp_path, capsys, monkeypatch, epoch, poison,
                                            named):
    """Finite losses but overflowing weights after an epoch's last step (first or final
    epoch), or an infinite BatchNorm moving variance (logits stay finite: x / sqrt(inf)
    is 0): exit 3 naming it, no line and no checkpoint for that epoch, nothing exported."""
    from export import train_and_export as export_pipeline

    _poison_after(monkeypatch, epoch, poison)
    out = tmp_path / "run"
    code = export_pipeline.main(["--data", tree, "--out", str(out), "--width", "4",
                                 "--batch-size", "16", "--epochs", "3"], log=lambda *a: None)
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert code == 3, err
    assert named in err
    lines = (out / "metrics.jsonl").read_text().splitlines() if epoch > 1 else []
    assert [json.loads(line)["epoch"] for line in lines] == list(range(1, epoch))
    kept = tf.train.latest_checkpoint(str(out / "checkpoints"))
    if epoch == 1:
        assert kept is None and err.endswith("none (no epoch had finished)")
    else:
        assert err.endswith(f"the last good checkpoint is {kept}")
        assert int(tf.train.load_checkpoint(kept).get_tensor(
            "progress/epoch/.ATTRIBUTES/VARIABLE_VALUE")) == epoch - 1
    assert not (out / "summary.json").exists() and not (out / "saved_model").exists()
    assert (out / "tensorboard").exists() == (epoch > 1)  # only finished epochs are logged


def test_resume_refuses_other_flags(capsys):
    assert train.main(["--resume", "/tmp/somewhere", "--epochs", "5"]) == 2
    assert "--resume continues a run with its own flags; drop --epochs" in capsys.readouterr().err


def test_resume_of_a_folder_that_is_no_run(tmp_path, capsys):
    assert train.main(["--resume", str(tmp_path)]) == 2
    assert f"--resume {tmp_path}: no config.json" in capsys.readouterr().err
