"""The seed's input pipeline: crops and flips, batching, reshuffling, test normalization."""
import numpy as np
import tensorflow as tf

from legacy_eager import pipeline
from tests import synthetic


def test_augmentation_yields_only_valid_crops_and_flips():
    # Every pixel of the padded image is unique, so an output names its crop exactly.
    rows, cols = np.meshgrid(np.arange(40), np.arange(40), indexing="ij")
    padded = np.stack([rows, cols, rows * 40 + cols], axis=-1).astype(np.float32)
    tf.random.set_seed(0)
    seen = set()
    for _ in range(300):
        out = pipeline.data_aug(tf.constant(padded), 0)[0].numpy()
        flipped = out[0, 0, 1] > out[0, -1, 1]
        if flipped:
            out = out[:, ::-1]
        r, c = int(out[0, 0, 0]), int(out[0, 0, 1])
        assert 0 <= r <= 8 and 0 <= c <= 8
        np.testing.assert_array_equal(out, padded[r:r + 32, c:c + 32])
        seen.add((r, c, bool(flipped)))
    offsets = {(r, c) for r, c, _ in seen}
    assert len(offsets) > 60 and {f for *_, f in seen} == {True, False}


def test_pad4_reflects():
    x = np.arange(2 * 32 * 32 * 3).reshape(2, 32, 32, 3)
    padded = pipeline.pad4(x)
    assert padded.shape == (2, 40, 40, 3)
    np.testing.assert_array_equal(padded[:, 4:36, 4:36], x)
    np.testing.assert_array_equal(padded[:, 3, 4:36], x[:, 1])  # reflect, not edge


def test_train_set_batches_reshuffles_and_normalizes():
    x, y = synthetic.make_arrays(40)
    mean, std = pipeline.channel_stats(x)
    train = pipeline.seed_train_set(x, y, mean, std, batch_size=16)
    epochs = [[(bx.numpy(), by.numpy()) for bx, by in train] for _ in range(2)]
    for batches in epochs:
        assert [len(by) for _, by in batches] == [16, 16, 8]  # last partial batch kept
        labels = np.concatenate([by for _, by in batches])
        np.testing.assert_array_equal(np.sort(labels), np.sort(y))
        assert batches[0][0].shape[1:] == (32, 32, 3) and batches[0][0].dtype == np.float32
    orders = [np.concatenate([by for _, by in b]) for b in epochs]
    assert not np.array_equal(orders[0], orders[1])  # a new order every epoch
    pixels = np.concatenate([bx for bx, _ in epochs[0]])
    assert abs(pixels.mean()) < 0.2 and 0.8 < pixels.std() < 1.2


def test_test_set_is_normalized_and_not_augmented():
    x, y = synthetic.make_arrays(20)
    mean, std = pipeline.channel_stats(x)
    got = [(bx.numpy(), by.numpy()) for bx, by in pipeline.test_set(x, y, mean, std, 8)]
    np.testing.assert_array_equal(np.concatenate([bx for bx, _ in got]),
                                  ((x - mean) / std).astype(np.float32))
    np.testing.assert_array_equal(np.concatenate([by for _, by in got]), y)
