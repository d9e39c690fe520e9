"""DavidNet as in the seed: same classes, names and order.

Deviations from the seed, each needed on TF 2:
- `tf_keras` (Keras 2) replaces `tf.keras`: Keras 3 variables break the compat.v1
  MomentumOptimizer ("'Variable' object has no attribute '_unique_id'").
- `training=` is passed explicitly: `tf.keras.backend.set_learning_phase` is gone.
- `dropout` is a constructor argument (default the seed's 0.05) so tests can turn it
  off and compare eager and compiled steps exactly.
- Dropout is `StatelessDropout`: the same inverted dropout as Keras', but its mask is a
  function of (the layer's stream key, call count) and the count is a layer variable, so
  a checkpoint captures the random stream and a resumed run draws exactly the masks it
  would have. `seed` and `layer` pick the key (legacy_eager.streams).
- `logits()` is split out of `call()` so export can serve the network without labels, and
  the loss lines move into `loss_and_correct()` so evaluation can score the flip-TTA
  logits (`flip_tta_logits`) with the same formula.
- `dtype` takes a Keras mixed-precision policy name ("mixed_float16", "mixed_bfloat16"):
  layers compute in half precision, variables stay float32, logits come back float32.
  A plain "float64" computes and returns float64 throughout (a test compares the XLA
  and function steps there: in float32 their different rounding compounds).
"""
import math

import numpy as np
import tensorflow as tf
import tf_keras

from legacy_eager.streams import stream_key


def init_pytorch(shape, dtype=tf.float32, partition_info=None):
    fan = np.prod(shape[:-1])
    bound = 1 / math.sqrt(fan)
    return tf.random.uniform(shape, minval=-bound, maxval=bound, dtype=dtype)


class StatelessDropout(tf_keras.layers.Layer):
    """Keras' Dropout(rate) (zero with probability rate, scale the rest by 1/(1-rate)),
    with the mask drawn from (key, call count) and the count kept as a variable. `key`
    comes from streams.stream_key, so no other random stream of the run shares it."""

    def __init__(self, rate, key=0, **kwargs):
        super().__init__(**kwargs)
        self.rate, self.key = rate, key

    def build(self, input_shape):
        self.calls = self.add_weight(name="calls", shape=[], dtype=tf.int64, initializer="zeros",
                                     trainable=False,
                                     aggregation=tf.VariableAggregation.ONLY_FIRST_REPLICA)

    def call(self, x, training=False):
        if not training or self.rate == 0:
            return x
        count = self.calls.assign_add(1)
        replica = tf.distribute.get_replica_context()
        replica_id = tf.cast(replica.replica_id_in_sync_group if replica else 0, tf.int64)
        seed = tf.stack([tf.constant(self.key, tf.int64) + replica_id, count])
        keep = tf.random.stateless_uniform(tf.shape(x), seed=seed) >= self.rate
        return tf.where(keep, x / tf.cast(1 - self.rate, x.dtype), tf.zeros_like(x))


class ConvBN(tf_keras.Model):
    def __init__(self, c_out, dropout=0.05, dtype=None, seed=0, layer=0):
        super().__init__(dtype=dtype)
        self.conv = tf_keras.layers.Conv2D(filters=c_out, kernel_size=3, padding="SAME",
                                           kernel_initializer=init_pytorch, use_bias=False,
                                           dtype=dtype)
        self.bn = tf_keras.layers.BatchNormalization(momentum=0.9, epsilon=1e-5, dtype=dtype)
        self.drop = StatelessDropout(dropout, key=stream_key("dropout", seed, layer), dtype=dtype)

    def call(self, inputs, training=False):
        return tf.nn.relu(self.bn(self.drop(self.conv(inputs), training=training),
                                  training=training))


class ResBlk(tf_keras.Model):
    def __init__(self, c_out, pool, res=False, dropout=0.05, dtype=None, seed=0, layer=0):
        super().__init__(dtype=dtype)
        self.conv_bn = ConvBN(c_out, dropout, dtype, seed=seed, layer=layer)
        self.pool = pool
        self.res = res
        if self.res:
            self.res1 = ConvBN(c_out, dropout, dtype, seed=seed, layer=layer + 1)
            self.res2 = ConvBN(c_out, dropout, dtype, seed=seed, layer=layer + 2)

    def call(self, inputs, training=False):
        h = self.pool(self.conv_bn(inputs, training=training))
        if self.res:
            h = h + self.res2(self.res1(h, training=training), training=training)
        return h


class DavidNet(tf_keras.Model):
    def __init__(self, c=64, weight=0.125, dropout=0.05, dtype=None, seed=0):
        super().__init__(dtype=dtype)
        pool = tf_keras.layers.MaxPooling2D(dtype=dtype)
        # layer: a dropout stream of its own for each of the 8 ConvBN layers
        self.init_conv_bn = ConvBN(c, dropout, dtype, seed=seed, layer=0)
        self.blk1 = ResBlk(c * 2, pool, res=True, dropout=dropout, dtype=dtype, seed=seed, layer=1)
        self.blk2 = ResBlk(c * 4, pool, dropout=dropout, dtype=dtype, seed=seed, layer=4)
        self.blk3 = ResBlk(c * 8, pool, res=True, dropout=dropout, dtype=dtype, seed=seed, layer=5)
        self.pool = tf_keras.layers.GlobalMaxPool2D(dtype=dtype)
        self.linear = tf_keras.layers.Dense(10, kernel_initializer=init_pytorch, use_bias=False,
                                            dtype=dtype)
        self.weight = weight

    def logits(self, x, training=False):
        h = self.init_conv_bn(x, training=training)
        h = self.blk3(self.blk2(self.blk1(h, training=training), training=training),
                      training=training)
        h = self.linear(self.pool(h)) * self.weight
        # At least float32 whatever the compute precision: the loss and softmax need the range.
        return h if h.dtype.size >= 4 else tf.cast(h, tf.float32)

    def call(self, x, y, training=False):
        h = self.logits(x, training=training)
        return loss_and_correct(h, y)


def loss_and_correct(h, y):
    """The seed's loss (cross-entropy summed over the batch) and number correct, from logits."""
    ce = tf.nn.sparse_softmax_cross_entropy_with_logits(logits=h, labels=y)
    loss = tf.reduce_sum(ce)
    correct = tf.reduce_sum(tf.cast(tf.math.equal(tf.argmax(h, axis=1), y), tf.float32))
    return loss, correct


def flip_tta_logits(model, x, logits=None):
    """Flip test-time augmentation (not in the seed; Page's later DAWNBench entries use it):
    the mean of the logits of each image and of its mirror image. `logits`: the plain
    ones, when already computed."""
    plain = model.logits(x) if logits is None else logits
    return (plain + model.logits(tf.reverse(x, axis=[2]))) / 2


def build(model, batch_shape=(1, 32, 32, 3)):
    """Create the variables (Keras makes them on the first call)."""
    model(tf.zeros(batch_shape), tf.zeros(batch_shape[:1], tf.int64), training=False)
    return model
