"""The compat.v1 optimizer, global step and weight-decay loops against hand arithmetic."""
import numpy as np
import pytest
import tensorflow as tf

from legacy_eager.optim import (intended_weight_decay, make_global_step, make_optimizer,
                                seed_weight_decay_loop)

LR, M, WD, BS = 0.05, 0.9, 5e-4, 8


def _loss(v, target):
    return 0.5 * tf.reduce_sum((v - target) ** 2)  # gradient: v - target


@pytest.mark.parametrize("mode", ["eager", "function"])
def test_nesterov_step_with_weight_decay_matches_hand_computation(mode):
    v0 = np.array([1.0, -2.0, 0.5], np.float32)
    target = np.array([0.3, 0.1, -0.4], np.float32)
    v = tf.Variable(v0)
    step = make_global_step()
    opt = make_optimizer(lambda: LR, M)

    def train_step():
        with tf.GradientTape() as tape:
            loss = _loss(v, target)
        grads = intended_weight_decay(tape.gradient(loss, [v]), [v], WD, BS)
        opt.apply_gradients(zip(grads, [v]), global_step=step)

    train_step = tf.function(train_step) if mode == "function" else train_step
    w, accum = v0.astype(np.float64), np.zeros(3)
    for _ in range(3):
        train_step()
        g = (w - target) + w * WD * BS           # gradient plus the loop's decay
        accum = M * accum + g                    # compat.v1 Nesterov, as documented
        w = w - LR * (g + M * accum)
        np.testing.assert_allclose(v.numpy(), w, rtol=1e-6, atol=1e-7)
    assert int(step.numpy()) == 3


def test_seed_loop_leaves_gradients_unchanged():
    var = [tf.Variable([1.0, 2.0]), tf.Variable([[3.0]])]
    grads = [tf.constant([0.5, 0.5]), tf.constant([[1.0]])]
    before = [g.numpy().copy() for g in grads]
    out = seed_weight_decay_loop(grads, var, 0.1, 512)
    assert out is grads and all(a is b for a, b in zip(out, grads))
    for g, b in zip(out, before):
        np.testing.assert_array_equal(g.numpy(), b)


def test_intended_loop_adds_decay_times_batch_size():
    var = [tf.Variable([1.0, 2.0])]
    out = intended_weight_decay([tf.constant([0.5, 0.5])], var, 0.1, 4)
    np.testing.assert_allclose(out[0].numpy(), [0.5 + 0.4, 0.5 + 0.8])


def test_each_run_gets_its_own_global_step():
    a, b = make_global_step(), make_global_step()
    a.assign_add(5)
    assert a is not b and int(b.numpy()) == 0 and a.dtype == tf.int64
