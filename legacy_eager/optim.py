"""The seed's optimizer pieces: compat.v1 MomentumOptimizer, global step, LR function,
and the manual weight-decay loop (both the seed's literal loop and the one it intends).
"""
import tensorflow as tf

from legacy_eager.schedule import lr_schedule, schedule_knots


def lr_schedule_tf(t, epochs, learning_rate):
    """`lr_schedule` in TF ops, for `tf.function`, where np.interp cannot take a symbolic
    tensor. Same formula as np.interp: the last knot xp[j] <= t, then
    fp[j] + slope * (t - xp[j]), clamped to the end values outside the knots."""
    knots, values = schedule_knots(epochs, learning_rate)
    xp, fp = tf.constant(knots, tf.float64), tf.constant(values, tf.float64)
    t = tf.cast(t, tf.float64)
    # Index of the last knot <= t (a count, which XLA compiles; searchsorted it does not).
    j = tf.reduce_sum(tf.cast(xp <= t, tf.int32)) - 1
    j = tf.clip_by_value(j, 0, len(knots) - 2)
    slope = tf.math.divide_no_nan(fp[j + 1] - fp[j], xp[j + 1] - xp[j])
    inside = fp[j] + slope * (t - xp[j])
    return tf.where(t < xp[0], fp[0], tf.where(t >= xp[-1], fp[-1], inside))


def make_lr_func(global_step, batches_per_epoch, epochs, learning_rate, batch_size, mode):
    """The seed's `lr_func`: lr_schedule(global_step / batches_per_epoch) / BATCH_SIZE.
    Eager mode keeps the seed's np.interp verbatim; compiled modes use the TF-op twin."""
    if mode == "eager":
        return lambda: lr_schedule(global_step / batches_per_epoch, epochs, learning_rate) / batch_size
    return lambda: lr_schedule_tf(tf.cast(global_step, tf.float64) / batches_per_epoch,
                                  epochs, learning_rate) / batch_size


def make_global_step():
    """The seed's `tf.train.get_or_create_global_step()`, with two changes.

    Each run gets its own: the collection the step lives in is keyed by graph, so a fresh
    (otherwise unused) graph keeps two runs in one process (tests, benchmarks) from sharing
    one counter. And the step lives where the optimizer updates it: TF's eager
    `create_global_step` pins it to CPU:0, so on a GPU every compiled step would read and
    increment a host variable, which an XLA-compiled step cannot do (its variables must be
    on the device it runs on). Made here on the current device (the model's), put in the
    graph's GLOBAL_STEP collection, and then fetched by the seed's own call."""
    graph = tf.Graph()
    step = tf.Variable(0, dtype=tf.int64, trainable=False, name="global_step",
                       aggregation=tf.VariableAggregation.ONLY_FIRST_REPLICA)
    graph.add_to_collection(tf.compat.v1.GraphKeys.GLOBAL_STEP, step)
    return tf.compat.v1.train.get_or_create_global_step(graph=graph)


def make_optimizer(lr_func, momentum):
    return tf.compat.v1.train.MomentumOptimizer(lr_func, momentum=momentum, use_nesterov=True)


def seed_weight_decay_loop(grads, var, weight_decay, batch_size):
    """The seed's loop, verbatim. `g += ...` rebinds the loop variable to a new tensor
    (TF tensors are immutable), so `grads` comes back unchanged: the seed trained with
    no weight decay at all."""
    for g, v in zip(grads, var):
        g += v * weight_decay * batch_size
    return grads


def intended_weight_decay(grads, var, weight_decay, batch_size):
    """What the seed's loop means (and Page's recipe does): g + v * wd * BATCH_SIZE.
    Times BATCH_SIZE because the loss is a sum over the batch and lr is divided by it."""
    return [g + v * weight_decay * batch_size for g, v in zip(grads, var)]


WEIGHT_DECAY_LOOPS = {"intended": intended_weight_decay, "seed": seed_weight_decay_loop}
