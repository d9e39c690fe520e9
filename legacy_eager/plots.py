"""Every picture the project draws, with matplotlib's Agg backend (no display needed):
a run's learning curves, a confusion matrix, and a reproduction's runs against the target.
Framework-free; each PNG is written beside its target and renamed, never half-written."""
import os

import numpy as np

from legacy_eager.atomic import staged_path

CURVE_SIZE = (12, 3.6)  # inches at 100 dpi: 1200 x 360 pixels
DPI = 100


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def _save(fig, path):
    with staged_path(path, is_dir=False) as staged:
        fig.savefig(staged, dpi=DPI)
    _pyplot().close(fig)
    return path


def _integer_epochs(*axes):
    from matplotlib.ticker import MaxNLocator

    for ax in axes:
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))


def draw_curves(records, path, lr_unit="per batch"):
    """curves_figure(records, lr_unit) as a PNG at `path`."""
    return _save(curves_figure(records, lr_unit), path)


def curves_figure(records, lr_unit="per batch"):
    """Loss, accuracy (train, val, val with the recipe's TTA) and learning rate (`lr_unit`:
    how the recipe's rows give it) against epoch: the figure, each series a Line2D labelled
    with its metrics.jsonl key (underscores as spaces)."""
    plt = _pyplot()
    epochs = [r["epoch"] for r in records]
    fig, (loss, acc, lr) = plt.subplots(1, 3, figsize=CURVE_SIZE)
    for ax, keys, title in ((loss, ("train_loss", "val_loss", "val_loss_tta"), "loss per image"),
                            (acc, ("train_acc", "val_acc", "val_acc_tta"), "accuracy")):
        for key in keys:
            values = [r.get(key) for r in records]
            if all(v is not None for v in values):
                ax.plot(epochs, values, marker="o", markersize=3, label=key.replace("_", " "))
        ax.set_title(title)
        ax.set_xlabel("epoch")
        ax.legend(fontsize=8)
        ax.grid(alpha=0.3)
    lr.plot(epochs, [r["lr"] for r in records], marker="o", markersize=3, color="tab:purple",
            label="lr")
    lr.set_title("learning rate (epoch end)")
    lr.set_ylabel(lr_unit)
    lr.set_xlabel("epoch")
    lr.grid(alpha=0.3)
    _integer_epochs(loss, acc, lr)
    fig.tight_layout()
    return fig


class CurvesPlot:
    """Redraws OUT/curves.png from metrics.jsonl after every epoch (all epochs, resumed
    ones included)."""

    def __init__(self, out_dir, lr_unit="per batch"):
        self.out_dir = out_dir
        self.lr_unit = lr_unit

    def epoch_done(self, record, *_):
        from legacy_eager.run_folder import read_metrics

        draw_curves(read_metrics(self.out_dir), os.path.join(self.out_dir, "curves.png"),
                    self.lr_unit)


def draw_confusion(matrix, class_names, path, title="confusion matrix"):
    """Rows: true class; columns: predicted class; each cell's count written in it."""
    plt = _pyplot()
    matrix = np.asarray(matrix)
    fig, ax = plt.subplots(figsize=(8, 7))
    ax.imshow(matrix, cmap="Blues")
    ax.set_xticks(range(len(class_names)), class_names, rotation=45, ha="right")
    ax.set_yticks(range(len(class_names)), class_names)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title)
    top = matrix.max() or 1
    for i in range(matrix.shape[0]):
        for j in range(matrix.shape[1]):
            ax.text(j, i, str(matrix[i, j]), ha="center", va="center", fontsize=8,
                    color="white" if matrix[i, j] > top / 2 else "black")
    fig.tight_layout()
    return _save(fig, path)


def draw_repro(runs, target, path, tta="flip TTA"):
    """repro_figure(runs, target, tta) as a PNG at `path`."""
    return _save(repro_figure(runs, target, tta), path)


def repro_figure(runs, target, tta="flip TTA"):
    """Left: each run's val_acc (and, dashed, its TTA where every epoch has one) by epoch;
    right: each run's final accuracies against the target. runs: [{"seed", "epochs":
    [records], "val_acc", "val_acc_tta"}]; `tta`: the recipe's TTA, as the legends name it."""
    plt = _pyplot()
    fig, (curves, finals) = plt.subplots(1, 2, figsize=CURVE_SIZE)
    for run in runs:
        epochs = [r["epoch"] for r in run["epochs"]]
        line, = curves.plot(epochs, [r["val_acc"] for r in run["epochs"]], marker="o",
                            markersize=3, label=f"seed {run['seed']}")
        if all("val_acc_tta" in r for r in run["epochs"]):
            curves.plot(epochs, [r["val_acc_tta"] for r in run["epochs"]], linestyle="--",
                        color=line.get_color())
    curves.axhline(target, color="red", linewidth=1, label=f"target {target:g}")
    curves.set_title(f"val acc by epoch (dashed: {tta})")
    curves.set_xlabel("epoch")
    curves.legend(fontsize=8)
    curves.grid(alpha=0.3)
    _integer_epochs(curves)
    x = np.arange(len(runs))
    finals.bar(x - 0.2, [r["val_acc"] for r in runs], 0.4, label="val acc")
    finals.bar(x + 0.2, [r["val_acc_tta"] for r in runs], 0.4, label=f"with {tta}")
    finals.axhline(target, color="red", linewidth=1, label=f"target {target:g}")
    finals.set_xticks(x, [f"seed {r['seed']}" for r in runs])
    lows = [min(r["val_acc"], r["val_acc_tta"]) for r in runs] + [target]
    finals.set_ylim(max(0.0, min(lows) - 0.05), min(1.0, max(lows + [r["val_acc_tta"] for r in runs]) + 0.03))
    finals.set_title("final accuracy per run")
    finals.legend(fontsize=8)
    fig.tight_layout()
    return fig
