"""The seed's input pipeline: crops and flips, batching, reshuffling, test normalization."""
import pytest
import numpy as np
import tensorflow as tf

from legacy_eager import input_pipeline
from tests import synthetic


def test_augmentation_yields_only_valid_crops_and_flips():
    # Every pixel of the padded image is unique, so an output names its crop exactly.
    rows, cols = np.meshgrid(np.arange(40), np.arange(40), indexing="ij")
    padded = np.stack([rows, cols, rows * 40 + cols], axis=-1).astype(np.float32)
    tf.random.set_seed(0)
    seen = set()
    for _ in range(300):
        out = input_pipeline.data_aug(tf.constant(padded), 0)[0].numpy()
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
    padded = input_pipeline.pad4(x)
    assert padded.shape == (2, 40, 40, 3)
    np.testing.assert_array_equal(padded[:, 4:36, 4:36], x)
    np.testing.assert_array_equal(padded[:, 3, 4:36], x[:, 1])  # reflect, not edge


def test_train_set_batches_reshuffles_and_normalizes():
    x, y = synthetic.make_arrays(40)
    mean, std = input_pipeline.channel_stats(x)
    train = input_pipeline.seed_train_set(x, y, mean, std, batch_size=16)
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
    mean, std = input_pipeline.channel_stats(x)
    got = [(bx.numpy(), by.numpy()) for bx, by in input_pipeline.test_set(x, y, mean, std, 8)]
    np.testing.assert_array_equal(np.concatenate([bx for bx, _ in got]),
                                  ((x - mean) / std).astype(np.float32))
    np.testing.assert_array_equal(np.concatenate([by for _, by in got]), y)


# ---------------------------------------------------------------- fast pipeline

def _coded_images(n):
    """Images whose pixels name their own position: channel 0 = row, 1 = column."""
    rows, cols = np.meshgrid(np.arange(32), np.arange(32), indexing="ij")
    img = np.stack([rows, cols, rows * 32 + cols], axis=-1).astype(np.int32)
    return np.repeat(img[None], n, axis=0)


def _padded_reference():
    return input_pipeline.pad4(_coded_images(1))[0]


def _recover(out, padded):
    """(dy, dx, flipped) of each output crop, after checking it is exactly that crop."""
    crops = {}  # each of the 81 crops by its bytes (the first offset, should two be equal)
    for r in range(9):
        for c in range(9):
            crops.setdefault(np.ascontiguousarray(padded[r:r + 32, c:c + 32]).tobytes(), (r, c))
    found = []
    for img in out:
        flipped = bool(img[0, 0, 1] > img[0, -1, 1]) or (
            img[0, 0, 1] == img[0, -1, 1] and img[0, 1, 1] > img[0, 2, 1])
        unflipped = img[:, ::-1] if flipped else img
        hit = crops.get(np.ascontiguousarray(unflipped, padded.dtype).tobytes())
        assert hit is not None, "not a crop of the padded image"
        found.append((*hit, flipped))
    return np.array(found)


def _assert_uniform_independent(draws):
    n = len(draws)
    dy, dx, flip = draws[:, 0], draws[:, 1], draws[:, 2].astype(float)
    counts = np.bincount(dy * 9 + dx, minlength=81)
    expected = n / 81
    chi2 = np.sum((counts - expected) ** 2 / expected)
    assert chi2 < 140, chi2  # 80 degrees of freedom: mean 80, sd 12.6
    assert abs(flip.mean() - 0.5) < 0.04
    for a, b in ((dy, dx), (dy, flip), (dx, flip)):
        assert abs(np.corrcoef(a, b)[0, 1]) < 0.08


def test_fast_and_seed_augmentation_draw_the_same_distribution():
    n = 1500
    padded = _padded_reference()
    tf.random.set_seed(0)
    # data_aug as the seed's pipeline runs it: mapped over a dataset, one image at a time
    seed_out = next(iter(tf.data.Dataset.from_tensors(padded).repeat(n)
                         .map(lambda x: input_pipeline.data_aug(x, 0)[0]).batch(n))).numpy()
    fast_out = input_pipeline.random_crop_flip(tf.constant(_coded_images(n)), tf.constant([0, 1])).numpy()
    for out in (seed_out, fast_out):
        _assert_uniform_independent(_recover(out, padded))


def test_reflect_table_matches_np_pad():
    padded = input_pipeline.pad4(np.arange(32)[None, :, None, None])[0, :, 0, 0]
    np.testing.assert_array_equal(input_pipeline.REFLECT_40, padded)


def test_fast_batches_cover_the_data_and_reshuffle():
    x, y = synthetic.make_arrays(40)
    mean, std = input_pipeline.channel_stats(x)
    train = input_pipeline.fast_train_set(x, y, mean, std, batch_size=16, seed=3)
    epochs = [[(bx.numpy(), by.numpy()) for bx, by in train] for _ in range(2)]
    for batches in epochs:
        assert [len(by) for _, by in batches] == [16, 16, 8]
        np.testing.assert_array_equal(np.sort(np.concatenate([by for _, by in batches])), np.sort(y))
        assert batches[0][0].dtype == np.float32 and batches[0][0].shape[1:] == (32, 32, 3)
    orders = [np.concatenate([by for _, by in b]) for b in epochs]
    assert not np.array_equal(orders[0], orders[1])
    # Stateless: the same seed replays the same batches.
    again = [(bx.numpy(), by.numpy()) for bx, by in
             input_pipeline.fast_train_set(x, y, mean, std, batch_size=16, seed=3)]
    for (a, b), (c, d) in zip(epochs[0], again):
        np.testing.assert_array_equal(a, c)
        np.testing.assert_array_equal(b, d)


def test_fast_test_set_normalizes_like_the_seed():
    x, y = synthetic.make_arrays(20)
    mean, std = input_pipeline.channel_stats(x)
    got = [(bx.numpy(), by.numpy()) for bx, by in input_pipeline.fast_test_set(x, y, mean, std, 8)]
    np.testing.assert_allclose(np.concatenate([bx for bx, _ in got]),
                               input_pipeline.normalize(x, mean, std), rtol=1e-6, atol=1e-6)
    np.testing.assert_array_equal(np.concatenate([by for _, by in got]), y)


def test_channel_stats_equal_numpy():
    x, _ = synthetic.make_arrays(50)
    mean, std = input_pipeline.channel_stats(x, chunk=7)
    np.testing.assert_allclose(mean, np.mean(x, axis=(0, 1, 2)), rtol=1e-12)
    np.testing.assert_allclose(std, np.std(x, axis=(0, 1, 2)), rtol=1e-12)


def test_fast_normalisation_is_within_2_4e_7_of_the_seeds_float64():
    """Every uint8 value of every channel, with the PNG copy's training statistics: the
    float32 normalisation is within 2.4e-7 of float64-then-cast (the README's figure)."""
    mean = np.array([125.3069, 122.9501, 113.8660])
    std = np.array([62.9932, 62.0887, 66.7049])
    x = np.broadcast_to(np.arange(256, dtype=np.uint8)[:, None], (256, 3))
    seed = input_pipeline.normalize(x.astype(np.float64), mean, std)
    fast = input_pipeline.normalize_tf(x, mean, std).numpy()
    diff = np.abs(seed.astype(np.float64) - fast)
    assert diff.max() <= 2.4e-7 and diff.max() > 0  # not bit-identical, and within the bound
