"""What a run draws and logs: TensorBoard event files read back, curves.png from the
run's own numbers, TTA in metrics.jsonl and the console, and cutout's squares."""
import json

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from legacy_eager import input_pipeline, train


@pytest.fixture(scope="module")
def run(tree, tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "run"
    lines = []
    assert train.run(train.parse_args(["--data", tree, "--out", str(out), "--width", "4",
                                       "--batch-size", "16", "--epochs", "2", "--cutout", "8"]),
                     log=lines.append)
    return out, lines


def _events(out):
    scalars = {}
    for path in sorted((out / "tensorboard").iterdir()):
        for event in tf.compat.v1.train.summary_iterator(str(path)):
            for value in event.summary.value:
                number = float(tf.make_ndarray(value.tensor)) if value.HasField("tensor") else value.simple_value
                scalars.setdefault(value.tag, []).append((event.step, number))
    return scalars


@pytest.mark.slow
def test_tensorboard_has_every_step_and_every_epoch(run):
    out, _ = run
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    scalars = _events(out)
    assert [s for s, _ in scalars["train/loss"]] == list(range(6))  # 3 batches x 2 epochs
    assert [s for s, _ in scalars["train/lr"]] == list(range(6))
    # The seed's schedule at step / batches_per_epoch (48 // 16 + 1 = 4); 2 epochs put the
    # warm-up knot (2 + 1) // 5 at 0, so it starts at the 0.4 peak.
    assert [v for _, v in scalars["train/lr"]] == pytest.approx(
        [np.interp(s / 4, [0, 0, 2], [0, 0.4, 0]) for s in range(6)])
    # the per-step losses are the epoch's: their mean (equal batches) is the epoch's loss
    for epoch in (1, 2):
        mean = np.mean([v for s, v in scalars["train/loss"] if (s // 3) + 1 == epoch])
        assert mean == pytest.approx(records[epoch - 1]["train_loss"], rel=1e-5)
    for key in ("train_loss", "train_acc", "val_loss", "val_acc", "val_acc_tta", "images_per_s"):
        assert scalars[f"epoch/{key}"] == [(r["epoch"], pytest.approx(r[key], rel=1e-5)) for r in records]


@pytest.mark.slow
def test_metrics_console_and_summary_carry_flip_tta(run):
    out, lines = run
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert all(0 <= r["val_acc_tta"] <= 1 and np.isfinite(r["val_loss_tta"]) for r in records)
    header = next(line for line in lines if line.lstrip().startswith("epoch"))
    assert header.split()[-2:] == ["tta", "time"]
    row = next(line for line in lines if line.split()[:1] == ["2"])
    assert row.split()[-2] == f"{records[-1]['val_acc_tta']:.4f}"
    summary = json.load(open(out / "summary.json"))
    assert summary["final"]["val_acc_tta"] == records[-1]["val_acc_tta"]
    assert summary["config"]["cutout"] == 8
    assert f"(flip TTA {records[-1]['val_acc_tta']:.4f})" in lines[-1]


@pytest.mark.slow
def test_curves_png_is_drawn_from_the_run(run):
    """Every series plotted is metrics.jsonl's, epoch by epoch, and curves.png is exactly
    that figure (every pixel): the run drew its own numbers, all of its epochs."""
    import io

    import matplotlib.pyplot as plt

    from legacy_eager import plots

    out, _ = run
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    epochs = [r["epoch"] for r in records]
    assert epochs == [1, 2]
    fig = plots.curves_figure(records)
    try:
        plotted = [{line.get_label(): (list(line.get_xdata()), list(line.get_ydata()))
                    for line in ax.get_lines()} for ax in fig.axes]
        expected = [{k.replace("_", " "): (epochs, [r[k] for r in records]) for k in keys}
                    for keys in (("train_loss", "val_loss", "val_loss_tta"),
                                 ("train_acc", "val_acc", "val_acc_tta"), ("lr",))]
        assert plotted == expected
        buf = io.BytesIO()
        fig.savefig(buf, dpi=plots.DPI)
    finally:
        plt.close(fig)
    with Image.open(out / "curves.png") as drawn, Image.open(buf) as redrawn:
        assert drawn.format == "PNG" and drawn.size == (1200, 360)
        differ = np.any(np.asarray(drawn) != np.asarray(redrawn), axis=-1)
    assert not differ.any(), f"{differ.sum()} of curves.png's pixels differ from metrics.jsonl's figure"


def test_the_repro_figure_names_the_tta_it_is_given():
    """repro.png's legends name the recipe's TTA (airbench94's is not flip TTA); only a run
    with TTA at every epoch gets a dashed TTA curve."""
    import matplotlib.pyplot as plt

    from legacy_eager import plots

    every = [{"epoch": e, "val_acc": 0.5, "val_acc_tta": 0.6} for e in (1, 2)]
    last = [{"epoch": 1, "val_acc": 0.5}, {"epoch": 2, "val_acc": 0.7, "val_acc_tta": 0.72}]
    for epochs, tta, dashed in ((every, "flip TTA", 1), (last, "TTA level 2", 0)):
        runs = [{"seed": 0, "epochs": epochs, "val_acc": epochs[-1]["val_acc"],
                 "val_acc_tta": epochs[-1]["val_acc_tta"]}]
        fig = plots.repro_figure(runs, 0.94, tta)
        try:
            curves, finals = fig.axes
            assert curves.get_title() == f"val acc by epoch (dashed: {tta})"
            assert [t.get_text() for t in finals.get_legend().get_texts()] == [
                "target 0.94", "val acc", f"with {tta}"]
            assert sum(line.get_linestyle() == "--" for line in curves.get_lines()) == dashed
        finally:
            plt.close(fig)


def test_tta_accuracy_equals_a_hand_made_mirror_average():
    from legacy_eager.config import Config
    from legacy_eager.model import DavidNet, build
    from legacy_eager.trainer import Trainer

    config = Config(width=4, batch_size=8, epochs=1)
    trainer = Trainer(config, 8, model=build(DavidNet(c=4)))
    x = tf.random.normal([8, 32, 32, 3], seed=1)
    y = tf.constant([0, 1, 2, 3, 4, 5, 6, 7], tf.int64)
    loss, correct, loss_tta, correct_tta = trainer.evaluate([(x, y)])
    h = (trainer.model.logits(x) + trainer.model.logits(x[:, :, ::-1])) / 2
    ce = tf.nn.sparse_softmax_cross_entropy_with_logits(labels=y, logits=h)
    assert loss_tta == pytest.approx(float(tf.reduce_sum(ce)), rel=1e-5)
    assert correct_tta == float(np.sum(np.argmax(h.numpy(), 1) == y.numpy()))
    assert loss == pytest.approx(float(trainer.model(x, y)[0]), rel=1e-5)


# ---------------------------------------------------------------- cutout


def _squares(size, n=64, seed=0, batch=0):
    """Where cutout zeroed, on images of ones (normalised ones stay non-zero elsewhere)."""
    batches = input_pipeline.FastBatches(np.full((n, 32, 32, 3), 200, np.uint8), np.zeros(n, np.int64),
                                   np.zeros(3), np.ones(3), n, augment=True, seed=seed, cutout=size)
    x, _ = list(batches.batches(batch))[0]
    return x.numpy() == 0


@pytest.mark.parametrize("size", [1, 8, 16, 32])
def test_cutout_zeroes_one_square_inside_each_image(size):
    zero = _squares(size)
    for img in zero:
        assert (img == img[..., :1]).all()  # all channels together
        rows, cols = np.nonzero(img[..., 0])
        assert rows.max() - rows.min() + 1 == size and cols.max() - cols.min() + 1 == size
        assert img[..., 0].sum() == size * size  # exactly one full square, inside the image


def test_cutout_differs_between_images_and_epochs_and_covers_every_position():
    corners = lambda zero: [tuple(np.argwhere(z[..., 0])[0]) for z in zero]  # noqa: E731
    first, second = corners(_squares(8, batch=0)), corners(_squares(8, batch=1))
    assert len(set(first)) > 40 and first != second
    seen = set(first) | set(second) | set(corners(_squares(8, batch=2)))
    assert {r for r, _ in seen} <= set(range(25)) and len({r for r, _ in seen}) > 20


def test_cutout_with_the_seed_pipeline_is_refused(capsys):
    assert train.main(["--data", "/nowhere", "--pipeline", "seed", "--cutout", "8"]) == 2
    assert capsys.readouterr().err.strip() == (
        "error: --cutout 8: the seed's pipeline has no cutout; use --pipeline fast (the default)")
