"""A sweep folder (repro --out DIR): --runs N seeded runs of one recipe on one dataset,
trained by one process or by several that share the folder (--shard K/N). Framework-free.

    DIR/sweep.json     the sweep: its size, its effective training flags (precision among
                       them) and its data's content digest; written once, by whichever
                       process makes the folder first (an exclusive create), and compared
                       with every process that comes later
    DIR/run-K/         seed K's run folder (legacy_eager.run_folder)
    DIR/run-K.claim    who trains seed K now (export.claims)
    DIR/repro.json, repro.md, repro.png   the report (export.repro_report)

Runs are compared by their effective flags, never by how they were typed: a recipe's name,
the run folder, the data's path and the per-process flags are left out. Data is compared by
content (legacy_eager.data.digest), so machines that mount it at different paths agree.
"""
import json
import os
import socket
import time
from typing import NamedTuple

from export import claims
from legacy_eager.atomic import create_exclusive
from legacy_eager.config import Config, flag_name
from legacy_eager.data import data_path
from legacy_eager.data.digest import content_digest
from legacy_eager.errors import UsageError
from legacy_eager.run_folder import read_metrics, read_run_info, run_config

RECORD = "sweep.json"
NOT_COMPARED = Config.PER_PROCESS + ("out", "data", "recipe", "seed")


class Shard(NamedTuple):
    """--shard K/N: the seeds s with s mod N = K - 1."""
    k: int
    n: int

    def seeds(self, runs):
        return [s for s in range(runs) if s % self.n == self.k - 1]

    def __str__(self):
        return f"{self.k}/{self.n}"


def parse_shard(text):
    """An argparse type for K/N, 1 <= K <= N."""
    import argparse

    k, sep, n = text.partition("/")
    try:
        shard = Shard(int(k), int(n))
    except ValueError:
        shard = None
    if not sep or shard is None or not 1 <= shard.k <= shard.n:
        raise argparse.ArgumentTypeError(f"expected K/N with 1 <= K <= N, got {text}")
    return shard


def run_folder(out, seed):
    return os.path.join(out, f"run-{seed}")


def claim_path(out, seed):
    return os.path.join(out, f"run-{seed}{claims.SUFFIX}")


def run_state(folder):
    """new (nothing yet), resume (started, not finished), export (trained, export missing
    or failed) or done."""
    if not os.path.isfile(os.path.join(folder, "config.json")):
        return "new"
    if not os.path.isfile(os.path.join(folder, "summary.json")):
        return "resume"
    try:
        with open(os.path.join(folder, "parity.json"), encoding="utf-8") as f:
            return "done" if json.load(f).get("result") == "pass" else "export"
    except (OSError, ValueError):
        return "export"


def effective_flags(config):
    return {k: v for k, v in config.to_dict().items() if k not in NOT_COMPARED}


def flag_differences(then, now):
    """["--width 16, not 32", ...] for the flags whose values differ, in Config's order."""
    order = list(Config.__dataclass_fields__)
    keys = sorted(set(then) | set(now),
                  key=lambda k: (order.index(k) if k in order else len(order), k))
    return [f"{flag_name(k)} {then.get(k)}, not {now.get(k)}" for k in keys
            if then.get(k) != now.get(k)]


def _short(digest):
    return digest if not digest.startswith("sha256:") else digest[:19] + "..."


def new_record(runs, config, train_flags, digest):
    return {"runs": runs, "flags": effective_flags(config), "recipe": config.recipe,
            "train_flags": list(train_flags),
            "data": {"digest": digest, "path": data_path(config.data)},
            "created": {"host": socket.gethostname(),
                        "time": time.strftime("%Y-%m-%dT%H:%M:%S%z")}}


def read_record(out):
    """DIR/sweep.json, or None for a folder made before sweeps were recorded."""
    path = os.path.join(out, RECORD)
    try:
        with open(path, encoding="utf-8") as f:
            record = json.load(f)
        record["runs"], record["flags"], record["data"]["digest"]
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise UsageError(f"{path}: not a sweep record ({type(e).__name__}: {e}); expected "
                         "the file repro writes when it makes a sweep folder") from None
    return record


def record_differences(recorded, wanted):
    changed = []
    if recorded["runs"] != wanted["runs"]:
        changed.append(f"--runs {recorded['runs']}, not {wanted['runs']}")
    changed += flag_differences(recorded["flags"], wanted["flags"])
    then, now = recorded["data"], wanted["data"]
    if then["digest"] != now["digest"]:
        changed.append(f"--data {now['path'] or '(the download)'}: other content than the "
                       f"sweep's ({_short(now['digest'])} here, {_short(then['digest'])} "
                       f"recorded from {then.get('path') or 'the download'})")
    return changed


def open_sweep(out, wanted):
    """The sweep's record, made now from `wanted` if the folder has none; (record, made).
    A process whose flags, size or data differ from the record is refused, in one line."""
    path = os.path.join(out, RECORD)
    recorded = read_record(out)
    if recorded is None:
        if create_exclusive(path, json.dumps(wanted, indent=2, sort_keys=True) + "\n"):
            return wanted, True
        recorded = read_record(out)  # another process made it first: compare with theirs
    changed = record_differences(recorded, wanted)
    if changed:
        raise UsageError(f"--out {out}: the sweep was started with other flags "
                         f"({'; '.join(changed)}); give the same flags to go on, or another --out")
    return recorded, False


def same_data(then, digest, digests):
    """Whether the data at path `then` (a run's config.json) holds `digest`; `digests` caches
    each path's digest for one call's runs."""
    if then is not None and os.path.exists(then):
        if then not in digests:
            digests[then] = content_digest(then)
        return digests[then] == digest
    return then is None and digest == content_digest(None)


def changed_flags(folder, seed, config, digest=None, digests=None):
    """How `config` differs from the run `folder` was started with, as "--width 16, not 32"
    phrases; empty when it is the same run. With `digest` (the data `config` reads), the
    data too: the same path, else the same content."""
    info = read_run_info(folder, "--out")
    # run_config: a flag an older config.json lacks reads as its default (--dropout: 0.05)
    started = run_config(info)
    changed = flag_differences(effective_flags(started), effective_flags(config))
    if started.seed != seed:
        changed.append(f"--seed {started.seed}, not {seed}")
    then, now = info["data"].get("path"), data_path(config.data)  # both absolute
    digests = {} if digests is None else digests
    if digest is not None and then != now and not same_data(then, digest, digests):
        changed.append(f"--data {then}, not {now}")
    return changed


class SeedState(NamedTuple):
    seed: int
    folder: str
    state: str              # run_state
    holder: object          # claims.Holder, or None
    detail: str             # what an unfinished seed is doing, for people

    @property
    def category(self):
        if self.state == "done":
            return "done"
        return "missing" if self.state == "new" and self.holder is None else "in progress"


def seed_state(out, seed, stale_after):
    folder = run_folder(out, seed)
    state, holder = run_state(folder), claims.read_claim(claim_path(out, seed))
    parts = []
    if state in ("resume", "export"):
        try:
            info = read_run_info(folder, "--out")
        except UsageError:
            info = {"config": {}}
        config, cpu = info["config"], (info.get("machine") or {}).get("cpu_model")
        parts.append((f"epoch {len(read_metrics(folder))} of {config.get('epochs', '?')} done"
                      if state == "resume" else "trained, not exported")
                     + f", {config.get('precision', 'fp32')}, CPU {cpu or 'not recorded'}")
    if holder is not None:
        parts.append(holder.describe(stale_after))
    elif state in ("resume", "export"):
        parts.append("no claim: stopped, or started by a repro that made none")
    return SeedState(seed, folder, state, holder, "; ".join(parts))


def seeds_on_disk(out):
    """The seeds with a run folder or a claim in `out`."""
    seeds = set()
    for name in os.listdir(out):
        stem = name[:-len(claims.SUFFIX)] if name.endswith(claims.SUFFIX) else name
        if stem.startswith("run-") and stem[4:].isdigit():
            seeds.add(int(stem[4:]))
    return seeds


def _seed_list(seeds):
    return ("seed " if len(seeds) == 1 else "seeds ") + ", ".join(str(s) for s in seeds)


def status_line(out, states, runs):
    """The sweep in one line: how many runs are done, which are in progress, which missing."""
    done = [s.seed for s in states if s.category == "done"]
    busy = [s for s in states if s.category == "in progress"]
    missing = [s.seed for s in states if s.category == "missing"]
    size = f"{runs}" if runs is not None else f"{len(states)} (size not recorded)"
    line = f"sweep {out}: {len(done)} of {size} runs done"
    line += "; in progress: " + ("; ".join(f"seed {s.seed} ({s.detail})" for s in busy)
                                 if busy else "none")
    line += "; missing: " + (_seed_list(missing) if missing else "none")
    return line
