"""The seed's training step and the evaluation step, and how each is run: eagerly as the
seed does (`--mode eager`), inside `tf.function` (`function`), compiled by XLA (`xla`),
or on every replica of a tf.distribute strategy (`--devices N`, TF_CONFIG clusters).
"""
import functools

import tensorflow as tf

from legacy_eager.model import flip_tta_logits, loss_and_correct

_IMAGES = tf.TensorSpec([None, 32, 32, 3], tf.float32)
_LABELS = tf.TensorSpec([None], tf.int64)


def train_step(trainer):
    """The seed's loop body. With a loss scale (float16) the loss is scaled before the
    gradient and the update is skipped when a gradient overflows."""
    model, opt, global_step = trainer.model, trainer.opt, trainer.global_step
    weight_decay_loop, loss_scale = trainer.weight_decay_loop, trainer.loss_scale

    def apply(grads, var):
        grads = weight_decay_loop(grads, var)
        opt.apply_gradients(zip(grads, var), global_step=global_step)

    def step(x, y):
        with tf.GradientTape() as tape:
            loss, correct = model(x, y, training=True)
            objective = loss if loss_scale is None else loss_scale.scale_loss(loss)
        trainer.note_nonfinite(loss)

        var = model.trainable_variables
        grads = tape.gradient(objective, var)
        if loss_scale is None:
            apply(grads, var)
        else:
            loss_scale.apply_unscaled(grads, var, apply)
        return loss, correct
    return step


def eval_step(trainer):
    """Loss and number correct, plain and with flip test-time augmentation."""
    model = trainer.model

    def step(x, y):
        h = model.logits(x, training=False)
        return loss_and_correct(h, y) + loss_and_correct(flip_tta_logits(model, x, h), y)
    return step


def compiled(step, mode, strategy):
    """`step` as `mode` runs it, over the strategy's replicas when there are several."""
    if strategy.num_replicas_in_sync > 1:
        compile_ = (lambda f: f) if mode == "eager" else functools.partial(
            tf.function, jit_compile=mode == "xla")
        return _distributed(compile_(_replicated(step, strategy)), strategy)
    if mode == "eager":
        return step
    # One trace for full and partial batches alike (XLA compiles each shape once).
    return tf.function(step, input_signature=[_IMAGES, _LABELS], jit_compile=mode == "xla")


def _replicated(step, strategy):
    """step on every replica's shard; the sums over replicas come back."""
    def run(shards):
        outputs = strategy.run(lambda xy: step(*xy), args=(shards,))
        total = functools.partial(strategy.reduce, tf.distribute.ReduceOp.SUM, axis=None)
        return tuple(total(o) for o in outputs)
    return run


def _distributed(replicated_step, strategy):
    """Cut a global batch into one contiguous shard per replica (sizes differ by at most
    one image, so the last partial batch is split too) and run the step on them."""
    n = strategy.num_replicas_in_sync

    def step(x, y):
        def shard(ctx):
            i, size = ctx.replica_id_in_sync_group, tf.shape(x)[0]
            lo, hi = size * i // n, size * (i + 1) // n
            return x[lo:hi], y[lo:hi]
        return replicated_step(strategy.experimental_distribute_values_from_function(shard))
    return step
