"""The one-cycle schedule, and its TF-op twin used inside tf.function."""
import numpy as np
import pytest
import tensorflow as tf

from legacy_eager.optim import lr_schedule_tf, make_lr_func
from legacy_eager.schedule import lr_schedule, schedule_knots


def test_blog_schedule_values():
    # 24 epochs, peak 0.4: linear up to epoch 5 ((24+1)//5), linear down to 0 at 24.
    assert schedule_knots(24, 0.4) == ([0, 5, 24], [0, 0.4, 0])
    assert lr_schedule(0, 24, 0.4) == 0
    assert lr_schedule(2.5, 24, 0.4) == pytest.approx(0.2)
    assert lr_schedule(5, 24, 0.4) == pytest.approx(0.4)
    assert lr_schedule(14.5, 24, 0.4) == pytest.approx(0.2)
    assert lr_schedule(24, 24, 0.4) == 0
    assert lr_schedule(30, 24, 0.4) == 0  # np.interp holds the end value


def test_short_runs_start_at_the_peak():
    # (2+1)//5 == 0: the warm-up knot coincides with the start.
    assert lr_schedule(0, 2, 0.4) == pytest.approx(0.4)
    assert lr_schedule(1, 2, 0.4) == pytest.approx(0.2)


@pytest.mark.parametrize("epochs", [1, 2, 3, 4, 5, 24])
@pytest.mark.parametrize("batches_per_epoch", [1, 3, 98])
def test_tf_schedule_equals_np_interp_bit_for_bit(epochs, batches_per_epoch):
    compiled = tf.function(lambda t: lr_schedule_tf(t, epochs, 0.4))
    steps = np.arange(epochs * batches_per_epoch + 3)
    t = tf.constant(steps, tf.int64) / batches_per_epoch  # the seed's global_step / batches_per_epoch
    ours = np.array([compiled(t[i]).numpy() for i in range(len(steps))])
    seed = np.array([lr_schedule(t[i], epochs, 0.4) for i in range(len(steps))])
    np.testing.assert_array_equal(ours, seed)


def test_lr_func_reads_the_global_step_in_both_modes():
    step = tf.Variable(0, dtype=tf.int64)
    eager = make_lr_func(step, 10, 24, 0.4, 512, "eager")
    compiled = make_lr_func(step, 10, 24, 0.4, 512, "function")
    for value in (0, 7, 50, 123, 240):
        step.assign(value)
        expected = np.interp(value / 10, [0, 5, 24], [0, 0.4, 0]) / 512
        assert eager() == pytest.approx(expected, rel=1e-12)
        assert tf.function(compiled)().numpy() == pytest.approx(expected, rel=1e-12)
