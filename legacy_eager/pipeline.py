"""The seed's input pipeline: normalize with the training mean/std, reflect-pad 4,
per-image random 32x32 crop and horizontal flip, reshuffle every epoch, batch keeping
the last partial batch, prefetch 1. Test images are only normalized."""
import numpy as np
import tensorflow as tf


def channel_stats(x_train):
    """Per-channel mean and std of the uint8 training images, as the seed computes them."""
    return np.mean(x_train, axis=(0, 1, 2)), np.std(x_train, axis=(0, 1, 2))


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
