"""Train DavidNet with the seed's recipe: `python -m legacy_eager.train [FLAGS]`.

Writes into --out: config.json (at the start), metrics.jsonl (a line per epoch),
checkpoints/ (model, optimizer, global step; one per epoch, last 3 kept) and
summary.json (at the end). Flags and data are checked before TensorFlow is imported,
so a mistake costs a second, not a TensorFlow start-up.
"""
import contextlib
import json
import os
import platform
import shutil
import signal
import sys
import tempfile
import threading
import time

import numpy as np

from legacy_eager import data as cifar
from legacy_eager import report
from legacy_eager.config import Config, parse_args
from legacy_eager.errors import UsageError, run_cli

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


def data_path(config):
    """Absolute path of the data a run reads (None: the keras download), so that export
    can re-read the same test images from any working folder."""
    path = config.data or os.environ.get("CIFAR10_DATA")
    return os.path.abspath(path) if path else None


def load_data(config):
    """Decoded CIFAR-10 cut to the requested subsets, drawn with --seed."""
    dataset = cifar.resolve(config.data)
    rng = np.random.default_rng(config.seed)
    x_train, y_train = cifar.random_subset(dataset.x_train, dataset.y_train,
                                           config.train_subset, rng, "--train-subset")
    x_test, y_test = cifar.random_subset(dataset.x_test, dataset.y_test,
                                         config.test_subset, rng, "--test-subset")
    return dataset.source, (x_train, y_train), (x_test, y_test)


def cluster_task():
    """(task type, index, is_chief) from TF_CONFIG when it names a cluster, else None.
    The chief is the task of type "chief", or worker 0 when the cluster has none."""
    raw = os.environ.get("TF_CONFIG")
    if not raw:
        return None
    try:
        tf_config = json.loads(raw)
        cluster = tf_config.get("cluster")
        if not cluster:
            return None
        kind, index = tf_config["task"]["type"], int(tf_config["task"]["index"])
        chief_kind = "chief" if "chief" in cluster else "worker"
        return kind, index, (kind, index) == (chief_kind, 0)
    except (ValueError, KeyError, TypeError) as e:
        raise UsageError(f"TF_CONFIG: not a cluster description ({type(e).__name__}: {e})") from None


def make_strategy(config, tf):
    """MultiWorkerMirroredStrategy when TF_CONFIG names a cluster; MirroredStrategy over
    --devices GPUs (or logical CPU devices); None (TF's default, one device) otherwise.
    Called first thing after TensorFlow is imported: both need the runtime unstarted."""
    if cluster_task() is not None:
        return tf.distribute.MultiWorkerMirroredStrategy()
    n = config.devices
    if n == 1:
        return None
    gpus = tf.config.list_physical_devices("GPU")
    if gpus:
        if len(gpus) < n:
            raise UsageError(f"--devices {n}: this machine has {len(gpus)} GPU(s)")
        return tf.distribute.MirroredStrategy([f"/gpu:{i}" for i in range(n)])
    try:
        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(
            cpu, [tf.config.LogicalDeviceConfiguration() for _ in range(n)])
    except RuntimeError:
        raise UsageError(f"--devices {n}: TensorFlow had already started in this process; "
                         "logical CPU devices must be set before") from None
    return tf.distribute.MirroredStrategy([f"/cpu:{i}" for i in range(n)])


def resumed_config(run_dir):
    """The Config a run in run_dir was started with, pointed at the same data."""
    path = os.path.join(run_dir, "config.json")
    try:
        with open(path, encoding="utf-8") as f:
            saved = json.load(f)
        values = dict(saved["config"], data=saved["data"]["path"], out=run_dir, resume=run_dir)
        return Config(**values)
    except FileNotFoundError:
        raise UsageError(f"--resume {run_dir}: no config.json; expected a run folder") from None
    except (ValueError, KeyError, TypeError) as e:
        raise UsageError(f"{path}: not a run config ({type(e).__name__}: {e})") from None


def keep_metrics_of(out, epochs):
    """metrics.jsonl cut to the epochs a checkpoint holds, so a resumed run never writes an
    epoch twice (a crash can fall between an epoch's line and its checkpoint)."""
    path = os.path.join(out, "metrics.jsonl")
    if not os.path.exists(path):
        return
    with open(path, encoding="utf-8") as f:
        kept = [line for line in f if line.strip() and json.loads(line)["epoch"] <= epochs]
    tmp = f"{path}.tmp-{os.getpid()}"
    with open(tmp, "w", encoding="utf-8") as f:
        f.writelines(kept)
    os.replace(tmp, path)


@contextlib.contextmanager
def signals_recorded():
    """SIGINT and SIGTERM set a flag (read by the training loop between steps) instead
    of killing the process mid-write. Yields a function returning the signal or None."""
    caught = []
    handler = lambda signum, frame: caught.append(signum)  # noqa: E731
    if threading.current_thread() is not threading.main_thread():
        yield lambda: None
        return
    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield lambda: caught[0] if caught else None
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def run(config, log=print, warn=None):
    warn = warn or (lambda message: print(message, file=sys.stderr))
    resuming = config.resume is not None
    if resuming:
        config = resumed_config(config.resume)
    if config.precision == "mixed_float16" and (config.devices > 1 or cluster_task()):
        raise UsageError("--precision mixed_float16 runs on one device only (its loss "
                         "scaling is not synchronised across replicas); use mixed_bfloat16")
    task = cluster_task()
    chief = task is None or task[2]
    # Validate everything that needs no TensorFlow first.
    out = config.out if resuming else check_out_dir(config.out)
    if not chief:  # other workers write their (identical) checkpoints to a scratch folder
        out = tempfile.mkdtemp(prefix=f"davidnet-{task[0]}{task[1]}-")
    source, (x_train, y_train), (x_test, y_test) = load_data(config)
    make_out_dir(out)

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import tensorflow as tf

    strategy = make_strategy(config, tf)
    from legacy_eager import pipeline
    from legacy_eager.trainer import Trainer, fit, restore_latest, weights_fingerprint

    if config.deterministic:
        tf.config.experimental.enable_op_determinism()
    tf.random.set_seed(config.seed)
    len_train, len_test = len(x_train), len(x_test)
    train_mean, train_std = pipeline.channel_stats(x_train)
    trainer = Trainer(config, len_train, strategy=strategy)
    run_info = {
        "config": config.to_dict(),
        "data": {"source": source, "path": data_path(config),
                 "len_train": len_train, "len_test": len_test,
                 "classes": list(cifar.CLASSES),
                 # uint8 RGB pixels are fed as (x - mean) / std, per channel.
                 "normalization": {"mean": train_mean.tolist(), "std": train_std.tolist()}},
        "batches_per_epoch": trainer.batches_per_epoch,
        "versions": {"python": platform.python_version(), "tensorflow": tf.__version__,
                     "numpy": np.__version__},
        "devices": [d.name for d in tf.config.list_logical_devices()],
    }
    if resuming:
        restored = restore_latest(trainer, out, warn)
        done = int(trainer.progress.epoch.numpy())
        keep_metrics_of(out, done)
        log(f"resuming {out} from {restored or 'the start (no checkpoint)'}: epoch {done + 1}, "
            f"batch {int(trainer.progress.batch.numpy())}, global step "
            f"{int(trainer.global_step.numpy())}")
    else:
        report.write_json_atomic(os.path.join(out, "config.json"), dict(
            run_info, config=dict(run_info["config"], out=out)))
    log(f"DavidNet width {config.width}, {len_train} train / {len_test} test images from "
        f"{source}, mode {config.mode}, {config.pipeline} pipeline, {config.precision}, "
        f"{config.epochs} epochs; writing {out}")

    make_train_set, make_test_set = pipeline.PIPELINES[config.pipeline]
    train_set = make_train_set(x_train, y_train, train_mean, train_std, config.batch_size,
                               seed=config.seed)
    test_set = make_test_set(x_test, y_test, train_mean, train_std, config.batch_size)
    del x_train, x_test  # each pipeline holds its own copy; these would double the memory
    with signals_recorded() as stop:
        final = fit(trainer, train_set, test_set, len_train, len_test, out, log=log, stop=stop)
    if final is None:  # resumed a run that had already finished
        with open(os.path.join(out, "metrics.jsonl"), encoding="utf-8") as f:
            final = json.loads(f.read().splitlines()[-1])
    summary = dict(run_info, final=final, total_time_s=final["elapsed_s"], out=out,
                   weights_sha256=weights_fingerprint(trainer), chief=chief)
    report.write_json_atomic(os.path.join(out, "summary.json"), summary)
    log(f"final val_acc {final['val_acc']:.4f} after {config.epochs} epochs "
        f"({summary['total_time_s']:.0f} s); weights sha256 {summary['weights_sha256'][:16]}; "
        + (f"run folder {out}" if chief else f"worker {task[1]} (the chief keeps the run)"))
    if not chief:
        shutil.rmtree(out, ignore_errors=True)
    return summary


def main(argv=None):
    return run_cli(lambda: run(parse_args(argv)))


if __name__ == "__main__":
    sys.exit(main())
