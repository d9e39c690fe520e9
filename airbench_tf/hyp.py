"""airbench94's hyperparameters, each with its unit, and the formulas that turn them into
step sizes, the schedule and the lookahead-EMA decay. Framework-free (numpy).

Figures from airbench94.py (KellerJordan/cifar10-airbench). The learning rate and weight
decay are "decoupled": lr is per 1024 examples and divided by the Nesterov momentum's
gain, so that the average step does not change with the momentum; weight decay is per
1024 examples and does not change with the learning rate.
"""
import math
from typing import NamedTuple

import numpy as np

from legacy_eager.tta import View

EPOCHS = 9.9              # training length in epochs; the last one is cut short
BATCH_SIZE = 1024
LR = 11.5                 # learning rate per 1024 examples (decoupled from the momentum)
MOMENTUM = 0.85           # Nesterov
WEIGHT_DECAY = 0.0153     # per 1024 examples, decoupled from the learning rate
BIAS_SCALER = 64.0        # BatchNorm biases: 64x the learning rate, the same weight decay
LABEL_SMOOTHING = 0.2
SCHEDULE = (0.2, 0.23, 0.07)  # triangle: starts at 0.2 x, peaks 1 x at 23% of the steps, ends 0.07 x
EMA_START_EPOCHS = 3      # lookahead EMA from the 4th epoch (index 3) on
EMA_EVERY_N_STEPS = 5
EMA_DECAY_BASE = 0.95     # per step; decay = 0.95**5 * (step / total steps)**3
EMA_DECAY_POW = 3.0
WHITEN_BIAS_EPOCHS = 3    # the whitening layer's bias trains in epochs 0..2, then is frozen
WHITEN_IMAGES = 5000      # training images whose 2x2 patches set the whitening filters
WHITEN_EPS = 5e-4         # added to the patch covariance's eigenvalues
TRANSLATE = 2             # random translation of up to +-2 pixels (reflect padding)
BN_MOMENTUM = 0.6         # running = 0.6 running + 0.4 batch (PyTorch's momentum=0.4)
BN_EPS = 1e-12
WIDTHS = (64, 256, 256)   # the three conv groups
SCALING_FACTOR = 1 / 9    # logits = linear(features) / 9
TTA_LEVEL = 2

# airbench94's test-time augmentation levels: 0 none, 1 mirror, 2 mirror and 1-pixel
# translations up-left and down-right (reflect padded). Level 2 weights: the image and its
# mirror 1/4 each, each translated view 1/8 (0.5 * mirror(x) + 0.5 * mean of the mirrors of
# the two translations).
TTA_VIEWS = {
    0: (View(1.0),),
    1: (View(0.5), View(0.5, flip=True)),
    2: (View(0.25), View(0.25, flip=True),
        View(0.125, dy=-1, dx=-1), View(0.125, flip=True, dy=-1, dx=-1),
        View(0.125, dy=1, dx=1), View(0.125, flip=True, dy=1, dx=1)),
}


class StepSizes(NamedTuple):
    """What an SGD step uses (before the schedule's factor): the learning rate of the
    summed loss for most weights and for BatchNorm biases, and lr x weight decay, which is
    the same for both (so BatchNorm biases decay no faster)."""
    lr: float
    lr_bias: float
    decay: float   # lr_group * wd_group: the step shrinks each weight by about decay * w


def step_sizes(lr=LR, momentum=MOMENTUM, weight_decay=WEIGHT_DECAY, batch_size=BATCH_SIZE):
    """airbench94's decoupled figures as plain Nesterov SGD on the summed loss: with
    constant gradients Nesterov's step is 1 + 1/(1 - momentum) gradients long, so lr is
    divided by 1024 x that; weight decay is per 1024 examples, so x batch size."""
    kilostep_scale = 1024 * (1 + 1 / (1 - momentum))
    lr_sgd = lr / kilostep_scale
    return StepSizes(lr_sgd, lr_sgd * BIAS_SCALER, weight_decay * batch_size / kilostep_scale)


def steps_per_epoch(len_train, batch_size):
    """Full batches only: airbench drops the last partial batch."""
    return len_train // batch_size


def total_steps(len_train, batch_size, epochs):
    return math.ceil(steps_per_epoch(len_train, batch_size) * epochs)


def epochs_to_run(epochs):
    """Epoch loops, the last cut short at total_steps (9.9 -> 10)."""
    return math.ceil(epochs)


def triangle(steps, start=SCHEDULE[0], peak=SCHEDULE[1], end=SCHEDULE[2]):
    """The learning-rate factor for steps 0..steps (steps + 1 values): linear from `start`
    at 0 to 1 at int(peak * steps), then to `end` at `steps`."""
    xp = [0, int(peak * steps), steps]
    x = np.arange(steps + 1)
    return np.interp(x, xp, [start, 1.0, end]) if xp[1] > 0 else np.interp(
        x, xp[1:], [1.0, end])


def ema_decay(step, total):
    """The lookahead EMA's decay at global step `step` (1-based: steps done), warmed up
    from 0 toward 0.95**5 as training ends."""
    return EMA_DECAY_BASE ** EMA_EVERY_N_STEPS * (step / total) ** EMA_DECAY_POW


def ema_due(epoch, step):
    """Whether the lookahead EMA acts after global step `step` (1-based) of 0-based
    `epoch`."""
    return epoch >= EMA_START_EPOCHS and step % EMA_EVERY_N_STEPS == 0
