"""The training state of the seed's sections 8 and 9: model, global step, lr_func,
optimizer (and its momentum slots), the weight-decay loop, the loss scale for float16,
and where an interrupted epoch stands; all of it in one tf.train.Checkpoint. Its
`train_epoch` and `evaluate` sum the steps (legacy_eager.steps) over batches.

Compiled modes keep the loss and accuracy sums on the device and read them once an
epoch; eager mode reads them every step, as the seed does.
"""
import functools
import math

from typing import NamedTuple

import tensorflow as tf
from tqdm import tqdm

from legacy_eager import steps
from legacy_eager.errors import UserFacingError
from legacy_eager.loss_scale import LossScale
from legacy_eager.model import DavidNet, build
from legacy_eager.optim import (WEIGHT_DECAY_LOOPS, make_global_step, make_lr_func,
                                make_optimizer)
from legacy_eager.schedule import lr_schedule

POLICIES = {"fp32": None, "mixed_float16": "mixed_float16", "mixed_bfloat16": "mixed_bfloat16"}


class Diverged(UserFacingError):
    """A loss, variable or val_loss is not finite: exit 3, nothing saved."""

    exit_code = 3


class Progress(tf.Module):
    """Where the run stands, saved in every checkpoint with the weights it belongs to:
    completed epochs, batches done in the current epoch, and that epoch's partial sums."""

    def __init__(self):
        super().__init__()
        self.epoch = tf.Variable(0, dtype=tf.int64, trainable=False)
        self.batch = tf.Variable(0, dtype=tf.int64, trainable=False)
        self.loss_sum = tf.Variable(0.0, dtype=tf.float64, trainable=False)
        self.correct_sum = tf.Variable(0.0, dtype=tf.float64, trainable=False)
        self.train_time = tf.Variable(0.0, dtype=tf.float64, trainable=False)
        self.elapsed = tf.Variable(0.0, dtype=tf.float64, trainable=False)

    def set(self, **values):
        for name, value in values.items():
            getattr(self, name).assign(value)


def variable_paths(obj, prefix, paths=None):
    """{id(variable): "model/blk2/conv_bn/bn/moving_variance"}: the attribute path, which
    is also the variable's key in the checkpoint (Keras' own names get _1, _2 suffixes)."""
    paths = {} if paths is None else paths
    for attr, value in vars(obj).items():
        if attr.startswith("_"):
            continue
        if isinstance(value, tf.Variable):
            paths.setdefault(id(value), f"{prefix}/{attr}")
        elif isinstance(value, tf.Module):
            variable_paths(value, f"{prefix}/{attr}", paths)
    return paths


class TrainSums(NamedTuple):
    """An epoch's training, summed: the seed's train_loss and train_acc before division."""
    loss: float          # summed cross-entropy
    correct: float       # images classified right
    batches: int         # steps that ran (fewer when a signal stopped the epoch)
    step_losses: list    # each step's loss per image (device tensors, read once)


class EvalSums(NamedTuple):
    """The test set, summed: the seed's test_loss and test_acc before division, and the
    same with flip TTA."""
    loss: float
    correct: float
    loss_tta: float
    correct_tta: float


class NonfiniteChecks:
    """What is not finite in a trainer, for loop.fit's divergence check. The trainer has
    first_nonfinite_step (a variable its train step sets), steps_per_epoch,
    checkpointed_variables() and lr_words(step)."""

    def divergence(self, epoch, val_loss=None, variables=True):
        """What is not finite, in words, or None: the first step's loss, else the first
        checkpointed variable (unless variables=False), else val_loss. `epoch` (1-based)
        is the one just trained."""
        step = int(self.first_nonfinite_step.numpy())
        if step >= 0:
            return (f"loss is not finite at global step {step} (epoch "
                    f"{step // self.steps_per_epoch + 1}, learning rate {self.lr_words(step)})")
        name = self.first_nonfinite_variable() if variables else None
        if name is not None:
            return f"variable {name} is not finite in epoch {epoch}"
        if val_loss is not None and not math.isfinite(val_loss):
            return f"val_loss is {val_loss} after epoch {epoch}"
        return None

    def first_nonfinite_variable(self):
        """Name of the first checkpointed variable holding a NaN or infinity, or None.
        One compiled pass on the device; one small read back."""
        if not hasattr(self, "_finite_flags"):
            variables = [v for _, v in self.checkpointed_variables()]
            self._finite_flags = tf.function(lambda: tf.stack(
                [tf.reduce_all(tf.math.is_finite(v)) for v in variables]))
        flags = self._finite_flags().numpy()
        names = [n for n, _ in self.checkpointed_variables()]
        return next((n for n, ok in zip(names, flags) if not ok), None)


class Trainer(NonfiniteChecks):
    lr_unit = "per batch"  # what lr_at_step's rate is per, as the rows and curves give it

    def __init__(self, config, len_train, model=None, strategy=None):
        self.config = config
        # A tf.distribute strategy spreads each global batch over its replicas; without
        # one, TF's default strategy is a no-op and the step is the seed's, unchanged.
        self.strategy = strategy or tf.distribute.get_strategy()
        self.replicas = self.strategy.num_replicas_in_sync
        with self.strategy.scope():
            self._build(config, len_train, model)
        self.train_step = steps.compiled(steps.train_step(self), config.mode, self.strategy)
        self.eval_step = steps.compiled(steps.eval_step(self), config.mode, self.strategy)

    def _build(self, config, len_train, model):
        if model is None:
            model = DavidNet(c=config.width, dropout=config.dropout,
                             dtype=POLICIES[config.precision], seed=config.seed)
        self.model = build(model)
        # The seed's +1: one more than the full batches, which counts the last partial
        # batch, and overcounts by one when len_train is a multiple of the batch size.
        self.batches_per_epoch = len_train // config.batch_size + 1
        self.steps_per_epoch = -(-len_train // config.batch_size)  # what the data yields
        self.epochs = config.epochs
        self.global_step = make_global_step()
        lr_func = make_lr_func(self.global_step, self.batches_per_epoch, config.epochs,
                               config.lr, config.batch_size, config.mode)
        self.opt = make_optimizer(lr_func, config.momentum)
        # Slots now rather than at the first step, so that a checkpoint restores into them
        # at once and a damaged one is noticed at restore time. (apply_gradients creates
        # them the same way, under init_scope.)
        with tf.init_scope():
            self.opt._create_slots(self.model.trainable_variables)
        # Global step of the first non-finite loss (-1: none yet), set on the device so
        # that the loop need not read the loss every step.
        self.first_nonfinite_step = tf.Variable(
            -1, dtype=tf.int64, trainable=False,
            aggregation=tf.VariableAggregation.ONLY_FIRST_REPLICA)
        self.progress = Progress()
        # Replicas' gradients are summed, so each adds 1/replicas of the decay.
        self.weight_decay_loop = functools.partial(
            WEIGHT_DECAY_LOOPS[config.wd_loop], weight_decay=config.weight_decay,
            batch_size=config.batch_size / self.replicas)
        self.loss_scale = LossScale(config.batch_size) if config.precision == "mixed_float16" else None
        self.checkpoint = tf.train.Checkpoint(model=self.model, optimizer=self.opt,
                                              global_step=self.global_step, progress=self.progress)
        if self.loss_scale is not None:
            self.checkpoint.loss_scale = self.loss_scale

    def steps_in_epoch(self, epoch):
        return self.steps_per_epoch

    def images_trained(self, epoch, len_train):
        return len_train

    def lr_at_step(self, step):
        """The learning rate per batch at global step `step`, as the console prints it."""
        return lr_schedule(step / self.batches_per_epoch, self.config.epochs, self.config.lr)

    def epoch_end_lr(self, epoch):
        """The seed prints lr_schedule(epoch+1): the schedule at the epoch's end, per batch."""
        return lr_schedule(epoch, self.config.epochs, self.config.lr)

    def note_nonfinite(self, loss):
        first = self.first_nonfinite_step
        first.assign(tf.where((first < 0) & ~tf.math.is_finite(loss), self.global_step, first))

    def lr_words(self, step):
        """The learning rate at global step `step`, in a divergence message's words."""
        lr = self.lr_at_step(step)
        return f"{lr:.6g} {self.lr_unit}, {lr / self.config.batch_size:.6g} per example"

    def checkpointed_variables(self):
        """(name, variable) of every float variable a checkpoint holds: weights, BatchNorm
        moving statistics, momentum slots, the loss scale."""
        path = variable_paths(self.model, "model")
        named = [(path.get(id(v), v.name), v) for v in self.model.weights]
        named += [(f"momentum slot of {path.get(id(v), v.name)}", self.opt.get_slot(v, "momentum"))
                  for v in self.model.trainable_variables]
        if self.loss_scale is not None:
            named.append(("loss scale", self.loss_scale.scale))
        return [(n, v) for n, v in named if v.dtype.is_floating]

    def train_epoch(self, batches, desc=None, total=None, should_stop=None):
        """TrainSums over `batches`; stops early, after a whole step, once should_stop() is
        true."""
        batches = tqdm(batches, total=self.steps_per_epoch if total is None else total, desc=desc,
                       leave=False, unit="batch")
        sums, n, step_losses = self._sum(self.train_step, batches, should_stop)
        return TrainSums(sums[0], sums[1], n, step_losses)

    def evaluate(self, test_set, final=False):
        """EvalSums over the test set (flip TTA every epoch, final or not)."""
        self.sync_replica_statistics()
        return EvalSums(*self._sum(self.eval_step, test_set)[0])

    def sync_replica_statistics(self):
        """Give every replica the mean of the replicas' BatchNorm moving statistics.

        Keras keeps them per replica (ON_READ variables); checkpoints and exports store their
        mean. Without this, evaluation on several replicas would use each replica's own
        statistics and report a val_acc the exported model does not have."""
        if self.replicas == 1:
            return
        with self.strategy.scope():
            for v in self.model.non_trainable_variables:
                if v.synchronization == tf.VariableSynchronization.ON_READ:
                    v.assign(v.read_value())

    def _sum(self, step, batches, should_stop=None):
        """The step's outputs summed over the batches, the number of batches, and the first
        output per image of each step."""
        eager = self.config.mode == "eager"  # the seed: a host read after every step
        totals, n, per_image = None, 0, []
        for (x, y) in batches:  # compiled: sums stay on the device, no wait for the host
            outputs = step(x, y)
            if eager:
                outputs = [o.numpy() for o in outputs]
            else:
                outputs = [tf.cast(o, tf.float64) for o in outputs]
            totals = outputs if totals is None else [t + o for t, o in zip(totals, outputs)]
            per_image.append(outputs[0] / int(x.shape[0]))
            n += 1
            if should_stop is not None and should_stop():
                break
        if totals is None:
            return (0.0, 0.0, 0.0, 0.0), 0, []
        return tuple(float(t) for t in totals), n, per_image
