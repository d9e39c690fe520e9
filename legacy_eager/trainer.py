"""The seed's sections 8 and 9 (model, global step, lr_func, optimizer, training loop)
in compat.v1 terms. `--mode eager` runs the step exactly as the seed does;
`--mode function` runs the same step inside `tf.function`.
"""
import functools
import time

import tensorflow as tf
from tqdm import tqdm

from legacy_eager import report
from legacy_eager.model import DavidNet
from legacy_eager.optim import (WEIGHT_DECAY_LOOPS, make_global_step, make_lr_func,
                                make_optimizer)
from legacy_eager.schedule import lr_schedule

_IMAGES = tf.TensorSpec([None, 32, 32, 3], tf.float32)
_LABELS = tf.TensorSpec([None], tf.int64)


class Trainer:
    def __init__(self, config, len_train, model=None):
        self.config = config
        self.model = model if model is not None else DavidNet(c=config.width, dropout=config.dropout)
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
        if config.mode == "eager":
            self.train_step, self.eval_step = self._train_step, self._eval_step
        else:
            # One trace for full and partial batches alike.
            self.train_step = tf.function(self._train_step, input_signature=[_IMAGES, _LABELS])
            self.eval_step = tf.function(self._eval_step, input_signature=[_IMAGES, _LABELS])
        self.checkpoint = tf.train.Checkpoint(model=self.model, optimizer=self.opt,
                                              global_step=self.global_step)

    def _train_step(self, x, y):
        with tf.GradientTape() as tape:
            loss, correct = self.model(x, y, training=True)

        var = self.model.trainable_variables
        grads = tape.gradient(loss, var)
        grads = self.weight_decay_loop(grads, var)
        self.opt.apply_gradients(zip(grads, var), global_step=self.global_step)
        return loss, correct

    def _eval_step(self, x, y):
        return self.model(x, y, training=False)

    def train_epoch(self, train_set, desc=None):
        train_loss = train_acc = 0.0
        for (x, y) in tqdm(train_set, total=self.steps_per_epoch, desc=desc, leave=False,
                           unit="batch"):
            loss, correct = self.train_step(x, y)
            train_loss += loss.numpy()
            train_acc += correct.numpy()
        return train_loss, train_acc

    def evaluate(self, test_set):
        test_loss = test_acc = 0.0
        for (x, y) in test_set:
            loss, correct = self.eval_step(x, y)
            test_loss += loss.numpy()
            test_acc += correct.numpy()
        return test_loss, test_acc


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
            "train_loss": float(train_loss / len_train), "train_acc": float(train_acc / len_train),
            "val_loss": float(test_loss / len_test), "val_acc": float(test_acc / len_test),
            "train_time_s": train_time, "eval_time_s": eval_time,
            "epoch_time_s": train_time + eval_time, "elapsed_s": time.time() - t,
            "images_per_s": len_train / train_time,
            "global_step": int(trainer.global_step.numpy()),
        }
        manager.save(checkpoint_number=epoch + 1)
        metrics.write(record)
        log(report.format_row(record))
    return record
