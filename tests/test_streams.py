"""Every random stream of a run has its own key: for seeds 0 and 1 no two of the shuffle
order, crop/flip, cutout and the 8 dropout layers share a key or draw the same numbers."""
import numpy as np
import pytest
import tensorflow as tf

from legacy_eager import input_pipeline
from legacy_eager.model import DavidNet, StatelessDropout, build
from legacy_eager.streams import stream_key
from tests import synthetic


def _run_keys(seed):
    """The keys a run with --seed `seed` really uses, read off the objects it builds."""
    model = build(DavidNet(c=4, seed=seed))
    drops = [layer for layer in model.submodules if isinstance(layer, StatelessDropout)]
    x, y = synthetic.make_arrays(8)
    batches = input_pipeline.fast_train_set(x, y, np.zeros(3), np.ones(3), 4, seed=seed)
    keys = {f"dropout {i}": d.key for i, d in enumerate(drops)}
    keys.update({"shuffle": batches.order_key, "augment": batches.augment_key})
    assert len(drops) == 8
    return keys


def test_streams_of_seeds_0_and_1_never_coincide():
    keys = {(seed, name): key for seed in (0, 1) for name, key in _run_keys(seed).items()}
    keys.update({(seed, "cutout"): stream_key("cutout", seed) for seed in (0, 1)})
    assert len(set(keys.values())) == len(keys) == 22
    # and what they draw at the same counter differs too
    draws = {k: tf.random.stateless_uniform([4], tf.constant([key, 1], tf.int64)).numpy().tobytes()
             for k, key in keys.items()}
    assert len(set(draws.values())) == len(draws)


def test_stream_keys_are_stable_and_fit_int64_with_room_for_replicas():
    # Pinned: a run resumed by a later version of this code must draw the masks and crops
    # its checkpoint was made with, so the keys of a given (stream, seed, index) never change.
    assert stream_key("augment", 0) == 10701617445571439
    assert stream_key("dropout", 3, 5) == 66391859375773749
    assert all(0 <= stream_key(s, seed, i) < 2 ** 56 for s in ("shuffle", "dropout")
               for seed in (0, 1, -5, 10 ** 9) for i in range(8))
    with pytest.raises(ValueError):
        stream_key("noise", 0)
