"""Reproduce the recipe several times and report the distribution, as DAWNBench asks.

    ./run.sh repro --runs N --out DIR [--target 0.94] [TRAINING FLAGS]
    python -m export.repro --runs N --out DIR [--target 0.94] [TRAINING FLAGS]

Runs `python -m export.train_and_export` (train, export the SavedModel and ONNX, check parity)
with --seed 0..N-1 into DIR/run-0, DIR/run-1, ..., then writes DIR/repro.json, a markdown
table DIR/repro.md and DIR/repro.png. Per run: val_acc and val_acc_tta (the recipe's TTA), the ONNX
model's accuracy both ways, the training time (evaluation excluded, the DAWNBench rule).
Across runs: mean, std (n - 1), min, max, and how many reach --target, plain and with TTA.

Running the same command again goes on where it stopped: finished runs are skipped, an
interrupted run is resumed (`--resume`), a trained but unexported run is exported. Other
training flags than a run folder's own stop it before any run, in one line.
"""
import argparse
import json
import os
import subprocess
import sys

import numpy as np

from legacy_eager.config import Config, parse_args
from legacy_eager.cli import Parser
from legacy_eager.errors import Stopped, UsageError, run_cli
from legacy_eager.atomic import write_json, write_text
from legacy_eager.run_folder import read_metrics, read_run_info, run_config
from legacy_eager.signals import signals_handled
from legacy_eager.data import data_path

STATS = (("val_acc", "val acc"), ("val_acc_tta", "val acc, TTA"),
         ("onnx_accuracy", "ONNX"), ("onnx_accuracy_tta", "ONNX, TTA"),
         ("train_time_s", "training s"))


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


def _parser():
    p = Parser(prog="python -m export.repro", description=__doc__,
               formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--runs", type=int, required=True, help="how many runs (seeds 0..N-1)")
    p.add_argument("--out", required=True, metavar="DIR", help="holds run-0, run-1, ... and the report")
    p.add_argument("--target", type=float, default=0.94, help="accuracy to reach (default 0.94)")
    return p


def parse(argv):
    args, train_flags = _parser().parse_known_args(argv)
    if args.runs < 1:
        raise UsageError(f"--runs {args.runs}: expected a positive integer")
    if not 0 < args.target <= 1:
        raise UsageError(f"--target {args.target}: expected an accuracy in (0, 1]")
    for flag in ("--seed", "--resume"):
        if any(f == flag or f.startswith(flag + "=") for f in train_flags):
            raise UsageError(f"{flag}: repro sets it for each run (seeds 0..N-1, resumes by itself)")
    config = parse_args(train_flags)  # the training flags fail here, in one line, before any run
    path = data_path(config.data)
    if path and not os.path.exists(path):
        raise UsageError(f"--data {config.data}: no such file or folder")
    return args, train_flags


def changed_flags(folder, seed, train_flags):
    """How the training flags given now differ from those `folder` was started with, as
    "--width 16, not 32" phrases; empty when they are the same run."""
    info, wanted = read_run_info(folder, "--out"), parse_args(train_flags)
    # run_config: a flag an older config.json lacks reads as its default (--dropout: 0.05)
    # Runs compare by their effective flags: a recipe's name is only how they were typed.
    saved, ignored = run_config(info).to_dict(), Config.PER_PROCESS + ("out", "data", "recipe")
    changed = [f"--{key.replace('_', '-')} {saved[key]}, not {value}"
               for key, value in dict(wanted.to_dict(), seed=seed).items()
               if key not in ignored and saved[key] != value]
    then, now = info["data"].get("path"), data_path(wanted.data)  # both absolute
    if then and now and then != now:
        changed.append(f"--data {then}, not {now}")
    return changed


def _python_m(module, *argv):
    """`python -m module argv` in its own process (a clean TensorFlow for every run);
    its exit code. SIGINT (Ctrl-C) and SIGTERM are passed on and waited for: the run
    finishes its step, saves a checkpoint and exits 130 or 143; SIGTERM never leaves the
    run orphaned, and a repro started in the background still stops its run on `kill -INT`."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = dict(os.environ, PYTHONPATH=root + os.pathsep + os.environ.get("PYTHONPATH", ""))
    with subprocess.Popen([sys.executable, "-m", module, *argv], env=env) as child:
        with signals_handled(lambda signum, frame: child.send_signal(signum)):
            return child.wait()


def run_one(folder, seed, train_flags, log):
    state = run_state(folder)
    if state == "done":
        log(f"{folder}: done")
        return
    doing = {"new": "starting", "resume": "resuming", "export": "exporting"}[state]
    log(f"{folder}: {doing} (seed {seed})")
    if state == "new":
        code = _python_m("export.train_and_export", *train_flags, "--seed", str(seed), "--out", folder)
    elif state == "resume":
        code = _python_m("export.train_and_export", "--resume", folder)
    else:
        code = _python_m("export.onnx", "--run", folder)
    if code != 0:
        raise Stopped(f"{folder} stopped (exit {code}); run the same command again to go on "
                         "from there", code)


def collect(folder, seed):
    with open(os.path.join(folder, "summary.json"), encoding="utf-8") as f:
        summary = json.load(f)
    with open(os.path.join(folder, "parity.json"), encoding="utf-8") as f:
        parity = json.load(f)
    epochs = read_metrics(folder)
    final = summary["final"]
    return {"seed": seed, "folder": folder, "val_acc": final["val_acc"],
            "val_acc_tta": final["val_acc_tta"], "onnx_accuracy": parity["onnx_accuracy"],
            "onnx_accuracy_tta": parity["tta"]["onnx_accuracy"],
            "train_time_s": sum(r["train_time_s"] for r in epochs),
            "total_time_s": summary["total_time_s"], "epochs": epochs}


def statistics(runs, target):
    stats = {}
    for key, _ in STATS:
        values = np.array([r[key] for r in runs], dtype=np.float64)
        stats[key] = {"mean": float(values.mean()),
                      "std": float(values.std(ddof=1)) if len(values) > 1 else 0.0,
                      "min": float(values.min()), "max": float(values.max())}
    stats["reached_target"] = sum(r["val_acc"] >= target for r in runs)
    stats["reached_target_tta"] = sum(r["val_acc_tta"] >= target for r in runs)
    return stats


def markdown(report):
    runs, stats, target = report["runs"], report["statistics"], report["target"]
    head = "| run | " + " | ".join(label for _, label in STATS) + " |"
    lines = [f"{len(runs)} runs, target {target:g}: {stats['reached_target']} of {len(runs)} "
             f"reach it, {stats['reached_target_tta']} with TTA.", "", head,
             "|" + " --- |" * (len(STATS) + 1)]

    def cells(values):
        return " | ".join(f"{values[k]:.0f}" if k.endswith("_s") else f"{values[k]:.4f}"
                          for k, _ in STATS)
    for r in runs:
        lines.append(f"| seed {r['seed']} | {cells(r)} |")
    for stat in ("mean", "std", "min", "max"):
        lines.append(f"| {stat} | {cells({k: stats[k][stat] for k, _ in STATS})} |")
    lines += ["", f"Flags: `{' '.join(report['train_flags'])}`"]
    return "\n".join(lines) + "\n"


def repro(argv, log=print):
    args, train_flags = parse(argv)
    os.makedirs(args.out, exist_ok=True)
    folders = [os.path.join(args.out, f"run-{seed}") for seed in range(args.runs)]
    for seed, folder in enumerate(folders):  # a report mixing two recipes would lie
        changed = run_state(folder) != "new" and changed_flags(folder, seed, train_flags)
        if changed:
            raise UsageError(f"--out {args.out}: {folder} was started with other flags "
                             f"({'; '.join(changed)}); give the same flags to go on, or "
                             "another --out")
    for seed, folder in enumerate(folders):
        run_one(folder, seed, train_flags, log)
    runs = [collect(folder, seed) for seed, folder in enumerate(folders)]
    report = {"target": args.target, "train_flags": train_flags,
              "runs": [{k: v for k, v in r.items() if k != "epochs"} for r in runs],
              "statistics": statistics(runs, args.target)}
    write_json(os.path.join(args.out, "repro.json"), report)
    table = markdown(report)
    write_text(os.path.join(args.out, "repro.md"), table)
    from legacy_eager.plots import draw_repro

    draw_repro(runs, args.target, os.path.join(args.out, "repro.png"))
    log(table.rstrip())
    log(f"wrote {args.out}/repro.json, repro.md, repro.png")
    return report


def main(argv=None):
    return run_cli(repro, sys.argv[1:] if argv is None else argv)


if __name__ == "__main__":
    sys.exit(main())
