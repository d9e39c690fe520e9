"""airbench94 (airbench_tf) against figures worked out here, not read back from the code:
the whitening, the decoupled step sizes, the lookahead EMA, alternating flip and
translation, TTA level 2, the flags, and a tiny run trained, exported and served."""
import json
import os

import numpy as np
import pytest
import tensorflow as tf

from airbench_tf import hyp
from airbench_tf.augment import AlternatingFlipBatches
from airbench_tf.model import Airbench94, Whitening, build, tta_logits
from airbench_tf.optim import Lookahead, NesterovSGD
from airbench_tf.whitening import whitening_kernel
from legacy_eager import train
from legacy_eager.config import parse_args
from tests import synthetic


def _smooth_images(n, seed=0):
    """Normalised-looking images whose neighbouring pixels and channels are correlated, so
    the 2x2 patches' covariance is far from the identity."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 33, 33, 3))
    x = (x[:, 1:, 1:] + x[:, :-1, 1:] + x[:, 1:, :-1]) / 3  # neighbours share noise
    x = x + 0.8 * x[..., :1]                                 # channels share it too
    return (x - x.mean()) / x.std()


def _patch_covariance(outputs):
    flat = outputs.reshape(-1, outputs.shape[-1]).astype(np.float64)
    return flat.T @ flat / len(flat)


# ------------------------------------------------------------------ whitening
def test_whitened_patches_have_identity_covariance_on_the_images_that_set_them():
    images = _smooth_images(200)
    raw = _patch_covariance(np.lib.stride_tricks.sliding_window_view(
        images, (2, 2), axis=(1, 2)).reshape(-1, 12))
    assert np.abs(raw - np.eye(12)).max() > 0.5  # far from white to start with

    layer = Whitening()
    layer(tf.zeros([1, 32, 32, 3]))  # makes its variables
    layer.set_filters(whitening_kernel(images, eps=0.0))
    out = layer(tf.constant(images, tf.float32)).numpy()   # the network's own 2x2 conv
    assert out.shape == (200, 31, 31, 24)
    # Tolerance 1e-4: the float32 convolution's rounding (float64 would give 1e-12).
    np.testing.assert_allclose(_patch_covariance(out[..., :12]), np.eye(12), atol=1e-4)
    np.testing.assert_array_equal(out[..., 12:], -out[..., :12])

    # With airbench94's eps 5e-4 each direction of variance v comes out as v / (v + eps).
    layer.set_filters(whitening_kernel(images))
    cov = _patch_covariance(layer(tf.constant(images, tf.float32)).numpy()[..., :12])
    eigenvalues = np.linalg.eigvalsh(raw)[::-1]
    np.testing.assert_allclose(cov, np.diag(eigenvalues / (eigenvalues + 5e-4)), atol=1e-4)


# ------------------------------------------------------------------ step sizes
def test_decoupled_learning_rate_and_weight_decay_equal_hand_computed_values():
    sizes = hyp.step_sizes()  # lr 11.5, momentum 0.85, wd 0.0153, batch 1024
    # 1024 (1 + 1 / 0.15) = 23552 / 3; 11.5 * 3 / 23552 = 0.00146484375; x64 = 0.09375;
    # 0.0153 * 1024 * 3 / 23552 = 0.0459 / 23
    assert sizes.lr == pytest.approx(0.00146484375, rel=1e-12)
    assert sizes.lr_bias == pytest.approx(0.09375, rel=1e-12)
    assert sizes.decay == pytest.approx(0.0459 / 23, rel=1e-12)
    # 50,000 images in full batches of 1024: 48 a step; 48 x 9.9 = 475.2 -> 476 steps
    assert hyp.total_steps(50000, 1024, 9.9) == 476 and hyp.epochs_to_run(9.9) == 10
    schedule = hyp.triangle(476)
    assert len(schedule) == 477
    # 0.2 at step 0, 1 at int(0.23 * 476) = 109, 0.07 at 476, linear between
    assert schedule[0] == pytest.approx(0.2) and schedule[109] == pytest.approx(1.0)
    assert schedule[476] == pytest.approx(0.07)
    assert schedule[50] == pytest.approx(0.2 + 0.8 * 50 / 109)
    assert schedule[300] == pytest.approx(1 - 0.93 * (300 - 109) / (476 - 109))


def test_nesterov_sgd_steps_equal_torchs_sgd_worked_by_hand():
    """Three steps of torch.optim.SGD(lr=L, momentum=0.85, nesterov=True,
    weight_decay=decay/L) with the schedule's factor, written out for one weight and a
    constant gradient; a frozen weight and its buffer do not move."""
    w, frozen = tf.Variable([1.0]), tf.Variable([2.0])
    trains = tf.Variable(False)
    step = tf.Variable(0, dtype=tf.int64)
    L, decay, m, factors = 0.1, 0.02, 0.85, np.array([0.2, 0.6, 1.0, 0.5])
    opt = NesterovSGD([w, frozen], [L, L], decay, m, factors, step, frozen=(frozen, trains))
    expected, buf = [], None
    value = 1.0
    for s in factors[:3]:
        g = 0.5 + (decay / L) * value          # gradient + weight decay
        buf = g if buf is None else m * buf + g  # torch starts the buffer at g
        value = value - s * L * (g + m * buf)   # nesterov
        expected.append(value)
    got = []
    for _ in range(3):
        opt.apply([tf.constant([0.5]), tf.constant([0.5])])
        got.append(float(w.numpy()[0]))
    np.testing.assert_allclose(got, expected, rtol=1e-6)
    assert int(step.numpy()) == 3
    assert float(frozen.numpy()[0]) == 2.0 and float(opt.get_slot(frozen, "momentum").numpy()[0]) == 0


# ------------------------------------------------------------------ lookahead EMA
def test_lookahead_ema_follows_its_formula():
    w = tf.Variable([1.0, -2.0])
    ema = Lookahead([w])
    w.assign([3.0, 0.0])
    ema.start()                                      # the first time: a copy
    np.testing.assert_array_equal(ema.ema[0].numpy(), [3.0, 0.0])
    w.assign([5.0, 4.0])
    ema.update(0.3)                                  # 0.3 * ema + 0.7 * w, then w = ema
    np.testing.assert_allclose(ema.ema[0].numpy(), [0.3 * 3 + 0.7 * 5, 0.3 * 0 + 0.7 * 4], rtol=1e-6)
    np.testing.assert_array_equal(w.numpy(), ema.ema[0].numpy())
    w.assign([9.0, 9.0])
    ema.update(1.0)                                  # end of epoch: w takes the EMA back
    np.testing.assert_allclose(w.numpy(), [4.4, 2.8], rtol=1e-6)
    # decay 0.95**5 (step / total)**3, every 5th step from epoch 3 (0-based) on
    assert hyp.ema_decay(238, 476) == pytest.approx(0.95 ** 5 / 8)
    assert hyp.ema_decay(476, 476) == pytest.approx(0.7737809375)
    assert [hyp.ema_due(e, s) for e, s in ((2, 145), (3, 145), (3, 146), (3, 150))] == [
        False, True, False, True]


# ------------------------------------------------------------------ augmentation
def _position_images(n):
    """Image i: channel 0 holds the row, channel 1 the column, channel 2 the image's id."""
    rows, cols = np.meshgrid(np.arange(32), np.arange(32), indexing="ij")
    x = np.zeros((n, 32, 32, 3), np.uint8)
    x[..., 0], x[..., 1] = rows, cols
    x[..., 2] = np.arange(n)[:, None, None]
    return x


def test_flips_alternate_by_epoch_and_translations_stay_within_two_pixels():
    from legacy_eager.tta import View, view_images

    n, batch = 200, 64
    source = _position_images(n)
    batches = AlternatingFlipBatches(source, np.arange(n) % 10, np.zeros(3), np.ones(3), batch, seed=3)
    flips, shifts = {}, []
    for epoch in range(4):
        seen = []
        for x, y in batches.batches(epoch):
            x = x.numpy().astype(np.int64)
            for img, label in zip(x, y.numpy()):
                i = int(img[0, 0, 2])
                assert np.all(img[..., 2] == i) and label == i % 10
                dy = img[10, 10, 0] - 10                   # row 10 reads row 10 + dy
                flip = img[10, 11, 1] < img[10, 10, 1]     # columns read backwards
                dx = img[10, 10, 1] - (21 if flip else 10)
                assert abs(dy) <= 2 and abs(dx) <= 2
                # the whole image is that translation (reflected at the border), then mirrored
                np.testing.assert_array_equal(img, view_images(source[i:i + 1], View(1, flip, dy, dx))[0])
                flips[epoch, i] = flip
                shifts.append((dy, dx))
                seen.append(i)
        assert len(seen) == len(set(seen)) == n // batch * batch  # full batches, no repeats
    assert set(shifts) == {(dy, dx) for dy in range(-2, 3) for dx in range(-2, 3)}
    both = [i for i in range(n) if all((e, i) in flips for e in range(4))]
    assert len(both) > 100
    for i in both:  # every image mirrored in every other epoch
        assert [flips[e, i] for e in range(4)] in ([True, False, True, False], [False, True, False, True])
    assert 0.35 < np.mean([flips[0, i] for i in both]) < 0.65


# ------------------------------------------------------------------ TTA level 2
def test_tta_level_2_is_the_weighted_mean_of_six_views_computed_by_hand():
    tf.random.set_seed(1)
    model = build(Airbench94())
    model.whiten.set_filters(whitening_kernel(_smooth_images(20)))  # zero filters: zero logits
    x = np.random.default_rng(0).normal(size=(3, 32, 32, 3)).astype(np.float32)

    def net(images):
        return model.logits(tf.constant(np.ascontiguousarray(images)), training=False).numpy().astype(np.float64)

    def mirror(images):  # airbench94's infer_mirror
        return 0.5 * net(images) + 0.5 * net(images[:, :, ::-1])
    padded = np.pad(x, [(0, 0), (1, 1), (1, 1), (0, 0)], mode="reflect")
    by_hand = 0.5 * mirror(x) + 0.5 * (mirror(padded[:, 0:32, 0:32]) + mirror(padded[:, 2:34, 2:34])) / 2
    got = tta_logits(model, tf.constant(x)).numpy()
    assert np.abs(by_hand - net(x)).max() > 1e-3  # the views do change the logits
    np.testing.assert_allclose(got, by_hand, atol=1e-5)
    assert sum(v.weight for v in hyp.TTA_VIEWS[2]) == 1


# ------------------------------------------------------------------ flags
@pytest.mark.parametrize("flag", [["--wd-loop", "seed"], ["--cutout", "8"], ["--dropout", "0"],
                                  ["--width", "64"], ["--mode", "eager"], ["--pipeline", "fast"],
                                  ["--devices", "2"]])
def test_the_seeds_flags_are_refused_in_one_line(flag, capsys):
    assert train.main(["--recipe", "airbench94", *flag]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and flag[0] in err and "airbench94" in err


def test_the_recipe_sets_its_figures_and_a_typed_flag_wins():
    config = parse_args(["--recipe", "airbench94"])
    assert (config.network, config.epochs, config.batch_size, config.lr, config.momentum,
            config.weight_decay) == ("airbench94", 9.9, 1024, 11.5, 0.85, 0.0153)
    config = parse_args(["--recipe", "airbench94", "--epochs", "2", "--lr", "5"])
    assert (config.epochs, config.lr, config.batch_size) == (2, 5.0, 1024)
    assert parse_args(["--recipe", "airbench94", "--mode", "xla"]).mode == "xla"


def test_repro_takes_the_recipe_and_refuses_the_seeds_flags_before_any_run():
    from export import repro
    from legacy_eager.errors import UsageError

    args, flags, config = repro.parse(["--runs", "5", "--out", "x", "--recipe", "airbench94",
                                       "--precision", "mixed_bfloat16"])
    assert args.runs == 5 and parse_args(flags).network == config.network == "airbench94"
    with pytest.raises(UsageError, match="--cutout"):
        repro.parse(["--runs", "5", "--out", "x", "--recipe", "airbench94", "--cutout", "8"])


def test_fractional_epochs_are_davidnets_error_in_one_line(capsys):
    assert train.main(["--epochs", "9.9"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "--epochs 9.9" in err and "whole number" in err


def test_divergence_names_the_step_in_airbench94s_units_then_a_poisoned_buffer():
    """The divergence check loop.fit runs, on airbench94's trainer: 48 images in batches
    of 16 over 2 epochs are 6 steps, the triangle's peak at int(0.23 x 6) = 1; step 4 is
    3/5 of the way down from 1 to 0.07: 11.5 x (1 - 0.6 x 0.93) = 5.083 per 1024 examples."""
    from airbench_tf.trainer import Trainer

    trainer = Trainer(parse_args(["--recipe", "airbench94", "--batch-size", "16",
                                  "--epochs", "2"]), 48)
    assert trainer.divergence(1) is None
    head = trainer.lookahead.ema[-1]
    head.assign(tf.fill(head.shape, float("inf")))
    said = trainer.divergence(1)
    assert said.startswith("variable lookahead EMA of ") and said.endswith(" is not finite in epoch 1")
    trainer.first_nonfinite_step.assign(4)
    assert trainer.divergence(1) == ("loss is not finite at global step 4 (epoch 2, learning "
                                     "rate 5.083 per 1024 examples)")


# ------------------------------------------------------------------ a tiny run, end to end
@pytest.fixture(scope="module")
def airbench_run(tree, tmp_path_factory):
    """--recipe airbench94 on the 48-image tree: batch 16 (3 steps an epoch), 1.5 epochs
    (5 steps: the second epoch cut after 2), trained and exported by ./run.sh's job."""
    from export import train_and_export

    out = str(tmp_path_factory.mktemp("airbench") / "run")
    lines = []
    code = train_and_export.main(["--recipe", "airbench94", "--data", tree, "--batch-size", "16",
                                  "--epochs", "1.5", "--out", out], log=lines.append)
    assert code == 0, lines[-3:]
    return out, lines


@pytest.mark.slow
def test_a_tiny_run_writes_the_same_run_folder(airbench_run):
    out, lines = airbench_run
    with open(os.path.join(out, "config.json")) as f:
        info = json.load(f)
    assert info["config"]["network"] == "airbench94" and info["recipe"]["name"] == "airbench94"
    assert info["network"]["total_steps"] == 5 and info["network"]["steps_per_epoch"] == 3
    records = [json.loads(line) for line in open(os.path.join(out, "metrics.jsonl"))]
    assert [r["global_step"] for r in records] == [3, 5]  # the last epoch cut at 5 steps
    assert "val_acc_tta" not in records[0] and 0 <= records[1]["val_acc_tta"] <= 1
    for name in ("summary.json", "curves.png", "tensorboard", "checkpoints", "saved_model",
                 "model.onnx", "parity.json"):
        assert os.path.exists(os.path.join(out, name)), name
    assert any("TTA level 2" in line and "training" in line for line in lines)
    with open(os.path.join(out, "parity.json")) as f:
        assert json.load(f)["result"] == "pass"


@pytest.mark.slow
def test_the_runs_curves_give_the_learning_rate_per_1024_examples(airbench_run):
    """curves.png is, pixel for pixel, the figure of metrics.jsonl with the learning rate
    titled in airbench94's units, and not the DavidNet recipes' figure."""
    import io

    import matplotlib.pyplot as plt
    from PIL import Image

    from legacy_eager import plots

    out, _ = airbench_run
    records = [json.loads(line) for line in open(os.path.join(out, "metrics.jsonl"))]

    def pixels(fig):
        buf = io.BytesIO()
        try:
            fig.savefig(buf, dpi=plots.DPI)
        finally:
            plt.close(fig)
        with Image.open(buf) as img:
            return np.asarray(img)
    with Image.open(os.path.join(out, "curves.png")) as drawn:
        drawn = np.asarray(drawn)
    ours = plots.curves_figure(records, "per 1024 examples")
    assert ours.axes[2].get_ylabel() == "per 1024 examples"
    assert np.array_equal(drawn, pixels(ours))
    assert not np.array_equal(drawn, pixels(plots.curves_figure(records)))


@pytest.mark.slow
def test_the_exports_equal_the_trained_network_on_the_tta_views(airbench_run):
    from export import savedmodel
    from export.predict import OnnxClassifier

    out, _ = airbench_run
    run_info, checkpoint = savedmodel.read_run(out)
    model, tta = savedmodel.restore_model(run_info, checkpoint)
    norm = run_info["data"]["normalization"]
    images = synthetic.make_arrays(9, seed=5)[0]
    x = tf.constant((images.astype(np.float32) - np.float32(norm["mean"])) / np.float32(norm["std"]))
    classifier = OnnxClassifier(os.path.join(out, "model.onnx"))
    assert classifier.tta_views == hyp.TTA_VIEWS[2]
    np.testing.assert_allclose(classifier.run(images)[0], model.logits(x).numpy(), atol=1e-4)
    np.testing.assert_allclose(classifier.run(images, tta=True)[0], tta_logits(model, x).numpy(),
                               atol=1e-4)
    loaded = tf.saved_model.load(os.path.join(out, "saved_model"))
    served = loaded.signatures["serving_tta"](images=tf.constant(images))["logits"].numpy()
    np.testing.assert_allclose(served, tta_logits(model, x).numpy(), atol=1e-4)


@pytest.mark.slow
def test_predict_tta_applies_the_six_views(airbench_run, tree, tiny_arrays, capsys):
    from export import predict

    out, _ = airbench_run
    model = os.path.join(out, "model.onnx")
    assert predict.main([model, os.path.join(tree, "test"), "--evaluate", "--tta", "--json"]) == 0
    report = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    _, (x, y) = tiny_arrays  # the tree's test images
    expected = predict.OnnxClassifier(model).run(x, tta=True)[0].argmax(1)
    assert report["tta"] and report["images"] == 20
    assert report["accuracy"] == pytest.approx(np.mean(expected == y))
    assert predict.main([model, os.path.join(tree, "test"), "--evaluate", "--tta"]) == 0
    assert "(TTA of 6 views)" in capsys.readouterr().out


@pytest.mark.slow
def test_the_server_answers_with_the_recipes_tta(airbench_run):
    from export.predict import OnnxClassifier
    from tests.serving import Server

    out, _ = airbench_run
    images = synthetic.make_arrays(4, seed=7)[0]
    classifier = OnnxClassifier(os.path.join(out, "model.onnx"))
    with Server(out) as server:
        for tta in (False, True):
            status, answer = server.predict({"instances": images.tolist(), "tta": tta})
            assert status == 200
            np.testing.assert_allclose([p["probabilities"] for p in answer["predictions"]],
                                       classifier.run(images, tta=tta)[1], atol=1e-6)
    # and the six views differ from the flip pair, so the server did not fall back to it
    flip_only = OnnxClassifier(os.path.join(out, "model.onnx"))
    from legacy_eager.tta import FLIP

    flip_only.tta_views = FLIP
    assert np.abs(flip_only.run(images, tta=True)[0] - classifier.run(images, tta=True)[0]).max() > 1e-6
