"""airbench94's network in tf_keras, with its names and order: a 2x2 whitening convolution
(3 -> 24 channels, frozen filters, trained bias) and GELU, three ConvGroups (64, 256, 256
channels: conv, max-pool 2, BatchNorm, GELU, conv, BatchNorm, GELU), max-pool 3, and a
bias-free linear layer scaled by 1/9. 1,973,944 numbers: 1,971,352 trained (1,970,176
conv and linear weights, 24 whitening biases, 1,152 BatchNorm biases), 288 frozen whitening
weights and 2,304 BatchNorm moving statistics (PyTorch also stores the 1,152 BatchNorm
scales fixed at 1: 1,975,096).

As airbench94.py: convolutions start as PyTorch's (uniform +-1/sqrt(fan in)) and then their
first c_in filters as the identity (dirac), an implicit residual; BatchNorm with momentum
0.6 (PyTorch's 0.4), eps 1e-12, scale fixed at 1, bias learned; GELU exact (erf, as
PyTorch's nn.GELU()).

Deviations (TensorFlow's): NHWC; a mixed-precision `dtype` ("mixed_bfloat16") computes the
layers in half precision while Keras' BatchNorm computes in float32 (airbench94 keeps its
BatchNorm in float32 too) and the logits come back in float32.
"""
import math

import numpy as np
import tensorflow as tf
import tf_keras

from airbench_tf import hyp


def init_pytorch(shape, dtype=tf.float32):
    """PyTorch's default for Conv2d and Linear weights: uniform(+-1/sqrt(fan in))."""
    bound = 1 / math.sqrt(np.prod(shape[:-1]))
    return tf.random.uniform(shape, minval=-bound, maxval=bound, dtype=dtype)


def init_dirac(shape, dtype=tf.float32):
    """init_pytorch, then filter i < c_in is the identity on channel i (torch's dirac_ on
    the first c_in filters); an HWIO kernel."""
    kh, kw, c_in, c_out = shape
    n = min(c_in, c_out)
    identity = np.zeros(shape, np.float32)
    identity[kh // 2, kw // 2, np.arange(n), np.arange(n)] = 1
    is_dirac = np.zeros(shape, bool)
    is_dirac[..., :n] = True
    return tf.where(is_dirac, tf.constant(identity, dtype), init_pytorch(shape, dtype))


class Whitening(tf_keras.layers.Layer):
    """The 2x2 convolution with frozen filters (set by set_filters from the training
    images' patches) and a trainable bias (trained for the first epochs only)."""

    def __init__(self, filters=2 * 3 * 2 ** 2, size=2, **kwargs):
        super().__init__(**kwargs)
        self.filters, self.size = filters, size

    def build(self, input_shape):
        self.kernel = self.add_weight(name="kernel", trainable=False, initializer="zeros",
                                      shape=[self.size, self.size, input_shape[-1], self.filters])
        self.bias = self.add_weight(name="bias", shape=[self.filters], initializer="zeros")

    def set_filters(self, kernel):
        self.kernel.assign(tf.constant(kernel, tf.float32))

    def call(self, x):
        kernel, bias = tf.cast(self.kernel, x.dtype), tf.cast(self.bias, x.dtype)
        return tf.nn.conv2d(x, kernel, strides=1, padding="VALID") + bias


def BatchNorm(dtype=None):
    return tf_keras.layers.BatchNormalization(momentum=hyp.BN_MOMENTUM, epsilon=hyp.BN_EPS,
                                              scale=False, center=True, dtype=dtype)


def Conv(filters, dtype=None):
    return tf_keras.layers.Conv2D(filters, 3, padding="same", use_bias=False,
                                  kernel_initializer=init_dirac, dtype=dtype)


class ConvGroup(tf_keras.Model):
    def __init__(self, channels_out, dtype=None):
        super().__init__(dtype=dtype)
        self.conv1 = Conv(channels_out, dtype)
        self.pool = tf_keras.layers.MaxPooling2D(2, dtype=dtype)
        self.norm1 = BatchNorm(dtype)
        self.conv2 = Conv(channels_out, dtype)
        self.norm2 = BatchNorm(dtype)

    def call(self, x, training=False):
        x = self.norm1(self.pool(self.conv1(x)), training=training)
        x = gelu(x)
        return gelu(self.norm2(self.conv2(x), training=training))


def gelu(x):
    """Exact GELU, x Phi(x), written with erf: tf.nn.gelu's exact form uses erfc, which has
    no ONNX operator (tf2onnx fails on it); erf has one. The same function."""
    return 0.5 * x * (1 + tf.math.erf(x * np.sqrt(0.5).astype(x.dtype.as_numpy_dtype)))


class Airbench94(tf_keras.Model):
    def __init__(self, widths=hyp.WIDTHS, dtype=None):
        super().__init__(dtype=dtype)
        self.whiten = Whitening(dtype=dtype)
        self.group1 = ConvGroup(widths[0], dtype)
        self.group2 = ConvGroup(widths[1], dtype)
        self.group3 = ConvGroup(widths[2], dtype)
        self.pool = tf_keras.layers.MaxPooling2D(3, dtype=dtype)
        self.linear = tf_keras.layers.Dense(10, use_bias=False, kernel_initializer=init_pytorch,
                                            dtype=dtype)

    def logits(self, x, training=False):
        h = gelu(self.whiten(x))
        for group in (self.group1, self.group2, self.group3):
            h = group(h, training=training)
        h = self.linear(tf.reshape(self.pool(h), [-1, h.shape[-1]])) * hyp.SCALING_FACTOR
        return h if h.dtype.size >= 4 else tf.cast(h, tf.float32)

    def call(self, x, training=False):
        return self.logits(x, training=training)

    def norm_biases(self):
        """The BatchNorm biases, which take BIAS_SCALER x the learning rate."""
        return [layer.beta for group in (self.group1, self.group2, self.group3)
                for layer in (group.norm1, group.norm2)]


def build(model):
    model.logits(tf.zeros([1, 32, 32, 3]))
    return model


def smoothed_loss_and_correct(logits, y, smoothing=hyp.LABEL_SMOOTHING):
    """airbench94's loss: cross-entropy against labels smoothed by 0.2 (the true class
    1 - 0.2 + 0.02, each other 0.02), summed over the batch; and the number correct."""
    n = logits.shape[-1]
    targets = tf.one_hot(y, n) * (1 - smoothing) + smoothing / n
    loss = tf.reduce_sum(tf.nn.softmax_cross_entropy_with_logits(labels=targets, logits=logits))
    correct = tf.reduce_sum(tf.cast(tf.equal(tf.argmax(logits, 1), y), tf.float32))
    return loss, correct


def view_images(x, view):
    """legacy_eager.tta.view_images in TensorFlow: translate (reflect padding), then flip."""
    if view.dy or view.dx:
        p = max(abs(view.dy), abs(view.dx))
        padded = tf.pad(x, [[0, 0], [p, p], [p, p], [0, 0]], mode="REFLECT")
        x = padded[:, p + view.dy:p + view.dy + 32, p + view.dx:p + view.dx + 32]
    return tf.reverse(x, axis=[2]) if view.flip else x


def tta_logits(model, x, views=hyp.TTA_VIEWS[hyp.TTA_LEVEL]):
    """The weighted sum of the views' logits (airbench94's infer_mirror_translate at
    level 2)."""
    return tf.add_n([view.weight * model.logits(view_images(x, view)) for view in views])
