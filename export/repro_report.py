"""The report of a sweep (export.sweep): DIR/repro.json, DIR/repro.md and DIR/repro.png from
its finished runs, with the seeds still in progress and those missing. Per run: val_acc and
val_acc_tta (the recipe's TTA), the ONNX model's accuracy both ways, the training time (evaluation
excluded, the DAWNBench rule), the precision and the machine's CPU. Across runs: mean,
median, std (n - 1), min, max, and how many reach the target. Framework-free (matplotlib
draws the picture).

Runs of different recipes or data are refused: against the sweep record when the folder
has one (each run's data was compared by content when its process started), else against
each other (the data by path, or by content where the paths differ but both are readable).
"""
import json
import os

import numpy as np

from export import sweep
from legacy_eager.atomic import write_json, write_text
from legacy_eager.config import Config, flag_name
from legacy_eager.errors import UsageError
from legacy_eager.run_folder import read_metrics, read_run_info, run_config
from legacy_eager.run import tta_name

STATS = (("val_acc", "val acc"), ("val_acc_tta", "val acc, TTA"),
         ("onnx_accuracy", "ONNX"), ("onnx_accuracy_tta", "ONNX, TTA"),
         ("train_time_s", "training s"))
ACCURACIES = ("val_acc", "val_acc_tta", "onnx_accuracy", "onnx_accuracy_tta")
NOT_RECORDED = "not recorded"


def collect(folder, seed):
    """One finished run's numbers and conditions."""
    with open(os.path.join(folder, "summary.json"), encoding="utf-8") as f:
        summary = json.load(f)
    with open(os.path.join(folder, "parity.json"), encoding="utf-8") as f:
        parity = json.load(f)
    info = read_run_info(folder, "--report")
    machine = info.get("machine") or {}  # config.json before the machine was recorded
    epochs = read_metrics(folder)
    final = summary["final"]
    return {"seed": seed, "folder": folder, "val_acc": final["val_acc"],
            "val_acc_tta": final["val_acc_tta"], "onnx_accuracy": parity["onnx_accuracy"],
            "onnx_accuracy_tta": parity["tta"]["onnx_accuracy"],
            "train_time_s": sum(r["train_time_s"] for r in epochs),
            "total_time_s": summary["total_time_s"],
            "precision": info["config"].get("precision", "fp32"),
            "cpu": machine.get("cpu_model") or NOT_RECORDED,
            "machine": info.get("machine"), "epochs": epochs}


def statistics(runs, target):
    stats = {}
    for key, _ in STATS:
        values = np.array([r[key] for r in runs], dtype=np.float64)
        stats[key] = {"mean": float(values.mean()), "median": float(np.median(values)),
                      "std": float(values.std(ddof=1)) if len(values) > 1 else 0.0,
                      "min": float(values.min()), "max": float(values.max())}
    for key, name in zip(ACCURACIES, ("reached_target", "reached_target_tta",
                                      "reached_target_onnx", "reached_target_onnx_tta")):
        stats[name] = sum(r[key] >= target for r in runs)
    return stats


def _reference(record, infos):
    """What every run must agree with: the sweep record, else the first run with a config."""
    if record is not None:
        return "the sweep record (sweep.json)", record["flags"], None
    seed, info = next(iter(infos.items()))
    return f"run-{seed}", sweep.effective_flags(run_config(info)), info["data"].get("path")


def check_runs_agree(out, record, infos):
    """Refuse (one line) runs whose effective flags, or data, differ. `infos`: seed ->
    config.json of each run that has one."""
    if not infos:
        return
    against, flags, data = _reference(record, infos)
    digests = {}
    for seed, info in infos.items():
        config = run_config(info)
        changed = sweep.flag_differences(flags, sweep.effective_flags(config))
        path = info["data"].get("path")
        if record is None and path != data and not _same_content(path, data, digests):
            changed.append(f"--data {data}, not {path}")
        if changed:
            raise UsageError(f"--report {out}: run-{seed} was trained with other flags than "
                             f"{against} ({'; '.join(changed)}); a report would mix two recipes")


def _same_content(a, b, digests):
    from legacy_eager.data.digest import content_digest

    if a is None or b is None or not (os.path.exists(a) and os.path.exists(b)):
        return False
    for path in (a, b):
        if path not in digests:
            digests[path] = content_digest(path)
    return digests[a] == digests[b]


def _non_default(flags):
    defaults = sweep.effective_flags(Config())
    return " ".join(f"{flag_name(k)} {flags[k]}" for k in defaults  # in Config's order
                    if k in flags and defaults[k] != flags[k])


def _cells(values):
    return " | ".join(f"{values[k]:.0f}" if k.endswith("_s") else f"{values[k]:.4f}"
                      for k, _ in STATS)


def markdown(report):
    runs, stats, target = report["runs"], report["statistics"], report["target"]
    lines = []
    if runs:
        lines += [f"{len(runs)} runs, target {target:g}: {stats['reached_target']} of {len(runs)} "
                  f"reach it, {stats['reached_target_tta']} with TTA.", "",
                  "| run | " + " | ".join(label for _, label in STATS) + " | precision | CPU |",
                  "|" + " --- |" * (len(STATS) + 3)]
        for r in runs:
            lines.append(f"| seed {r['seed']} | {_cells(r)} | {r['precision']} | {r['cpu']} |")
        for stat in ("mean", "median", "std", "min", "max"):
            lines.append(f"| {stat} | {_cells({k: stats[k][stat] for k, _ in STATS})} |  |  |")
        reached = [str(stats[name]) for name in ("reached_target", "reached_target_tta",
                                                 "reached_target_onnx", "reached_target_onnx_tta")]
        lines.append(f"| at or above {target:g} | " + " | ".join(reached) + " |  |  |  |")
    else:
        lines.append("No finished run yet.")
    sweep_info = report["sweep"]
    busy = "; ".join(f"seed {s['seed']} ({s['detail']})" for s in report["in_progress"])
    missing = ", ".join(str(seed) for seed in report["missing"])
    lines += ["", f"In progress: {busy or 'none'}.",
              f"Missing: {missing or 'none'}"
              + ("" if sweep_info["runs"] is not None else
                 " (the sweep's size is not recorded: give --runs N to list the seeds never "
                 "started)")
              + "."]
    if report["train_flags"] is not None:
        lines.append(f"Flags: `{' '.join(report['train_flags'])}`")
    if sweep_info["flags"] is not None:
        lines.append(f"Effective flags not at their default ({sweep_info['flags_from']}): "
                     f"`{_non_default(sweep_info['flags']) or 'none'}`")
    lines.append(f"Data: {sweep_info['data']}")
    return "\n".join(lines) + "\n"


def build_report(out, size, target, stale_after, record, train_flags=None):
    """The report's content (no file written). `size`: the sweep's --runs, None when neither
    its record nor the command line says (then the seeds are those found on disk)."""
    size = record["runs"] if record is not None else size
    if size is None:
        found = sweep.seeds_on_disk(out)
        seeds = range(max(found) + 1 if found else 0)
    else:
        seeds = range(size)
    states = [sweep.seed_state(out, seed, stale_after) for seed in seeds]
    infos = {s.seed: read_run_info(s.folder, "--report") for s in states if s.state != "new"}
    check_runs_agree(out, record, infos)
    runs = [collect(s.folder, s.seed) for s in states if s.category == "done"]
    if record is not None:
        data = (f"{record['data']['digest']} (first read from "
                f"{record['data'].get('path') or 'the download'})")
        train_flags = record.get("train_flags", train_flags)
        flags, flags_from = record["flags"], "sweep.json"
    else:
        paths = sorted({str(info["data"].get("path")) for info in infos.values()})
        data = (", ".join(paths) + " (by path: this sweep has no record of its data's content)"
                if paths else NOT_RECORDED)
        first = next(iter(infos), None)
        flags = sweep.effective_flags(run_config(infos[first])) if infos else None
        flags_from = f"run-{first}'s config.json"
    return {"target": target, "train_flags": train_flags,
            "sweep": {"folder": out, "runs": size, "recorded": record is not None,
                      "flags": flags, "flags_from": flags_from, "data": data},
            "runs": runs, "statistics": statistics(runs, target) if runs else None,
            "in_progress": [{"seed": s.seed, "state": s.state, "detail": s.detail}
                            for s in states if s.category == "in progress"],
            "missing": [s.seed for s in states if s.category == "missing"],
            "status": sweep.status_line(out, states, size)}


def write_report(report, log=print):
    """repro.json, repro.md and (with a finished run) repro.png in the sweep folder."""
    out = report["sweep"]["folder"]
    runs = report["runs"]
    write_json(os.path.join(out, "repro.json"),
               dict(report, runs=[{k: v for k, v in r.items() if k != "epochs"} for r in runs]))
    table = markdown(report)
    write_text(os.path.join(out, "repro.md"), table)
    written = "repro.json, repro.md"
    if runs:
        from legacy_eager.plots import draw_repro

        network = (report["sweep"]["flags"] or {}).get("network", "davidnet")
        draw_repro(runs, report["target"], os.path.join(out, "repro.png"), tta_name(network))
        written += ", repro.png"
    log(table.rstrip())
    log(f"wrote {out}/{written}")
    return table
