"""airbench94's training batches: a new order every epoch, full batches only (the last
partial batch is dropped), random translation by up to +-2 pixels of the reflect-padded
image, and alternating flip: each image is mirrored at random once for the whole run and
then every other epoch all images are mirrored, so an image is seen mirrored in exactly
every other epoch (airbench94's CifarLoader: "more diversity than random flipping").

The images stay uint8 on the device; translation, flip and normalisation run on a whole
batch in one XLA-compiled gather. Randomness is stateless, keyed by (stream key, epoch):
a resumed run replays an epoch's batches exactly from any batch number.
"""
import numpy as np
import tensorflow as tf

from airbench_tf import hyp
from legacy_eager.input_pipeline import normalize_tf
from legacy_eager.streams import stream_key


def reflect(j, size=32):
    """Source index of position j of an axis reflected at its ends (no edge repeat, as
    numpy's and torch's 'reflect')."""
    j = tf.abs(j)
    return tf.where(j > size - 1, 2 * (size - 1) - j, j)


def translate_flip(images, dy, dx, flip):
    """Each image translated by (dy[i], dx[i]) (its pixel (r, c) is the source's
    (r + dy, c + dx), reflected at the border), then mirrored where flip[i].
    images: [B, 32, 32, C]; dy, dx: int32 [B]; flip: bool [B]."""
    b = tf.shape(images)[0]
    steps = tf.range(32)[None, :]
    rows = reflect(steps + dy[:, None])
    cols = reflect(tf.where(flip[:, None], 31 - steps, steps) + dx[:, None])
    flat = tf.range(b)[:, None, None] * 1024 + rows[:, :, None] * 32 + cols[:, None, :]
    channels = tf.shape(images)[3]
    return tf.reshape(tf.gather(tf.reshape(images, [-1, channels]), flat), [b, 32, 32, channels])


class AlternatingFlipBatches:
    """Epoch batches of (normalised float32 x, int64 y) for airbench94's training."""

    def __init__(self, x, y, mean, std, batch_size, seed=0, translate=hyp.TRANSLATE,
                 total_steps=None):
        """total_steps: the run's steps; the epoch that reaches it is cut there."""
        self.images, self.labels = tf.constant(x), tf.constant(y)
        self.n, self.batch_size, self.translate = len(x), batch_size, translate
        self.total_steps = total_steps
        self.mean, self.std = mean, std
        self.order_key = stream_key("shuffle", seed)
        self.flip_key, self.translate_key = stream_key("flip", seed), stream_key("translate", seed)
        # The run's one random mirroring (airbench94 pre-flips the normalised images once).
        self.base_flip = tf.random.stateless_uniform(
            [self.n], tf.constant([self.flip_key, 0], tf.int64)) < 0.5
        self._load = tf.function(self._load_batch, jit_compile=True)

    def __len__(self):
        return hyp.steps_per_epoch(self.n, self.batch_size)

    def flips(self, epoch):
        """Whether each image (in stored order) is mirrored in `epoch` (0-based)."""
        return tf.math.logical_xor(self.base_flip, tf.constant(epoch % 2 == 1))

    def shifts(self, epoch):
        """(dy, dx) of each image in `epoch`, uniform over -translate..translate."""
        return tf.random.stateless_uniform([2, self.n], tf.constant([self.translate_key, epoch],
                                                                    tf.int64),
                                           minval=-self.translate, maxval=self.translate + 1,
                                           dtype=tf.int32)

    def order(self, epoch):
        keys = tf.random.stateless_uniform([self.n], tf.constant([self.order_key, epoch], tf.int64))
        return tf.argsort(keys)

    def _load_batch(self, idx, dy, dx, flip):
        x = translate_flip(tf.gather(self.images, idx), dy, dx, flip)
        return normalize_tf(x, self.mean, self.std), tf.gather(self.labels, idx)

    def batches(self, epoch, start=0):
        """Epoch `epoch`'s batches from number `start` on (to total_steps)."""
        order, flips, (dy, dx) = self.order(epoch), self.flips(epoch), self.shifts(epoch)
        stop = len(self)
        if self.total_steps is not None:
            stop = max(0, min(stop, self.total_steps - epoch * len(self)))
        for k in range(start, stop):
            idx = order[k * self.batch_size:(k + 1) * self.batch_size]
            yield self._load(idx, tf.gather(dy, idx), tf.gather(dx, idx), tf.gather(flips, idx))


