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
from legacy_eager.model import DavidNet, build
from legacy_eager.optim import (WEIGHT_DECAY_LOOPS, make_global_step, make_lr_func,
                                make_optimizer)
from legacy_eager.schedule import lr_schedule

_IMAGES = tf.TensorSpec([None, 32, 32, 3], tf.float32)
_LABELS = tf.TensorSpec([None], tf.int64)
POLICIES = {"fp32": None, "mixed_float16": "mixed_float16", "mixed_bfloat16": "mixed_bfloat16"}
INITIAL_LOSS_SCALE = 2.0 ** 15
LOSS_SCALE_GROWTH_STEPS = 2000


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
    def __init__(self, config, len_train, model=None):
        self.config = config
        if model is None:
            model = DavidNet(c=config.width, dropout=config.dropout,
                             dtype=POLICIES[config.precision])
        self.model = build(model)
        # The seed's +1: one more than the full batches, which counts the last partial
        # batch, and overcounts by one when len_train is a multiple of the batch size.
        self.batches_per_epoch = len_train // config.batch_size + 1
        self.steps_per_epoch = -(-len_train // config.batch_size)  # what the data yields
        self.global_step = make_global_step()
        lr_func = make_lr_func(self.global_step, self.batches_per_epoch, config.epochs,
                               config.lr, config.batch_size, config.mode)
        self.opt = make_optimizer(lr_func, config.momentum)
        self.weight_decay_loop = functools.partial(
            WEIGHT_DECAY_LOOPS[config.wd_loop], weight_decay=config.weight_decay,
            batch_size=config.batch_size)
        self.loss_scale = LossScale(config.batch_size) if config.precision == "mixed_float16" else None
        if config.mode == "eager":
            self.train_step, self.eval_step = self._train_step, self._eval_step
        else:
            # One trace for full and partial batches alike (XLA compiles each shape once).
            compile_ = functools.partial(tf.function, input_signature=[_IMAGES, _LABELS],
                                         jit_compile=config.mode == "xla")
            self.train_step = compile_(self._train_step)
            self.eval_step = compile_(self._eval_step)
        self.checkpoint = tf.train.Checkpoint(model=self.model, optimizer=self.opt,
                                              global_step=self.global_step)
        if self.loss_scale is not None:
            self.checkpoint.loss_scale = self.loss_scale.scale

    def _train_step(self, x, y):
        if self.loss_scale is not None:
            return self._scaled_train_step(x, y)
        with tf.GradientTape() as tape:
            loss, correct = self.model(x, y, training=True)

        var = self.model.trainable_variables
        grads = tape.gradient(loss, var)
        grads = self.weight_decay_loop(grads, var)
        self.opt.apply_gradients(zip(grads, var), global_step=self.global_step)
        return loss, correct

    def _scaled_train_step(self, x, y):
        """The same step for float16: scaled loss, unscaled gradients, skip on overflow."""
        with tf.GradientTape() as tape:
            loss, correct = self.model(x, y, training=True)
            scaled_loss = loss * self.loss_scale.scale

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

    def train_epoch(self, train_set, desc=None):
        """Summed loss and number correct over one pass of train_set."""
        batches = tqdm(train_set, total=self.steps_per_epoch, desc=desc, leave=False, unit="batch")
        return self._sum(self.train_step, batches)

    def evaluate(self, test_set):
        return self._sum(self.eval_step, test_set)

    def _sum(self, step, batches):
        if self.config.mode == "eager":  # the seed: a host read after every step
            total_loss = total_correct = 0.0
            for (x, y) in batches:
                loss, correct = step(x, y)
                total_loss += loss.numpy()
                total_correct += correct.numpy()
            return float(total_loss), float(total_correct)
        total_loss = total_correct = tf.constant(0.0, tf.float64)
        for (x, y) in batches:  # device-side sums: the step queue never waits for the host
            loss, correct = step(x, y)
            total_loss += tf.cast(loss, tf.float64)
            total_correct += tf.cast(correct, tf.float64)
        return float(total_loss.numpy()), float(total_correct.numpy())


def fit(trainer, train_set, test_set, len_train, len_test, out_dir, log=print):
    """The seed's epoch loop, plus a JSON line and a checkpoint per epoch.

    Returns the last epoch's record."""
    config = trainer.config
    metrics = report.JsonLines(f"{out_dir}/metrics.jsonl")
    manager = tf.train.CheckpointManager(trainer.checkpoint, f"{out_dir}/checkpoints",
                                         max_to_keep=3, checkpoint_name="ckpt")
    log(report.header_row())
    record = None
    t = time.time()
    for epoch in range(config.epochs):
        t_epoch = time.time()
        train_loss, train_acc = trainer.train_epoch(train_set, desc=f"epoch {epoch + 1}")
        train_time = time.time() - t_epoch
        t_eval = time.time()
        test_loss, test_acc = trainer.evaluate(test_set)
        eval_time = time.time() - t_eval
        record = {
            "epoch": epoch + 1,
            # The seed prints lr_schedule(epoch+1): the schedule at the epoch's end, per batch.
            "lr": float(lr_schedule(epoch + 1, config.epochs, config.lr)),
            "train_loss": train_loss / len_train, "train_acc": train_acc / len_train,
            "val_loss": test_loss / len_test, "val_acc": test_acc / len_test,
            "train_time_s": train_time, "eval_time_s": eval_time,
            "epoch_time_s": train_time + eval_time, "elapsed_s": time.time() - t,
            "images_per_s": len_train / train_time,
            "global_step": int(trainer.global_step.numpy()),
        }
        manager.save(checkpoint_number=epoch + 1)
        metrics.write(record)
        log(report.format_row(record))
    return record
