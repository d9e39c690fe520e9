"""The run folder on disk: choosing it, reading its config.json (the one place that parses
it), and trimming metrics.jsonl to what a checkpoint holds. Framework-free.

    DIR/config.json     flags, data, normalisation, devices (written at the start)
    DIR/metrics.jsonl   one JSON line per finished epoch
    DIR/checkpoints/    model, optimizer, global step, progress (one per epoch, last 3)
    DIR/summary.json    the final record (written at the end)
"""
import json
import os
import time

from legacy_eager.atomic import write_text
from legacy_eager.config import Config
from legacy_eager.errors import UsageError

RUN_FILES = ("config.json", "metrics.jsonl", "summary.json", "checkpoints")


def check_out_dir(out):
    """A new run folder; never one that already holds a run (its results would be mixed)."""
    out = out or os.path.join("runs", time.strftime("%Y%m%d-%H%M%S"))
    if os.path.exists(out) and not os.path.isdir(out):
        raise UsageError(f"--out {out}: exists and is not a folder")
    taken = [f for f in RUN_FILES if os.path.exists(os.path.join(out, f))]
    if taken:
        raise UsageError(f"--out {out}: already holds a run ({taken[0]}); choose a new --out")
    return out


def make_out_dir(out):
    try:
        os.makedirs(out, exist_ok=True)
    except OSError as e:
        raise UsageError(f"--out {out}: cannot create folder ({e.strerror})") from None


def read_run_info(run_dir, flag="--run"):
    """DIR/config.json as a dict, checked for the keys every reader needs."""
    path = os.path.join(run_dir, "config.json")
    if not os.path.isfile(path):
        raise UsageError(f"{flag} {run_dir}: no config.json; expected a run folder written by "
                         "legacy_eager.train (./run.sh --out DIR)")
    try:
        with open(path, encoding="utf-8") as f:
            info = json.load(f)
        info["config"]["width"], info["data"]["normalization"]["mean"], info["data"]["classes"]
    except (ValueError, KeyError, TypeError) as e:
        raise UsageError(f"{path}: not a run config ({type(e).__name__}: {e})") from None
    return info


def run_config(info, **overrides):
    """The Config a run was started with, pointed at the data it read (absolute path)."""
    fields = set(Config.__dataclass_fields__)
    values = {k: v for k, v in info["config"].items() if k in fields}
    values.update(data=info["data"].get("path"))
    values.update(overrides)
    try:
        return Config(**values)
    except TypeError as e:
        raise UsageError(f"config.json: not a run config ({e})") from None


def read_metrics(run_dir):
    """The epoch records in DIR/metrics.jsonl, stopping at the first line that does not
    parse (a crash mid-write leaves half a line at the end)."""
    path = os.path.join(run_dir, "metrics.jsonl")
    records = []
    if not os.path.exists(path):
        return records
    with open(path, encoding="utf-8", errors="replace") as f:
        for line in f:
            try:
                record = json.loads(line)
                record["epoch"]
            except (ValueError, KeyError, TypeError):
                break
            records.append(record)
    return records


def keep_metrics_of(run_dir, epochs):
    """metrics.jsonl cut to the epochs a checkpoint holds, so a resumed run never writes an
    epoch twice or keeps a half-written line (a crash can fall between an epoch's line and
    its checkpoint, or inside the line)."""
    path = os.path.join(run_dir, "metrics.jsonl")
    if not os.path.exists(path):
        return []
    kept = [r for r in read_metrics(run_dir) if r["epoch"] <= epochs]
    write_text(path, "".join(json.dumps(r, sort_keys=True) + "\n" for r in kept))
    return kept
