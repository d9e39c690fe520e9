"""DavidNet against numbers computed here independently: a numpy forward pass of the
whole network, ConvBN's order conv -> dropout -> BatchNorm -> ReLU, BatchNorm's momentum
and epsilon, dropout's rate and 1/(1-rate) scaling, and the summed loss."""
import numpy as np
import tensorflow as tf

from legacy_eager.model import ConvBN, DavidNet, StatelessDropout, build, init_pytorch


def _conv3x3(x, k):
    """SAME 3x3 convolution, NHWC, no bias, by shifting and summing (no TF)."""
    n, h, w, _ = x.shape
    padded = np.pad(x, [(0, 0), (1, 1), (1, 1), (0, 0)])
    out = np.zeros((n, h, w, k.shape[-1]))
    for dy in range(3):
        for dx in range(3):
            out += padded[:, dy:dy + h, dx:dx + w, :] @ k[dy, dx]
    return out


def _bn_inference(x, bn):
    gamma, beta, mean, var = (v.numpy().astype(np.float64) for v in
                              (bn.gamma, bn.beta, bn.moving_mean, bn.moving_variance))
    return gamma * (x - mean) / np.sqrt(var + 1e-5) + beta


def _conv_bn(x, layer):
    return np.maximum(_bn_inference(_conv3x3(x, layer.conv.kernel.numpy()), layer.bn), 0)


def _maxpool2(x):
    n, h, w, c = x.shape
    return x.reshape(n, h // 2, 2, w // 2, 2, c).max(axis=(2, 4))


def _res_blk(x, blk):
    h = _maxpool2(_conv_bn(x, blk.conv_bn))
    if blk.res:
        h = h + _conv_bn(_conv_bn(h, blk.res1), blk.res2)
    return h


def _numpy_logits(model, x):
    h = _conv_bn(x, model.init_conv_bn)
    h = _res_blk(_res_blk(_res_blk(h, model.blk1), model.blk2), model.blk3)
    return h.max(axis=(1, 2)) @ model.linear.kernel.numpy() * 0.125


def _randomize_bn_statistics(model, rng):
    """So that BatchNorm is no identity in the comparison."""
    for layer in model.submodules:
        if hasattr(layer, "moving_variance"):
            c = layer.moving_mean.shape[0]
            layer.moving_mean.assign(rng.normal(0, 0.3, c).astype(np.float32))
            layer.moving_variance.assign(rng.uniform(0.5, 2, c).astype(np.float32))
            layer.gamma.assign(rng.uniform(0.5, 1.5, c).astype(np.float32))
            layer.beta.assign(rng.normal(0, 0.2, c).astype(np.float32))


def test_forward_pass_equals_a_numpy_davidnet():
    rng = np.random.default_rng(0)
    model = build(DavidNet(c=2))
    _randomize_bn_statistics(model, rng)
    x = rng.normal(size=(3, 32, 32, 3)).astype(np.float32)
    np.testing.assert_allclose(model.logits(tf.constant(x)).numpy(),
                               _numpy_logits(model, x.astype(np.float64)), rtol=2e-4, atol=2e-5)


def test_loss_is_the_summed_cross_entropy_and_correct_counts_hits():
    rng = np.random.default_rng(1)
    model = build(DavidNet(c=2))
    x = rng.normal(size=(6, 32, 32, 3)).astype(np.float32)
    y = np.array([0, 1, 2, 3, 4, 5])
    logits = _numpy_logits(model, x.astype(np.float64))
    log_softmax = logits - np.log(np.exp(logits - logits.max(1, keepdims=True)).sum(1,
                                  keepdims=True)) - logits.max(1, keepdims=True)
    loss, correct = model(tf.constant(x), tf.constant(y, tf.int64), training=False)
    np.testing.assert_allclose(loss.numpy(), -log_softmax[np.arange(6), y].sum(), rtol=1e-4)
    assert correct.numpy() == np.sum(logits.argmax(1) == y)


def test_conv_bn_runs_conv_then_dropout_then_batchnorm_then_relu():
    """Training mode on a tiny input, with the dropout mask drawn from the layer's own key:
    relu(BN_batch(dropout(conv(x)))) computed in numpy; any other order gives other numbers."""
    rng = np.random.default_rng(2)
    layer = ConvBN(4, dropout=0.3, seed=7)
    x = rng.normal(size=(2, 6, 6, 3)).astype(np.float32)
    layer(tf.constant(x))  # build
    kernel = layer.conv.kernel.numpy()
    out = layer(tf.constant(x), training=True).numpy()
    conv = _conv3x3(x.astype(np.float64), kernel)
    keep = tf.random.stateless_uniform(conv.shape, tf.constant([layer.drop.key, 1], tf.int64)).numpy() >= 0.3
    dropped = np.where(keep, conv / 0.7, 0)
    mean, var = dropped.mean(axis=(0, 1, 2)), dropped.var(axis=(0, 1, 2))
    expected = np.maximum((dropped - mean) / np.sqrt(var + 1e-5), 0)  # gamma 1, beta 0
    np.testing.assert_allclose(out, expected, rtol=1e-3, atol=1e-4)
    assert (out == 0).mean() > 0.3  # the ReLU is last: about half the outputs are 0


def test_batchnorm_momentum_and_epsilon_are_the_seeds():
    rng = np.random.default_rng(3)
    layer = ConvBN(4, dropout=0.0)
    x = rng.normal(size=(4, 5, 5, 3)).astype(np.float32)
    layer(tf.constant(x))
    assert layer.bn.momentum == 0.9 and layer.bn.epsilon == 1e-5
    conv = _conv3x3(x.astype(np.float64), layer.conv.kernel.numpy())
    layer(tf.constant(x), training=True)
    # moving = 0.9 * moving + 0.1 * batch statistic (variance with Bessel's n/(n-1))
    n = conv.shape[0] * conv.shape[1] * conv.shape[2]
    np.testing.assert_allclose(layer.bn.moving_mean.numpy(), 0.1 * conv.mean(axis=(0, 1, 2)),
                               rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(layer.bn.moving_variance.numpy(),
                               0.9 + 0.1 * conv.var(axis=(0, 1, 2)) * n / (n - 1), rtol=1e-4)


def test_dropout_drops_at_the_seeds_rate_and_scales_by_one_over_keep():
    drop = StatelessDropout(0.05, key=123)
    ones = tf.ones([64, 32, 32, 8])
    drop(ones)
    out = drop(ones, training=True).numpy()
    assert abs((out == 0).mean() - 0.05) < 0.003  # 524,288 draws: the rate within 3 sigma
    np.testing.assert_array_equal(np.unique(out), np.array([0, 1 / 0.95], np.float32))
    np.testing.assert_array_equal(drop(ones, training=False).numpy(), ones.numpy())
    model = DavidNet(c=2)
    assert {layer.rate for layer in model.submodules if isinstance(layer, StatelessDropout)} == {0.05}


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


def test_logits_are_float32_under_half_precision_and_float64_in_float64():
    """Half-precision policies hand the loss float32 logits (softmax needs the range); a
    float64 model keeps float64 to the end, which the XLA step test relies on."""
    x = tf.zeros([2, 32, 32, 3])
    for dtype, expected in [("mixed_bfloat16", tf.float32), ("mixed_float16", tf.float32),
                            (None, tf.float32), ("float64", tf.float64)]:
        model = build(DavidNet(c=2, dtype=dtype))
        assert model.logits(x).dtype == expected, dtype
        assert model(x, tf.zeros([2], tf.int64))[0].dtype == expected, dtype
