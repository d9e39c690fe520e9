"""airbench94's optimizer and its lookahead EMA, as TensorFlow variables so that a
checkpoint holds them.

NesterovSGD is torch.optim.SGD(nesterov=True, dampening 0) with the weight decay added to
the gradient, as airbench94 configures it: per variable a learning rate L (StepSizes.lr, or
lr_bias for BatchNorm biases) and a weight decay decay / L, both times the schedule's factor
s at this step:

    g = grad + (decay / L) * w;   buf = momentum * buf + g;   w -= s * L * (g + momentum * buf)

(torch starts buf at the first g, which is the same as starting it at zero.) A variable
whose `trains` flag is false is left alone, buffer included, as torch leaves a parameter
without a gradient (the whitening bias after its first epochs).

Lookahead: every 5 steps from epoch 3 on, ema = decay * ema + (1 - decay) * w and then
w = ema, over every float weight of the network, BatchNorm moving statistics included (as
airbench94's state_dict); the first time only copies w into ema.
"""
import tensorflow as tf


class NesterovSGD(tf.Module):
    def __init__(self, variables, lrs, decay, momentum, schedule, global_step, frozen=None):
        """variables and their base learning rates (lrs); schedule: the factor at each
        global step (a numpy array of total_steps + 1 values); frozen: (variable, bool
        tf.Variable that says whether it trains), for the one that can be frozen."""
        super().__init__()
        self.params = list(variables)
        self.lrs, self.decay, self.momentum = [float(lr) for lr in lrs], float(decay), float(momentum)
        self.schedule = tf.constant(schedule, tf.float32)
        self.global_step = global_step
        # (position, flag): plain values, as a checkpoint tracks the attributes of a Module
        self.frozen_at = -1 if frozen is None else [v is frozen[0] for v in self.params].index(True)
        self.trains = None if frozen is None else frozen[1]
        with tf.init_scope():
            self.slots = [tf.Variable(tf.zeros_like(v), trainable=False) for v in self.params]

    def get_slot(self, variable, name):
        assert name == "momentum", name
        return next(s for v, s in zip(self.params, self.slots) if v is variable)

    def factor(self, step=None):
        """The schedule's factor at `step` (default: the global step)."""
        step = self.global_step if step is None else step
        last = self.schedule.shape[0] - 1
        return self.schedule[tf.minimum(tf.cast(step, tf.int32), last)]

    def apply(self, grads):
        s, m = self.factor(), self.momentum
        for i, (v, g, buf, lr) in enumerate(zip(self.params, grads, self.slots, self.lrs)):
            g = tf.cast(g, v.dtype) + (self.decay / lr) * v
            new_buf = m * buf + g
            new_v = v - s * lr * (g + m * new_buf)
            if i == self.frozen_at:
                new_buf, new_v = tf.where(self.trains, new_buf, buf), tf.where(self.trains, new_v, v)
            buf.assign(new_buf)
            v.assign(new_v)
        self.global_step.assign_add(1)


class Lookahead(tf.Module):
    def __init__(self, variables):
        super().__init__()
        self.params = list(variables)
        with tf.init_scope():
            self.ema = [tf.Variable(v.read_value(), trainable=False) for v in self.params]
            self.started = tf.Variable(False, trainable=False)

    def start(self):
        for e, v in zip(self.ema, self.params):
            e.assign(v)
        self.started.assign(True)

    def update(self, decay):
        """ema = decay * ema + (1 - decay) * w (torch's lerp), then w = ema."""
        decay = tf.cast(decay, tf.float32)
        for e, v in zip(self.ema, self.params):
            e.assign(e + (1 - decay) * (v - e))
            v.assign(e)
