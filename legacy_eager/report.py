"""Per-epoch output: one fixed-width row for people, one JSON line for programs.

Both come from the same dict, so they never disagree. Framework-free.
"""
import json
import os

# (key in the epoch record, column header, format). The seed's columns, in its order.
COLUMNS = (
    ("epoch", "epoch", "{:>5d}"),
    ("lr", "lr", "{:>8.4f}"),
    ("train_loss", "train loss", "{:>10.4f}"),
    ("train_acc", "train acc", "{:>9.4f}"),
    ("val_loss", "val loss", "{:>8.4f}"),
    ("val_acc", "val acc", "{:>7.4f}"),
    ("val_acc_tta", "tta", "{:>6.4f}"),  # not the seed's: val acc with TTA (flip; airbench94's level 2, last epoch only)
    ("elapsed_s", "time", "{:>8.1f}"),
)


def _width(header, fmt):
    return max(len(header), len(fmt.format(0)))


def header_row():
    return "  ".join(h.rjust(_width(h, f)) for _, h, f in COLUMNS)


def format_row(record):
    """The row; a figure the record lacks (airbench94's TTA before its last epoch) is blank."""
    return "  ".join((f.format(record[k]) if k in record else "").rjust(_width(h, f))
                     for k, h, f in COLUMNS)


class JsonLines:
    """Appends one JSON object per line and flushes it to disk at once."""

    def __init__(self, path):
        self.path = path

    def write(self, record):
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(json.dumps(record, sort_keys=True) + "\n")
            f.flush()
            os.fsync(f.fileno())
