"""The seed's one-cycle learning-rate schedule, framework-free.

Units: `t` is in epochs (global_step / batches_per_epoch); the value is the
learning rate *per batch*, before the seed divides it by the batch size (its loss
is a sum over the batch, so lr / BATCH_SIZE is the per-example step size).
"""
import numpy as np


def schedule_knots(epochs, learning_rate):
    """Knots of the seed's piecewise-linear schedule: up for (EPOCHS+1)//5 epochs, then down.

    With fewer than 4 epochs the warm-up knot is 0, so the schedule starts at its peak
    (np.interp takes the right-hand value at a repeated knot).
    """
    return [0, (epochs + 1) // 5, epochs], [0, learning_rate, 0]


def lr_schedule(t, epochs, learning_rate):
    """The seed's `lr_schedule` (np.interp), usable on a float or an eager tensor."""
    xp, fp = schedule_knots(epochs, learning_rate)
    return np.interp([t], xp, fp)[0]
