"""DavidNet's shape, parameter count and train/inference behaviour."""
import numpy as np
import tensorflow as tf

from legacy_eager.model import DavidNet, build, init_pytorch


def test_blog_width_has_the_published_parameter_count():
    model = build(DavidNet())
    assert sum(int(np.prod(v.shape)) for v in model.trainable_variables) == 6_573_120


def test_architecture_matches_the_seed():
    c = 8
    model = build(DavidNet(c=c))
    convs = [v for v in model.trainable_variables if "conv2d" in v.name]
    assert [tuple(v.shape) for v in convs] == [
        (3, 3, 3, c), (3, 3, c, 2 * c), (3, 3, 2 * c, 2 * c), (3, 3, 2 * c, 2 * c),
        (3, 3, 2 * c, 4 * c), (3, 3, 4 * c, 8 * c), (3, 3, 8 * c, 8 * c), (3, 3, 8 * c, 8 * c)]
    assert not any("bias" in v.name for v in model.trainable_variables if "batch_norm" not in v.name)
    x = tf.random.normal([5, 32, 32, 3])
    logits = model.logits(x)
    assert logits.shape == (5, 10)
    # The classifier output is scaled by 0.125.
    h = model.pool(model.blk3(model.blk2(model.blk1(model.init_conv_bn(x)))))
    np.testing.assert_allclose(logits.numpy(), 0.125 * model.linear(h).numpy(), rtol=1e-6)


def test_loss_is_summed_cross_entropy_and_correct_counts():
    model = build(DavidNet(c=4))
    x, y = tf.random.normal([6, 32, 32, 3]), tf.constant([0, 1, 2, 3, 4, 5], tf.int64)
    loss, correct = model(x, y, training=False)
    logits = model.logits(x)
    expected = tf.reduce_sum(tf.nn.sparse_softmax_cross_entropy_with_logits(labels=y, logits=logits))
    np.testing.assert_allclose(loss.numpy(), expected.numpy(), rtol=1e-6)
    assert correct.numpy() == np.sum(np.argmax(logits.numpy(), 1) == y.numpy())


def test_init_pytorch_bounds():
    w = init_pytorch((3, 3, 16, 32)).numpy()
    bound = 1 / np.sqrt(3 * 3 * 16)
    assert np.abs(w).max() <= bound and np.abs(w).max() > 0.9 * bound


def test_inference_is_deterministic_and_training_is_not():
    tf.random.set_seed(0)
    model = build(DavidNet(c=4))
    x = tf.random.normal([4, 32, 32, 3])
    np.testing.assert_array_equal(model.logits(x).numpy(), model.logits(x).numpy())
    bn = model.init_conv_bn.bn
    before = bn.moving_mean.numpy().copy()
    model.logits(x)
    np.testing.assert_array_equal(bn.moving_mean.numpy(), before)  # inference leaves stats alone
    a, b = model.logits(x, training=True), model.logits(x, training=True)
    assert not np.allclose(a.numpy(), b.numpy())  # dropout is on in training
    assert not np.allclose(bn.moving_mean.numpy(), before)  # and BatchNorm statistics move
