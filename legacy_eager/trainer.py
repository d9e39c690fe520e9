"""The seed's sections 8 and 9 (model, global step, lr_func, optimizer, training loop)
in compat.v1 terms. `--mode eager` runs the step exactly as the seed does;
`--mode function` runs the same step inside `tf.function`, `--mode xla` compiles it with
XLA. Compiled modes keep the loss and accuracy sums on the device and read them once an
epoch; eager mode reads them every step, as the seed does.

Mixed float16 scales the loss: the compat.v1 optimizer has no loss scaling of its own.
The scale starts at 2**15 / batch size (Keras' 2**15 assumes a mean loss; the seed's is
summed over the batch, so its gradients are batch-size times larger), halves (and the
step is skipped: no update, no global-step increment) whenever a gradient is not finite,
and doubles after 2000 finite steps in a row, as Keras' LossScaleOptimizer does.
"""
import functools
import math
import time

import tensorflow as tf
from tqdm import tqdm

from legacy_eager import report
from legacy_eager.errors import UserFacingError
from legacy_eager.model import DavidNet, build
from legacy_eager.optim import (WEIGHT_DECAY_LOOPS, make_global_step, make_lr_func,
                                make_optimizer)
from legacy_eager.schedule import lr_schedule

_IMAGES = tf.TensorSpec([None, 32, 32, 3], tf.float32)
_LABELS = tf.TensorSpec([None], tf.int64)
POLICIES = {"fp32": None, "mixed_float16": "mixed_float16", "mixed_bfloat16": "mixed_bfloat16"}
INITIAL_LOSS_SCALE = 2.0 ** 15
LOSS_SCALE_GROWTH_STEPS = 2000


class NonFiniteLoss(UserFacingError):
    exit_code = 3


class Interrupted(UserFacingError):
    """SIGINT (exit 130) or SIGTERM (exit 143) arrived; a checkpoint was saved first."""

    def __init__(self, message, signum):
        super().__init__(message)
        self.exit_code = 128 + signum


class Progress(tf.Module):
    """Where the run stands, saved in every checkpoint with the weights it belongs to:
    completed epochs, batches done in the current epoch, and that epoch's partial sums."""

    def __init__(self):
        super().__init__()
        self.epoch = tf.Variable(0, dtype=tf.int64, trainable=False)
        self.batch = tf.Variable(0, dtype=tf.int64, trainable=False)
        self.loss_sum = tf.Variable(0.0, dtype=tf.float64, trainable=False)
        self.correct_sum = tf.Variable(0.0, dtype=tf.float64, trainable=False)
        self.train_time = tf.Variable(0.0, dtype=tf.float64, trainable=False)
        self.elapsed = tf.Variable(0.0, dtype=tf.float64, trainable=False)

    def set(self, **values):
        for name, value in values.items():
            getattr(self, name).assign(value)


class LossScale:
    """Dynamic loss scaling state (variables, so it is checkpointed and usable in graphs)."""

    def __init__(self, batch_size):
        initial = max(2.0 ** int(math.log2(INITIAL_LOSS_SCALE / batch_size)), 1.0)
        self.scale = tf.Variable(initial, trainable=False, dtype=tf.float32)
        self.good_steps = tf.Variable(0, trainable=False, dtype=tf.int64)

    def update(self, finite):
        if finite:
            self.good_steps.assign_add(1)
            if self.good_steps >= LOSS_SCALE_GROWTH_STEPS:
                self.scale.assign(self.scale * 2)
                self.good_steps.assign(0)
        else:
            self.scale.assign(tf.maximum(self.scale / 2, 1.0))
            self.good_steps.assign(0)


class Trainer:
    def __init__(self, config, len_train, model=None, strategy=None):
        self.config = config
        # A tf.distribute strategy spreads each global batch over its replicas; without
        # one, TF's default strategy is a no-op and the step is the seed's, unchanged.
        self.strategy = strategy or tf.distribute.get_strategy()
        self.replicas = self.strategy.num_replicas_in_sync
        with self.strategy.scope():
            self._build(config, len_train, model)

    def _build(self, config, len_train, model):
        if model is None:
            model = DavidNet(c=config.width, dropout=config.dropout,
                             dtype=POLICIES[config.precision], seed=config.seed)
        self.model = build(model)
        # The seed's +1: one more than the full batches, which counts the last partial
        # batch, and overcounts by one when len_train is a multiple of the batch size.
        self.batches_per_epoch = len_train // config.batch_size + 1
        self.steps_per_epoch = -(-len_train // config.batch_size)  # what the data yields
        self.global_step = make_global_step()
        lr_func = make_lr_func(self.global_step, self.batches_per_epoch, config.epochs,
                               config.lr, config.batch_size, config.mode)
        self.opt = make_optimizer(lr_func, config.momentum)
        # Slots now rather than at the first step, so that a checkpoint restores into them
        # at once and a damaged one is noticed at restore time. (apply_gradients creates
        # them the same way, under init_scope.)
        with tf.init_scope():
            self.opt._create_slots(self.model.trainable_variables)
        # Global step of the first non-finite loss (-1: none yet), set on the device so
        # that the loop need not read the loss every step.
        self.first_nonfinite_step = tf.Variable(
            -1, dtype=tf.int64, trainable=False,
            aggregation=tf.VariableAggregation.ONLY_FIRST_REPLICA)
        self.progress = Progress()
        # Replicas' gradients are summed, so each adds 1/replicas of the decay.
        self.weight_decay_loop = functools.partial(
            WEIGHT_DECAY_LOOPS[config.wd_loop], weight_decay=config.weight_decay,
            batch_size=config.batch_size / self.replicas)
        self.loss_scale = LossScale(config.batch_size) if config.precision == "mixed_float16" else None
        if self.replicas > 1:
            compile_ = (lambda f: f) if config.mode == "eager" else functools.partial(
                tf.function, jit_compile=config.mode == "xla")
            self.train_step = self._distributed(compile_(self._replicated(self._train_step)))
            self.eval_step = self._distributed(compile_(self._replicated(self._eval_step)))
        elif config.mode == "eager":
            self.train_step, self.eval_step = self._train_step, self._eval_step
        else:
            # One trace for full and partial batches alike (XLA compiles each shape once).
            compile_ = functools.partial(tf.function, input_signature=[_IMAGES, _LABELS],
                                         jit_compile=config.mode == "xla")
            self.train_step = compile_(self._train_step)
            self.eval_step = compile_(self._eval_step)
        self.checkpoint = tf.train.Checkpoint(model=self.model, optimizer=self.opt,
                                              global_step=self.global_step, progress=self.progress)
        if self.loss_scale is not None:
            self.checkpoint.loss_scale = self.loss_scale.scale

    def _train_step(self, x, y):
        if self.loss_scale is not None:
            return self._scaled_train_step(x, y)
        with tf.GradientTape() as tape:
            loss, correct = self.model(x, y, training=True)
        self._note_nonfinite(loss)

        var = self.model.trainable_variables
        grads = tape.gradient(loss, var)
        grads = self.weight_decay_loop(grads, var)
        self.opt.apply_gradients(zip(grads, var), global_step=self.global_step)
        return loss, correct

    def _note_nonfinite(self, loss):
        first = self.first_nonfinite_step
        first.assign(tf.where((first < 0) & ~tf.math.is_finite(loss), self.global_step, first))

    def check_finite(self):
        """Raise NonFiniteLoss naming the first step whose loss was not finite, if any."""
        step = int(self.first_nonfinite_step.numpy())
        if step < 0:
            return
        lr = lr_schedule(step / self.batches_per_epoch, self.config.epochs, self.config.lr)
        raise NonFiniteLoss(
            f"loss is not finite at global step {step} (epoch {step // self.steps_per_epoch + 1}, "
            f"learning rate {lr:.6g} per batch, {lr / self.config.batch_size:.6g} per example); "
            "stopped, and the last good checkpoint is kept")

    def _replicated(self, step):
        """step on every replica's shard; the sums over replicas come back."""
        def run(shards):
            loss, correct = self.strategy.run(lambda xy: step(*xy), args=(shards,))
            total = functools.partial(self.strategy.reduce, tf.distribute.ReduceOp.SUM, axis=None)
            return total(loss), total(correct)
        return run

    def _distributed(self, replicated_step):
        """Cut a global batch into one contiguous shard per replica (sizes differ by at most
        one image, so the last partial batch is split too) and run the step on them."""
        n = self.replicas

        def step(x, y):
            def shard(ctx):
                i, size = ctx.replica_id_in_sync_group, tf.shape(x)[0]
                lo, hi = size * i // n, size * (i + 1) // n
                return x[lo:hi], y[lo:hi]
            return replicated_step(self.strategy.experimental_distribute_values_from_function(shard))
        return step

    def _scaled_train_step(self, x, y):
        """The same step for float16: scaled loss, unscaled gradients, skip on overflow."""
        with tf.GradientTape() as tape:
            loss, correct = self.model(x, y, training=True)
            scaled_loss = loss * self.loss_scale.scale
        self._note_nonfinite(loss)

        var = self.model.trainable_variables
        grads = [g / self.loss_scale.scale for g in tape.gradient(scaled_loss, var)]
        finite = tf.reduce_all([tf.reduce_all(tf.math.is_finite(g)) for g in grads])
        if finite:
            grads = self.weight_decay_loop(grads, var)
            self.opt.apply_gradients(zip(grads, var), global_step=self.global_step)
        self.loss_scale.update(finite)
        return loss, correct

    def _eval_step(self, x, y):
        return self.model(x, y, training=False)

    def train_epoch(self, batches, desc=None, total=None, should_stop=None):
        """Summed loss and number correct over `batches`, and how many batches ran;
        stops early, after a whole step, once should_stop() is true."""
        batches = tqdm(batches, total=self.steps_per_epoch if total is None else total, desc=desc,
                       leave=False,
                       unit="batch")
        return self._sum(self.train_step, batches, should_stop)

    def evaluate(self, test_set):
        self.sync_replica_statistics()
        return self._sum(self.eval_step, test_set)[:2]

    def sync_replica_statistics(self):
        """Give every replica the mean of the replicas' BatchNorm moving statistics.

        Keras keeps them per replica (ON_READ variables); checkpoints and exports store their
        mean. Without this, evaluation on several replicas would use each replica's own
        statistics and report a val_acc the exported model does not have."""
        if self.replicas == 1:
            return
        with self.strategy.scope():
            for v in self.model.non_trainable_variables:
                if v.synchronization == tf.VariableSynchronization.ON_READ:
                    v.assign(v.read_value())

    def _sum(self, step, batches, should_stop=None):
        eager = self.config.mode == "eager"  # the seed: a host read after every step
        total_loss = total_correct = 0.0 if eager else tf.constant(0.0, tf.float64)
        n = 0
        for (x, y) in batches:  # compiled: sums stay on the device, no wait for the host
            loss, correct = step(x, y)
            if eager:
                total_loss += loss.numpy()
                total_correct += correct.numpy()
            else:
                total_loss += tf.cast(loss, tf.float64)
                total_correct += tf.cast(correct, tf.float64)
            n += 1
            if should_stop is not None and should_stop():
                break
        if not eager:
            total_loss, total_correct = total_loss.numpy(), total_correct.numpy()
        return float(total_loss), float(total_correct), n


def fit(trainer, train_set, test_set, len_train, len_test, out_dir, log=print, stop=None):
    """The seed's epoch loop, resumable: a JSON line and a checkpoint per epoch, and a
    checkpoint mid-epoch when stop() names a signal. Starts where trainer.progress says
    (zero for a new run, the restored state for --resume). Returns the last epoch's record."""
    from legacy_eager.pipeline import epoch_batches

    config, progress = trainer.config, trainer.progress
    metrics = report.JsonLines(f"{out_dir}/metrics.jsonl")
    manager = checkpoint_manager(trainer, out_dir)
    should_stop = (lambda: stop() is not None) if stop else None
    log(report.header_row())
    record = None
    t_start, elapsed_before = time.time(), float(progress.elapsed.numpy())
    for epoch in range(int(progress.epoch.numpy()), config.epochs):
        start = int(progress.batch.numpy())
        t_epoch = time.time()
        loss_sum, correct_sum, ran = trainer.train_epoch(
            epoch_batches(train_set, epoch, start), desc=f"epoch {epoch + 1}",
            total=trainer.steps_per_epoch - start, should_stop=should_stop)
        trainer.check_finite()
        loss_sum += float(progress.loss_sum.numpy())
        correct_sum += float(progress.correct_sum.numpy())
        train_time = float(progress.train_time.numpy()) + time.time() - t_epoch
        if start + ran < trainer.steps_per_epoch:  # a signal stopped the epoch
            progress.set(epoch=epoch, batch=start + ran, loss_sum=loss_sum,
                         correct_sum=correct_sum, train_time=train_time,
                         elapsed=elapsed_before + time.time() - t_start)
            manager.save(checkpoint_number=int(trainer.global_step.numpy()))
            signum = stop()
            raise Interrupted(
                f"stopped by {signal_name(signum)} in epoch {epoch + 1} after batch "
                f"{start + ran} of {trainer.steps_per_epoch} (global step "
                f"{int(trainer.global_step.numpy())}); checkpoint saved; resume with: "
                f"./run.sh --resume {out_dir}", signum)
        t_eval = time.time()
        test_loss, test_acc = trainer.evaluate(test_set)
        eval_time = time.time() - t_eval
        elapsed = elapsed_before + time.time() - t_start
        record = {
            "epoch": epoch + 1,
            # The seed prints lr_schedule(epoch+1): the schedule at the epoch's end, per batch.
            "lr": float(lr_schedule(epoch + 1, config.epochs, config.lr)),
            "train_loss": loss_sum / len_train, "train_acc": correct_sum / len_train,
            "val_loss": test_loss / len_test, "val_acc": test_acc / len_test,
            "train_time_s": train_time, "eval_time_s": eval_time,
            "epoch_time_s": train_time + eval_time, "elapsed_s": elapsed,
            "images_per_s": len_train / train_time,
            "global_step": int(trainer.global_step.numpy()),
        }
        # The line first, then the checkpoint that counts it: a crash in between leaves
        # a line that --resume drops (the checkpoint says the epoch is not done).
        metrics.write(record)
        progress.set(epoch=epoch + 1, batch=0, loss_sum=0.0, correct_sum=0.0, train_time=0.0,
                     elapsed=elapsed)
        manager.save(checkpoint_number=int(trainer.global_step.numpy()))
        log(report.format_row(record))
        if stop is not None and stop() is not None:  # the signal came during evaluation
            raise Interrupted(f"stopped by {signal_name(stop())} after epoch {epoch + 1}; "
                              f"checkpoint saved; resume with: ./run.sh --resume {out_dir}", stop())
    return record


def weights_fingerprint(trainer):
    """sha256 of every model variable and momentum slot, in order: equal fingerprints mean
    bit-identical trained state (used to compare workers and repeated runs)."""
    import hashlib

    h = hashlib.sha256()
    for v in trainer.model.weights:
        h.update(v.numpy().tobytes())
    for v in trainer.model.trainable_variables:
        h.update(trainer.opt.get_slot(v, "momentum").numpy().tobytes())
    return h.hexdigest()


def signal_name(signum):
    import signal

    return signal.Signals(signum).name


def checkpoint_manager(trainer, out_dir):
    return tf.train.CheckpointManager(trainer.checkpoint, f"{out_dir}/checkpoints",
                                      max_to_keep=3, checkpoint_name="ckpt")


def restore_latest(trainer, out_dir, warn):
    """Restore the newest checkpoint that reads back whole; a damaged one is reported and
    skipped. Returns its path, or None when there is none."""
    manager = checkpoint_manager(trainer, out_dir)
    for path in reversed(manager.checkpoints):
        try:
            trainer.checkpoint.restore(path).assert_existing_objects_matched()
            return path
        except Exception as e:  # TF's reader raises OpError, IndexError, ValueError...
            warn(f"warning: checkpoint {path} is damaged ({type(e).__name__}); "
                 "trying the one before")
    return None
