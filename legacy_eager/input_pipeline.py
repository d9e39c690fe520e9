"""The seed's input pipeline: normalize with the training mean/std, reflect-pad 4,
per-image random 32x32 crop and horizontal flip, reshuffle every epoch, batch keeping
the last partial batch, prefetch 1. Test images are only normalized."""
import itertools

import numpy as np
import tensorflow as tf

from legacy_eager.streams import stream_key


def channel_stats(x_train, chunk=4096):
    """Per-channel mean and std of the uint8 training images (the seed's np.mean and np.std),
    summed in float64 a chunk at a time: np.std would make a float64 copy of the whole
    set (1.2 GB for CIFAR-10)."""
    n = len(x_train) * x_train.shape[1] * x_train.shape[2]
    total = np.zeros(x_train.shape[-1])
    for i in range(0, len(x_train), chunk):
        total += x_train[i:i + chunk].sum(axis=(0, 1, 2), dtype=np.float64)
    mean = total / n
    squares = np.zeros(x_train.shape[-1])
    for i in range(0, len(x_train), chunk):
        squares += ((x_train[i:i + chunk] - mean) ** 2).sum(axis=(0, 1, 2))
    return mean, np.sqrt(squares / n)


def normalize(x, mean, std):
    return ((x - mean) / std).astype("float32")


def pad4(x):
    return np.pad(x, [(0, 0), (4, 4), (4, 4), (0, 0)], mode="reflect")


def data_aug(x, y):
    return tf.image.random_flip_left_right(tf.image.random_crop(x, [32, 32, 3])), y


def seed_train_set(x_train, y_train, mean, std, batch_size):
    """Built once; `shuffle` reshuffles on every iteration, which is what the seed got
    by rebuilding the dataset each epoch."""
    x = normalize(pad4(x_train), mean, std)
    return (tf.data.Dataset.from_tensor_slices((x, y_train)).map(data_aug)
            .shuffle(len(x)).batch(batch_size).prefetch(1))


def test_set(x_test, y_test, mean, std, batch_size):
    return tf.data.Dataset.from_tensor_slices((normalize(x_test, mean, std), y_test)).batch(batch_size)


# ---------------------------------------------------------------- fast pipeline
# The same augmentation distribution as the seed's chain, but: the images stay uint8 and
# unpadded (reflection is an index table), live on the device, and are shuffled as
# indices; crop, flip and normalisation run on whole batches in one XLA-compiled gather.
# Randomness is stateless, keyed by (shuffle key, epoch) for the order and (augment key,
# batch number) for augmentation, so a batch can be reproduced from its number alone; the
# keys come from streams.stream_key, one per stream, so the streams never coincide.

# Source row/column of each of the 40 positions of the reflect-padded (4 each side) axis.
REFLECT_40 = np.array([abs(i - 4) if i < 36 else 66 - i for i in range(40)], np.int32)


def random_crop_flip(images, seed):
    """Per-image random 32x32 crop of the reflect-padded batch and horizontal flip.

    images: [B, 32, 32, C]; seed: int64 [2]. Offsets are uniform over 0..8 on each axis
    and the flip has probability 1/2, independently per image, as `data_aug` draws them."""
    b = tf.shape(images)[0]
    draws = tf.random.stateless_uniform([3, b, 1], seed, minval=0, maxval=1 << 30, dtype=tf.int32)
    dy, dx, flip = draws[0] % 9, draws[1] % 9, draws[2] % 2 == 1
    steps = tf.range(32)[None, :]
    rows = tf.gather(REFLECT_40, dy + steps)
    cols = tf.gather(REFLECT_40, dx + tf.where(flip, 31 - steps, steps))  # flipped: read backwards
    flat = (tf.range(b)[:, None, None] * 1024 + rows[:, :, None] * 32 + cols[:, None, :])
    channels = tf.shape(images)[3]
    return tf.reshape(tf.gather(tf.reshape(images, [-1, channels]), flat), [b, 32, 32, channels])


def cutout(images, size, seed):
    """Page's Cutout (DAWNBench, not in the seed): in each image one size x size square,
    at a position drawn uniformly among those that keep it inside the 32x32 image, set
    to 0, which after normalisation is the training mean. images: [B, 32, 32, C]."""
    b = tf.shape(images)[0]
    corner = tf.random.stateless_uniform([2, b, 1, 1], seed, minval=0, maxval=33 - size,
                                         dtype=tf.int32)
    rows, cols = tf.range(32)[None, :, None], tf.range(32)[None, None, :]
    inside = ((rows >= corner[0]) & (rows < corner[0] + size) &
              (cols >= corner[1]) & (cols < corner[1] + size))
    return tf.where(inside[..., None], tf.zeros_like(images), images)


def normalize_tf(images, mean, std):
    return (tf.cast(images, tf.float32) - np.float32(mean)) / np.float32(std)


class FastBatches:
    """One pass per iteration over uint8 images: (normalised float32 x, int64 y) batches,
    the last partial batch kept. With augment, a new order every epoch and a random crop
    and flip per image; without, the stored order, normalised only (the test set)."""

    def __init__(self, x, y, mean, std, batch_size, augment, seed=0, cutout=0):
        self.images, self.labels = tf.constant(x), tf.constant(y)
        self.n, self.batch_size, self.augment, self.seed = len(x), batch_size, augment, seed
        self.cutout = cutout if augment else 0
        self.mean, self.std = mean, std
        self.order_key, self.augment_key = stream_key("shuffle", seed), stream_key("augment", seed)
        self.cutout_key = stream_key("cutout", seed)
        self.epoch = 0
        self._load = tf.function(self._load_batch, jit_compile=True)

    def _load_batch(self, idx, seed, cutout_seed):
        x = tf.gather(self.images, idx)
        if self.augment:
            x = random_crop_flip(x, seed)
        x = normalize_tf(x, self.mean, self.std)
        if self.cutout:  # after crop, flip and normalisation, as Page's pipeline
            x = cutout(x, self.cutout, cutout_seed)
        return x, tf.gather(self.labels, idx)

    def order(self, epoch):
        if not self.augment:
            return tf.range(self.n)
        keys = tf.random.stateless_uniform([self.n], tf.constant([self.order_key, epoch], tf.int64))
        return tf.argsort(keys)

    def __len__(self):
        return -(-self.n // self.batch_size)

    def __iter__(self):
        epoch, self.epoch = self.epoch, self.epoch + 1
        return self.batches(epoch)

    def batches(self, epoch, start=0):
        """Epoch `epoch`'s batches from batch number `start` on: the same ones, whenever asked."""
        order = self.order(epoch)
        for k in range(start, len(self)):
            number = epoch * len(self) + k + 1
            yield self._load(order[k * self.batch_size:(k + 1) * self.batch_size],
                             tf.constant([self.augment_key, number], tf.int64),
                             tf.constant([self.cutout_key, number], tf.int64))


def fast_train_set(x_train, y_train, mean, std, batch_size, seed=0, cutout=0):
    return FastBatches(x_train, y_train, mean, std, batch_size, augment=True, seed=seed,
                       cutout=cutout)


def fast_test_set(x_test, y_test, mean, std, batch_size):
    return FastBatches(x_test, y_test, mean, std, batch_size, augment=False)


def seed_pipeline(x_train, y_train, mean, std, batch_size, seed=0, cutout=0):
    return seed_train_set(x_train, y_train, mean, std, batch_size)


PIPELINES = {"seed": (seed_pipeline, test_set), "fast": (fast_train_set, fast_test_set)}


def epoch_batches(train_set, epoch, start=0):
    """The batches of `epoch` from number `start` on. The fast pipeline (and airbench94's)
    replays them exactly; the seed's tf.data chain can only skip ahead in a freshly
    shuffled pass."""
    if hasattr(train_set, "batches"):
        return train_set.batches(epoch, start)
    return itertools.islice(iter(train_set), start, None)
