"""Dynamic loss scaling for `--precision mixed_float16`; the compat.v1 optimizer has none.

The scale starts at 2**15 / batch size (Keras' 2**15 assumes a mean loss; the seed's is
summed over the batch, so its gradients are batch-size times larger), halves (and the
step is skipped: no update, no global-step increment) whenever a gradient is not finite,
and doubles after 2000 finite steps in a row, as Keras' LossScaleOptimizer does. Both the
scale and the count of finite steps are variables, so a checkpoint holds them and a
resumed run scales exactly as an uninterrupted one.
"""
import math

import tensorflow as tf

INITIAL_LOSS_SCALE = 2.0 ** 15
LOSS_SCALE_GROWTH_STEPS = 2000


class LossScale(tf.Module):
    def __init__(self, batch_size):
        super().__init__()
        initial = max(2.0 ** int(math.log2(INITIAL_LOSS_SCALE / batch_size)), 1.0)
        self.scale = tf.Variable(initial, trainable=False, dtype=tf.float32)
        self.good_steps = tf.Variable(0, trainable=False, dtype=tf.int64)

    def scale_loss(self, loss):
        return loss * self.scale

    def apply_unscaled(self, scaled_grads, var, apply):
        """apply(grads, var) with the scale taken out, unless a gradient overflowed."""
        grads = [g / self.scale for g in scaled_grads]
        finite = tf.reduce_all([tf.reduce_all(tf.math.is_finite(g)) for g in grads])
        if finite:
            apply(grads, var)
        self.update(finite)

    def update(self, finite):
        if finite:
            self.good_steps.assign_add(1)
            if self.good_steps >= LOSS_SCALE_GROWTH_STEPS:
                self.scale.assign(self.scale * 2)
                self.good_steps.assign(0)
        else:
            self.scale.assign(tf.maximum(self.scale / 2, 1.0))
            self.good_steps.assign(0)
