"""airbench94's training state and epochs, with the interface legacy_eager.loop.fit drives
(the same run folder, checkpoints, resume, signals and divergence checks as the seed's
Trainer): network, NesterovSGD and its buffers, the lookahead EMA, the global step and the
Progress, all in one tf.train.Checkpoint.

An epoch, as airbench94's main(): the whitening bias trains only in epochs 0..2; after
each step, from epoch 3 on, every 5th global step the lookahead EMA acts; the last epoch
stops at total_steps (ceil(steps per epoch x epochs)); an epoch that ends with the EMA
started copies the EMA back into the network. Evaluation each epoch is plain; the last
epoch's also runs the TTA (level 2), as airbench94 does once at the end.
"""
import time

import numpy as np
import tensorflow as tf
from tqdm import tqdm

from airbench_tf import hyp
from airbench_tf.augment import AlternatingFlipBatches
from airbench_tf.model import Airbench94, build, smoothed_loss_and_correct, tta_logits
from airbench_tf.optim import Lookahead, NesterovSGD
from airbench_tf.whitening import whitening_kernel
from legacy_eager.input_pipeline import fast_test_set, normalize
from legacy_eager.trainer import (POLICIES, EvalSums, NonfiniteChecks, Progress, TrainSums,
                                  variable_paths)

_IMAGES = tf.TensorSpec([None, 32, 32, 3], tf.float32)
_LABELS = tf.TensorSpec([None], tf.int64)


def whitening_images(x_train, mean, std, seed):
    """The normalised images that set the whitening filters: WHITEN_IMAGES drawn at random
    with --seed (airbench94 takes the first 5,000 of its file, which is in random order;
    the image-folder copies list theirs class by class)."""
    rng = np.random.default_rng([seed, 5000])
    n = min(hyp.WHITEN_IMAGES, len(x_train))
    idx = np.sort(rng.choice(len(x_train), n, replace=False))
    return normalize(x_train[idx], mean, std)


class Trainer(NonfiniteChecks):
    lr_unit = "per 1024 examples"  # what lr_at_step's rate is per: airbench94's step sizes are

    def __init__(self, config, len_train, whiten_images=None, model=None):
        self.config = config
        self.steps_per_epoch = hyp.steps_per_epoch(len_train, config.batch_size)
        self.batches_per_epoch = self.steps_per_epoch
        self.total_steps = hyp.total_steps(len_train, config.batch_size, config.epochs)
        self.epochs = hyp.epochs_to_run(config.epochs)
        self.model = build(model or Airbench94(dtype=POLICIES[config.precision]))
        self.whitening_s = 0.0
        if whiten_images is not None:
            t = time.time()
            self.model.whiten.set_filters(whitening_kernel(whiten_images))
            self.whitening_s = time.time() - t
        self.sizes = hyp.step_sizes(config.lr, config.momentum, config.weight_decay,
                                    config.batch_size)
        self.schedule = hyp.triangle(self.total_steps)
        self.global_step = tf.Variable(0, dtype=tf.int64, trainable=False, name="global_step")
        biases = {v.ref() for v in self.model.norm_biases()}
        variables = self.model.trainable_variables
        self.whiten_bias_trains = tf.Variable(True, trainable=False)
        self.opt = NesterovSGD(
            variables, [self.sizes.lr_bias if v.ref() in biases else self.sizes.lr
                        for v in variables],
            self.sizes.decay, config.momentum, self.schedule, self.global_step,
            frozen=(self.model.whiten.bias, self.whiten_bias_trains))
        self.lookahead = Lookahead([v for v in self.model.weights if v.dtype.is_floating])
        self.first_nonfinite_step = tf.Variable(-1, dtype=tf.int64, trainable=False)
        self.progress = Progress()
        self.checkpoint = tf.train.Checkpoint(model=self.model, optimizer=self.opt,
                                              lookahead=self.lookahead,
                                              global_step=self.global_step,
                                              progress=self.progress)
        jit = config.mode == "xla"
        self.train_step = tf.function(self._train_step, input_signature=[_IMAGES, _LABELS],
                                      jit_compile=jit)
        self.eval_step = tf.function(self._eval_step, input_signature=[_IMAGES, _LABELS],
                                     jit_compile=jit)
        self.tta_step = tf.function(self._tta_step, input_signature=[_IMAGES, _LABELS],
                                    jit_compile=jit)
        self._ema_start = tf.function(self.lookahead.start)
        self._ema_update = tf.function(self.lookahead.update)

    # ------------------------------------------------------------------ the steps
    def _train_step(self, x, y):
        with tf.GradientTape() as tape:
            loss, correct = smoothed_loss_and_correct(self.model.logits(x, training=True), y)
        first = self.first_nonfinite_step
        first.assign(tf.where((first < 0) & ~tf.math.is_finite(loss), self.global_step, first))
        self.opt.apply(tape.gradient(loss, self.opt.params))
        return loss, correct

    def _eval_step(self, x, y):
        return smoothed_loss_and_correct(self.model.logits(x, training=False), y)

    def _tta_step(self, x, y):
        return smoothed_loss_and_correct(tta_logits(self.model, x), y)

    # ------------------------------------------------------------------ the epochs
    def steps_in_epoch(self, epoch):
        """Steps of 0-based `epoch` (the last is cut at total_steps)."""
        return max(0, min(self.steps_per_epoch, self.total_steps - epoch * self.steps_per_epoch))

    def images_trained(self, epoch, len_train):
        return self.steps_in_epoch(epoch) * self.config.batch_size

    def lr_at_step(self, step):
        """The learning rate per 1024 examples at global step `step` (lr x the schedule)."""
        return self.config.lr * float(self.schedule[min(int(step), self.total_steps)])

    def epoch_end_lr(self, epoch):
        """lr_at_step of the last step of 1-based `epoch`."""
        return self.lr_at_step(min(epoch * self.steps_per_epoch, self.total_steps) - 1)

    def train_epoch(self, batches, desc=None, total=None, should_stop=None):
        """TrainSums over `batches`, from where the global step stands; stops after a whole
        step once should_stop() is true."""
        step = int(self.global_step.numpy())
        epoch = step // self.steps_per_epoch
        self.whiten_bias_trains.assign(epoch < hyp.WHITEN_BIAS_EPOCHS)
        batches = tqdm(batches, total=self.steps_in_epoch(epoch) if total is None else total,
                       desc=desc, leave=False, unit="batch")
        loss_sum, correct_sum, n, per_image = 0.0, 0.0, 0, []
        for x, y in batches:
            loss, correct = self.train_step(x, y)
            # float64 sums, as the seed's Trainer: a resumed epoch adds its two parts and
            # must come to the same figure as the epoch run whole
            loss_sum = loss_sum + tf.cast(loss, tf.float64)
            correct_sum = correct_sum + tf.cast(correct, tf.float64)
            per_image.append(loss / int(x.shape[0]))
            n, step = n + 1, step + 1
            if hyp.ema_due(epoch, step):
                if not bool(self.lookahead.started.numpy()):
                    self._ema_start()
                else:
                    self._ema_update(tf.constant(hyp.ema_decay(step, self.total_steps), tf.float32))
            if should_stop is not None and should_stop():
                break
        ended = step == min((epoch + 1) * self.steps_per_epoch, self.total_steps)
        if ended and bool(self.lookahead.started.numpy()):
            self._ema_update(tf.constant(1.0))  # the network takes the EMA's weights
        return TrainSums(float(loss_sum), float(correct_sum), n, per_image)

    def evaluate(self, test_set, final=False):
        """EvalSums over the test set; the TTA figures only when `final` (else None)."""
        plain = self._sum(self.eval_step, test_set)
        tta = self._sum(self.tta_step, test_set) if final else (None, None)
        return EvalSums(*plain, *tta)

    @staticmethod
    def _sum(step, batches):
        loss, correct = 0.0, 0.0
        for x, y in batches:
            l, c = step(x, y)
            loss, correct = loss + tf.cast(l, tf.float64), correct + tf.cast(c, tf.float64)
        return float(loss), float(correct)

    # ------------------------------------------------------------------ divergence
    def lr_words(self, step):
        return f"{self.lr_at_step(step):.6g} {self.lr_unit}"

    def checkpointed_variables(self):
        path = variable_paths(self.model, "model")
        named = [(path.get(id(v), v.name), v) for v in self.model.weights]
        named += [(f"momentum buffer of {path.get(id(v), v.name)}", s)
                  for v, s in zip(self.opt.params, self.opt.slots)]
        named += [(f"lookahead EMA of {path.get(id(v), v.name)}", e)
                  for v, e in zip(self.lookahead.params, self.lookahead.ema)]
        return [(n, v) for n, v in named if v.dtype.is_floating]


def make_sets(config, x_train, y_train, x_test, y_test, mean, std, total_steps):
    """(training batches, test batches) of the run."""
    train = AlternatingFlipBatches(x_train, y_train, mean, std, config.batch_size,
                                   seed=config.seed, total_steps=total_steps)
    return train, fast_test_set(x_test, y_test, mean, std, config.batch_size)
