"""Train DavidNet with the seed's recipe: `python -m legacy_eager.train [FLAGS]`.

Writes into --out: config.json (at the start), metrics.jsonl (a line per epoch),
checkpoints/ (model, optimizer, global step; one per epoch, last 3 kept), tensorboard/
(event files), curves.png (redrawn each epoch) and summary.json (at the end). Flags and data are checked before TensorFlow is imported,
so a mistake costs a second, not a TensorFlow start-up.
"""
import json
import os
import platform
import shutil
import sys
import tempfile

import numpy as np

from legacy_eager import data as cifar
from legacy_eager import devices, run_folder
from legacy_eager.atomic import write_json
from legacy_eager.config import parse_args
from legacy_eager.errors import UsageError, run_cli


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
    except (ValueError, KeyError, TypeError, AttributeError) as e:
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


# ---------------------------------------------------------------- the stages of a run


def settle_config(config):
    """The run's Config (a resumed run's own), checked for combinations that cannot run."""
    if config.resume is not None:
        info = run_folder.read_run_info(config.resume, flag="--resume")
        config = run_folder.run_config(info, out=config.resume, resume=config.resume,
                                       allow_cpu=config.allow_cpu)
    task = cluster_task()
    if config.precision == "mixed_float16" and (config.devices > 1 or task):
        raise UsageError("--precision mixed_float16 runs on one device only (its loss "
                         "scaling is not synchronised across replicas); use mixed_bfloat16")
    if config.cutout and config.pipeline == "seed":
        raise UsageError(f"--cutout {config.cutout}: the seed's pipeline has no cutout; use "
                         "--pipeline fast (the default)")
    if task and config.devices > 1:
        raise UsageError(f"--devices {config.devices} with TF_CONFIG: a cluster trains one "
                         "replica per worker; drop --devices (or TF_CONFIG for one machine)")
    return config, task


def choose_out_dir(config, task):
    """The run folder (checked before any work), or a scratch folder for a non-chief worker."""
    out = config.out if config.resume else run_folder.check_out_dir(config.out)
    if task is not None and not task[2]:  # other workers' (identical) checkpoints
        out = tempfile.mkdtemp(prefix=f"davidnet-{task[0]}{task[1]}-")
    return out


def start_tensorflow(config, log, warn):
    """Import TensorFlow, choose the strategy, and say which devices train; stop (exit 2)
    when nvidia-smi sees a GPU that TensorFlow cannot use, unless the CPU is allowed."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import tensorflow as tf

    strategy = make_strategy(config, tf)
    tf_gpus = devices.tensorflow_gpus(tf)
    warning = devices.check_gpu_seen(tf_gpus, devices.nvidia_smi_gpus(), config.allow_cpu)
    if warning:
        warn(warning)
    used = devices.describe(tf_gpus)
    log(f"devices: {used}")
    if config.deterministic:
        tf.config.experimental.enable_op_determinism()
    tf.random.set_seed(config.seed)
    return tf, strategy, {"used": used, "gpus": [name for _, name in tf_gpus],
                          "logical": [d.name for d in tf.config.list_logical_devices()]}


def describe_run(config, tf, source, len_train, len_test, train_mean, train_std, trainer,
                 device_info):
    return {
        "config": config.to_dict(),
        "data": {"source": source, "path": data_path(config),
                 "len_train": len_train, "len_test": len_test,
                 "classes": list(cifar.CLASSES),
                 # uint8 RGB pixels are fed as (x - mean) / std, per channel.
                 "normalization": {"mean": train_mean.tolist(), "std": train_std.tolist()}},
        "batches_per_epoch": trainer.batches_per_epoch,
        "versions": {"python": platform.python_version(), "tensorflow": tf.__version__,
                     "numpy": np.__version__},
        "devices": device_info,
    }


def restore_or_record(config, trainer, out, run_info, log, warn):
    """--resume: the newest good checkpoint and metrics.jsonl cut to match it.
    A new run: config.json."""
    from legacy_eager.checkpoints import restore_latest

    if config.resume is None:
        write_json(os.path.join(out, "config.json"), dict(
            run_info, config=dict(run_info["config"], out=out)))
        return
    restored = restore_latest(trainer, out, warn)
    done = int(trainer.progress.epoch.numpy())
    run_folder.keep_metrics_of(out, done)
    log(f"resuming {out} from {restored or 'the start (no checkpoint)'}: epoch {done + 1}, "
        f"batch {int(trainer.progress.batch.numpy())}, global step "
        f"{int(trainer.global_step.numpy())}")


def finish(config, trainer, final, out, run_info, task, log):
    """summary.json and the run's last line."""
    from legacy_eager.checkpoints import weights_fingerprint

    if final is None:  # resumed a run that had already finished
        final = run_folder.read_metrics(out)[-1]
    chief = task is None or task[2]
    summary = dict(run_info, final=final, total_time_s=final["elapsed_s"], out=out,
                   weights_sha256=weights_fingerprint(trainer), chief=chief)
    write_json(os.path.join(out, "summary.json"), summary)
    tta = f" (flip TTA {final['val_acc_tta']:.4f})" if "val_acc_tta" in final else ""
    log(f"final val_acc {final['val_acc']:.4f}{tta} after {config.epochs} epochs "
        f"({summary['total_time_s']:.0f} s); weights sha256 {summary['weights_sha256'][:16]}; "
        + (f"run folder {out}" if chief else f"worker {task[1]} (the chief keeps the run)"))
    if not chief:
        shutil.rmtree(out, ignore_errors=True)
    return summary


def run(config, log=print, warn=None):
    warn = warn or (lambda message: print(message, file=sys.stderr))
    config, task = settle_config(config)
    out = choose_out_dir(config, task)
    source, (x_train, y_train), (x_test, y_test) = load_data(config)
    tf, strategy, device_info = start_tensorflow(config, log, warn)
    run_folder.make_out_dir(out)

    from legacy_eager import pipeline
    from legacy_eager.loop import fit
    from legacy_eager.plots import CurvesPlot
    from legacy_eager.signals import signals_recorded
    from legacy_eager.tensorboard import TensorBoardLog
    from legacy_eager.trainer import Trainer

    len_train, len_test = len(x_train), len(x_test)
    train_mean, train_std = pipeline.channel_stats(x_train)
    trainer = Trainer(config, len_train, strategy=strategy)
    run_info = describe_run(config, tf, source, len_train, len_test, train_mean, train_std,
                            trainer, device_info)
    restore_or_record(config, trainer, out, run_info, log, warn)
    log(f"DavidNet width {config.width}, {len_train} train / {len_test} test images from "
        f"{source}, mode {config.mode}, {config.pipeline} pipeline, {config.precision}, "
        f"{config.epochs} epochs; writing {out}")

    make_train_set, make_test_set = pipeline.PIPELINES[config.pipeline]
    train_set = make_train_set(x_train, y_train, train_mean, train_std, config.batch_size,
                               seed=config.seed, cutout=config.cutout)
    test_set = make_test_set(x_test, y_test, train_mean, train_std, config.batch_size)
    del x_train, x_test  # each pipeline holds its own copy; these would double the memory
    observers = [TensorBoardLog(out, config, trainer.batches_per_epoch), CurvesPlot(out)]
    with signals_recorded() as stop:
        final = fit(trainer, train_set, test_set, len_train, len_test, out, log=log, stop=stop,
                    observers=observers)
    return finish(config, trainer, final, out, run_info, task, log)


def main(argv=None):
    return run_cli(lambda: run(parse_args(argv)))


if __name__ == "__main__":
    sys.exit(main())
