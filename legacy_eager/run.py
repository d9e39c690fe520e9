"""A training run as a sequence of named stages: settle the config (a resumed run's own),
choose the run folder, read the data, start TensorFlow on the chosen devices, build the
trainer (the seed's DavidNet, or airbench94's from airbench_tf when the recipe names that
network), restore or record, fit, and finish with summary.json. `run(config)` is what
`python -m legacy_eager.train` and `python -m export.train_and_export` call. TensorFlow is imported
only once the flags and the data have been checked."""
import os
import platform
import shutil
import sys
import tempfile

from typing import TYPE_CHECKING, NamedTuple

import numpy as np

from legacy_eager import data as cifar
from legacy_eager import devices, run_folder
from legacy_eager.machine import describe_machine
from legacy_eager.atomic import write_json
from legacy_eager.config import recipe_record
from legacy_eager.errors import UsageError

if TYPE_CHECKING:  # TensorFlow is imported only once the flags and data are checked
    from legacy_eager.trainer import Trainer


class Finished(NamedTuple):
    """What run() hands back: summary.json's content, and the Trainer that ran (its model,
    optimizer and step as the run left them)."""
    summary: dict
    trainer: "Trainer"


def settle_config(config):
    """The run's Config (a resumed run's own), checked for combinations that cannot run."""
    if config.resume is not None:
        info = run_folder.read_run_info(config.resume, flag="--resume")
        config = run_folder.run_config(info, out=config.resume, resume=config.resume,
                                       allow_cpu=config.allow_cpu)
    task = devices.cluster_task()
    if config.precision == "mixed_float16" and (config.devices > 1 or task):
        raise UsageError("--precision mixed_float16 runs on one device only (its loss "
                         "scaling is not synchronised across replicas); use mixed_bfloat16")
    if config.cutout and config.pipeline == "seed":
        raise UsageError(f"--cutout {config.cutout}: the seed's pipeline has no cutout; use "
                         "--pipeline fast (the default)")
    if config.network == "airbench94" and task:
        raise UsageError("TF_CONFIG: --recipe airbench94 trains on one device; unset TF_CONFIG")
    if task and config.devices > 1:
        raise UsageError(f"--devices {config.devices} with TF_CONFIG: a cluster trains one "
                         "replica per worker; drop --devices (or TF_CONFIG for one machine)")
    return config, task


def choose_out_dir(config, task):
    """The run folder (checked before any work), or a scratch folder for a non-chief worker."""
    out = config.out if config.resume else run_folder.check_out_dir(config.out)
    if task is not None and not task.chief:  # other workers' (identical) checkpoints
        out = tempfile.mkdtemp(prefix=f"davidnet-{task.kind}{task.index}-")
    return out


def start_tensorflow(config, task, log, warn):
    """Import TensorFlow, choose the strategy, and say which devices train; stop (exit 2)
    when nvidia-smi sees a GPU that TensorFlow cannot use, unless the CPU is allowed."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import tensorflow as tf

    strategy = devices.make_strategy(config, tf, task)
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


def describe_run(*, config, tf, source, len_train, len_test, train_mean, train_std, trainer,
                 device_info):
    network = {"name": config.network}
    if config.network == "airbench94":
        from airbench_tf import hyp

        network.update(total_steps=trainer.total_steps, steps_per_epoch=trainer.steps_per_epoch,
                       tta_level=hyp.TTA_LEVEL, whitening_s=trainer.whitening_s,
                       step_sizes=trainer.sizes._asdict())
    return {
        "network": network,
        "config": config.to_dict(),
        "recipe": recipe_record(config),
        "data": {"source": source, "path": cifar.data_path(config.data),
                 "len_train": len_train, "len_test": len_test,
                 "classes": list(cifar.CLASSES),
                 # uint8 RGB pixels are fed as (x - mean) / std, per channel.
                 "normalization": {"mean": train_mean.tolist(), "std": train_std.tolist()}},
        "batches_per_epoch": trainer.batches_per_epoch,
        "versions": {"python": platform.python_version(), "tensorflow": tf.__version__,
                     "numpy": np.__version__},
        "devices": device_info,
        "machine": describe_machine(),  # CPU model and the flags that matter (AVX-512, AMX)
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
    chief = task is None or task.chief
    summary = dict(run_info, final=final, total_time_s=final["elapsed_s"], out=out,
                   weights_sha256=weights_fingerprint(trainer), chief=chief)
    write_json(os.path.join(out, "summary.json"), summary)
    tta = f" ({tta_name(config.network)} {final['val_acc_tta']:.4f})" if "val_acc_tta" in final else ""
    train_s = sum(r["train_time_s"] for r in run_folder.read_metrics(out))
    log(f"final val_acc {final['val_acc']:.4f}{tta} after {config.epochs} epochs "
        f"(training {train_s / 60:.1f} min, evaluation apart; {summary['total_time_s']:.0f} s "
        f"in all); weights sha256 {summary['weights_sha256'][:16]}; "
        + (f"run folder {out}" if chief else f"worker {task.index} (the chief keeps the run)"))
    if not chief:
        shutil.rmtree(out, ignore_errors=True)
    return summary


def tta_name(network):
    """How a network's TTA is named in the run's lines."""
    return "TTA level 2" if network == "airbench94" else "flip TTA"


def make_trainer(config, strategy, x_train, train_mean, train_std):
    """The network's Trainer (airbench94's whitening is set from x_train)."""
    if config.network == "airbench94":
        from airbench_tf.trainer import Trainer, whitening_images

        return Trainer(config, len(x_train),
                       whiten_images=whitening_images(x_train, train_mean, train_std, config.seed))
    from legacy_eager.trainer import Trainer

    return Trainer(config, len(x_train), strategy=strategy)


def make_sets(config, trainer, x_train, y_train, x_test, y_test, train_mean, train_std):
    """(training batches, test batches) as the network's recipe draws them."""
    if config.network == "airbench94":
        from airbench_tf.trainer import make_sets as airbench_sets

        return airbench_sets(config, x_train, y_train, x_test, y_test, train_mean, train_std,
                             trainer.total_steps)
    from legacy_eager import input_pipeline

    make_train_set, make_test_set = input_pipeline.PIPELINES[config.pipeline]
    return (make_train_set(x_train, y_train, train_mean, train_std, config.batch_size,
                           seed=config.seed, cutout=config.cutout),
            make_test_set(x_test, y_test, train_mean, train_std, config.batch_size))


def describe_training(config, len_train, len_test, source, out):
    if config.network == "airbench94":
        return (f"airbench94, {len_train} train / {len_test} test images from {source}, "
                f"mode {config.mode}, {config.precision}, {config.epochs} epochs of "
                f"{config.batch_size}-image batches; writing {out}")
    return (f"DavidNet width {config.width}, {len_train} train / {len_test} test images from "
            f"{source}, mode {config.mode}, {config.pipeline} pipeline, {config.precision}, "
            f"{config.epochs} epochs; writing {out}")


def run(config, log=print, warn=None, batches=None):
    """The run `config` asks for, as Finished (its summary and trainer). `batches`: the
    epochs' batch source for loop.fit (default input_pipeline.epoch_batches)."""
    warn = warn or (lambda message: print(message, file=sys.stderr))
    config, task = settle_config(config)
    out = choose_out_dir(config, task)
    source, (x_train, y_train), (x_test, y_test) = cifar.load_data(config)
    if config.network == "airbench94" and len(x_train) < config.batch_size:
        raise UsageError(f"--batch-size {config.batch_size}: more than the {len(x_train)} "
                         "training images (airbench94 drops the last partial batch)")
    tf, strategy, device_info = start_tensorflow(config, task, log, warn)
    run_folder.make_out_dir(out)

    from legacy_eager import input_pipeline
    from legacy_eager.loop import fit
    from legacy_eager.plots import CurvesPlot
    from legacy_eager.signals import signals_recorded
    from legacy_eager.tensorboard import TensorBoardLog

    len_train, len_test = len(x_train), len(x_test)
    train_mean, train_std = input_pipeline.channel_stats(x_train)
    trainer = make_trainer(config, strategy, x_train, train_mean, train_std)
    run_info = describe_run(config=config, tf=tf, source=source, len_train=len_train,
                            len_test=len_test, train_mean=train_mean, train_std=train_std,
                            trainer=trainer, device_info=device_info)
    restore_or_record(config, trainer, out, run_info, log, warn)
    log(describe_training(config, len_train, len_test, source, out))

    train_set, test_set = make_sets(config, trainer, x_train, y_train, x_test, y_test,
                                    train_mean, train_std)
    del x_train, x_test  # each pipeline holds its own copy; these would double the memory
    observers = [TensorBoardLog(out, trainer.lr_at_step),
                 CurvesPlot(out, trainer.lr_unit)]
    with signals_recorded() as stop:
        final = fit(trainer, train_set, test_set, len_train, len_test, out, log=log, stop=stop,
                    observers=observers, batches=batches or input_pipeline.epoch_batches)
    return Finished(finish(config, trainer, final, out, run_info, task, log), trainer)
