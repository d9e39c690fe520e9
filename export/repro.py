"""Reproduce the recipe several times and report the distribution, as DAWNBench asks; fan the
seeds out over processes or machines that share the sweep folder.

    ./run.sh repro --runs N --out DIR [--target 0.94] [TRAINING FLAGS]
    ./run.sh repro --runs R --out DIR --shard K/N [TRAINING FLAGS]     one of N shards
    ./run.sh repro --report DIR [--runs N] [--target 0.94]             the report so far

Runs `python -m export.train_and_export` (train, export the SavedModel and ONNX, check parity)
with --seed 0..N-1 into DIR/run-0, DIR/run-1, ..., then writes DIR/repro.json, a markdown
table DIR/repro.md and DIR/repro.png: per run val_acc, the recipe's TTA, the ONNX model's accuracy
both ways, the training time (evaluation excluded, the DAWNBench rule), precision and CPU;
across runs mean, median, std (n - 1), min, max and how many reach --target.

--shard K/N trains only the seeds s < --runs with s mod N = K - 1, into the same DIR as the other
shards (a shared filesystem), and ends with one line of the sweep's status instead of a
report; --report DIR writes the report of the runs finished so far and names the seeds in
progress and those missing. The first process records the sweep in DIR/sweep.json (size,
effective flags, the data's content digest); a later one with other flags is refused in one
line. Each run is claimed before it is trained (DIR/run-K.claim, export.claims): a seed that
a live process holds is skipped (with --wait, waited for), a stale claim is taken over and
its run resumed.

Running the same command again goes on where it stopped: finished runs are skipped, an
interrupted run is resumed (`--resume`), a trained but unexported run is exported.
"""
import argparse
import os
import signal
import subprocess
import sys
import time

from export import claims, sweep
from export.repro_report import build_report, write_report
from export.sweep import claim_path, run_folder, run_state
from legacy_eager.cli import Parser, checked, positive
from legacy_eager.config import parse_args
from legacy_eager.config import parser as training_parser
from legacy_eager.data import data_path
from legacy_eager.data.digest import content_digest
from legacy_eager.errors import Stopped, UsageError, run_cli
from legacy_eager.signals import signals_handled

PR_SET_PDEATHSIG = 1  # linux/prctl.h
PROG = "python -m export.repro"


def _common(p):
    p.add_argument("--target", type=checked(float, "an accuracy in (0, 1]", lambda v: 0 < v <= 1),
                   default=0.94, help="accuracy to reach (default 0.94)")
    p.add_argument("--stale-after", type=positive(float, "number of seconds"),
                   default=claims.STALE_AFTER_S, metavar="SECONDS",
                   help="a claim whose heartbeat is older is stale and may be taken over "
                        "(default %(default)g; export/claims.py says why)")


def _repro_flags(p):
    """repro's own flags, added to `p`. --runs and --out are required but for --report,
    which parse() and report() check."""
    p.add_argument("--runs", type=positive(int, "integer"), help="how many runs (seeds 0..N-1)")
    p.add_argument("--out", metavar="DIR", help="holds run-0, run-1, ... and the report")
    p.add_argument("--shard", type=sweep.parse_shard, metavar="K/N",
                   help="train only the seeds s with s mod N = K - 1 (1 <= K <= N), beside the "
                        "other shards in --out; no report (use --report)")
    p.add_argument("--wait", action="store_true",
                   help="then wait for the seeds other processes hold until they are done, or "
                        "stale and taken over (for schedulers that replace a failed shard)")
    p.add_argument("--report", metavar="DIR",
                   help="write DIR's report from its finished runs, no training (takes only "
                        "--runs, --target, --stale-after)")
    _common(p)
    return p


class _SetPerRun(argparse.Action):
    """A training flag that repro sets for each run itself: refused, saying so."""

    def __call__(self, parser, namespace, values, option_string=None):
        raise argparse.ArgumentError(self, "repro sets it for each run (seeds 0..N-1, "
                                           "resumes by itself)")


def parser():
    """The whole command line: repro's flags and the training flags it passes to every run
    (legacy_eager.config.parser's), but --out, which is repro's, and --seed and --resume,
    which it sets per run."""
    training = training_parser()
    p = Parser(prog=PROG, description=__doc__, epilog=training.epilog, parents=[training],
               conflict_handler="resolve", formatter_class=argparse.RawDescriptionHelpFormatter)
    _repro_flags(p)
    for flag in ("--seed", "--resume"):
        p.add_argument(flag, action=_SetPerRun, help="set by repro for each run")
    return p


def _report_parser():
    p = Parser(prog=PROG + " --report", description=__doc__,
               formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--report", required=True, metavar="DIR", help="the sweep folder")
    p.add_argument("--runs", type=positive(int, "integer"), default=None,
                   help="the sweep's size, for a folder whose sweep.json does not record it")
    _common(p)
    return p


def _asks_for_report(argv):
    return any(a == "--report" or a.startswith("--report=") for a in argv)


def parse(argv):
    """(repro's flags, the training flags for every run as typed, their Config). parser()
    reads the whole command line first, so a bad flag of either kind fails in one line
    before any run."""
    args = parser().parse_args(argv)
    for flag in ("runs", "out"):
        if getattr(args, flag) is None:
            raise UsageError(f"the following arguments are required: --{flag} (or --report DIR)")
    _, train_flags = _repro_flags(Parser(add_help=False)).parse_known_args(argv)
    config = parse_args(train_flags)
    path = data_path(config.data)
    if path and not os.path.exists(path):
        raise UsageError(f"--data {config.data}: no such file or folder")
    return args, train_flags, config


def _check_runs(out, runs, config, digest):
    """Refuse a run folder started with other flags (and, given `digest`, other data)."""
    digests = {}
    for seed in range(runs):
        folder = run_folder(out, seed)
        changed = (run_state(folder) != "new"
                   and sweep.changed_flags(folder, seed, config, digest, digests))
        if changed:  # a report mixing two recipes would lie
            raise UsageError(f"--out {out}: {folder} was started with other flags "
                             f"({'; '.join(changed)}); give the same flags to go on, or "
                             "another --out")


def open_sweep_folder(args, train_flags, config):
    """The sweep's record, made now if the folder has none. Runs an older repro started
    there (before sweeps were recorded) are compared one by one first, their data too."""
    try:
        os.makedirs(args.out, exist_ok=True)
    except OSError as e:
        raise UsageError(f"--out {args.out}: cannot create folder ({e.strerror})") from None
    digest = content_digest(data_path(config.data))
    wanted = sweep.new_record(args.runs, config, train_flags, digest)
    recorded = sweep.read_record(args.out) is not None
    if not recorded:
        _check_runs(args.out, args.runs, config, digest)
    record, _ = sweep.open_sweep(args.out, wanted)
    if recorded:  # each run's data was compared when its process started
        _check_runs(args.out, args.runs, config, None)
    return record


def _stop_with_parent():
    """A preexec_fn that has Linux send the child SIGTERM when repro dies, even by SIGKILL: a
    run is never left training with a claim that nobody refreshes (it saves its checkpoint
    and exits, as on Ctrl-C). None where prctl is not there. It is resolved here, before
    the fork; in the child it only calls it."""
    if not sys.platform.startswith("linux"):
        return None
    import ctypes

    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    parent, sig = os.getpid(), ctypes.c_ulong(signal.SIGTERM)

    def preexec():
        prctl(PR_SET_PDEATHSIG, sig, ctypes.c_ulong(0), ctypes.c_ulong(0), ctypes.c_ulong(0))
        if os.getppid() != parent:  # repro died before prctl took effect
            os.kill(os.getpid(), signal.SIGTERM)
    return preexec


def _python_m(module, *argv, claim, stale_after):
    """`python -m module argv` in its own process (a clean TensorFlow for every run), its
    claim kept fresh meanwhile: (exit code, why the claim was lost or None). SIGINT (Ctrl-C)
    and SIGTERM are passed on and waited for: the run finishes its step, saves a checkpoint
    and exits 130 or 143; a repro started in the background still stops its run on
    `kill -INT`. A lost claim stops the run the same way."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = dict(os.environ, PYTHONPATH=root + os.pathsep + os.environ.get("PYTHONPATH", ""))
    lost = []
    with subprocess.Popen([sys.executable, "-m", module, *argv], env=env,
                          preexec_fn=_stop_with_parent()) as child:
        def stop(reason):
            lost.append(reason)
            child.send_signal(signal.SIGTERM)
        try:
            claim.record_child(child.pid)
        except OSError:
            pass  # only a help for telling, on this machine, that both processes are gone
        with claims.Heartbeat(claim, claims.heartbeat_every(stale_after), stale_after / 2, stop):
            with signals_handled(lambda signum, frame: child.send_signal(signum)):
                code = child.wait()
    return code, (lost[0] if lost else None)


def train_seed(out, seed, train_flags, stale_after, log, say_held=True):
    """Train (or resume, or export) seed `seed` unless it is done or another process holds
    it: "done", "trained" or "held"."""
    folder = run_folder(out, seed)
    if run_state(folder) == "done":
        log(f"{folder}: done")
        return "done"
    claim = claims.acquire(claim_path(out, seed), stale_after, log)
    if not isinstance(claim, claims.Claim):
        if say_held:
            log(f"{folder}: {claim.describe(stale_after)}; skipping it")
        return "held"
    try:
        state = run_state(folder)  # again: another process may have finished it meanwhile
        if state == "done":
            log(f"{folder}: done")
            return "done"
        doing = {"new": "starting", "resume": "resuming", "export": "exporting"}[state]
        log(f"{folder}: {doing} (seed {seed})")
        if state == "new":
            argv = ("export.train_and_export", *train_flags, "--seed", str(seed), "--out", folder)
        elif state == "resume":
            argv = ("export.train_and_export", "--resume", folder)
        else:
            argv = ("export.onnx", "--run", folder)
        code, lost = _python_m(*argv, claim=claim, stale_after=stale_after)
    finally:
        claim.release()  # only if it is still ours
    if lost:
        raise Stopped(f"{folder}: stopped its run: {lost}", 1)
    if code != 0:
        raise Stopped(f"{folder} stopped (exit {code}); run the same command again to go on "
                      "from there", code)
    return "trained"


def wait_for(out, held, train_flags, stale_after, log, sleep=time.sleep):
    """--wait: look again at the seeds other processes held, every heartbeat period, until
    each is done, or its claim went stale and this process took it over and trained it. A
    scheduler that replaces a failed shard (a Kubernetes pod, a Slurm task) thus finishes
    its seeds instead of finding them still claimed by the process that died."""
    if held:
        log(f"waiting for {', '.join(f'run-{seed}' for seed in held)}, claimed by other "
            f"processes: until done, or stale ({stale_after:g} s without a heartbeat)")
    while held:
        sleep(claims.heartbeat_every(stale_after))
        held = [seed for seed in held
                if train_seed(out, seed, train_flags, stale_after, log, say_held=False) == "held"]


def report(argv, log=print):
    args, other = _report_parser().parse_known_args(argv)
    if other:
        raise UsageError(f"{other[0]}: --report reads the runs' own flags; give only --runs, "
                         "--target or --stale-after")
    if not os.path.isdir(args.report):
        raise UsageError(f"--report {args.report}: no such folder")
    record = sweep.read_record(args.report)
    if record is not None and args.runs not in (None, record["runs"]):
        raise UsageError(f"--runs {args.runs}: {args.report}/{sweep.RECORD} records a sweep of "
                         f"{record['runs']} runs")
    result = build_report(args.report, args.runs, args.target, args.stale_after, record)
    write_report(result, log)
    log(result["status"])
    return result


def repro(argv, log=print):
    if _asks_for_report(argv):
        return report(argv, log)
    args, train_flags, config = parse(argv)
    record = open_sweep_folder(args, train_flags, config)
    seeds = args.shard.seeds(args.runs) if args.shard else range(args.runs)
    held = [seed for seed in seeds
            if train_seed(args.out, seed, train_flags, args.stale_after, log) == "held"]
    if args.wait:
        wait_for(args.out, held, train_flags, args.stale_after, log)
    if args.shard:  # the report is --report's, once every shard is done
        states = [sweep.seed_state(args.out, seed, args.stale_after) for seed in range(args.runs)]
        log(sweep.status_line(args.out, states, args.runs))
        return None
    result = build_report(args.out, args.runs, args.target, args.stale_after, record, train_flags)
    write_report(result, log)
    if result["in_progress"] or result["missing"]:
        log(result["status"])
    return result


def main(argv=None):
    return run_cli(repro, sys.argv[1:] if argv is None else argv)


if __name__ == "__main__":
    sys.exit(main())
