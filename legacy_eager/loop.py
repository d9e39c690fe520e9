"""The seed's epoch loop, resumable: train, check, evaluate, log, checkpoint.

Each epoch ends with a JSON line and a checkpoint, in that order, and only when nothing
has diverged: the training loss, every checkpointed variable and val_loss must be finite,
else the run stops with exit 3 and keeps its last good checkpoint. SIGINT and SIGTERM
finish the current step, save a checkpoint (if finite) and stop with 130 or 143.
"""
import signal
import time

from legacy_eager import checkpoints, report
from legacy_eager.errors import Stopped
from legacy_eager.input_pipeline import epoch_batches
from legacy_eager.trainer import Diverged


def signal_name(signum):
    return signal.Signals(signum).name


def epoch_record(epoch, *, lr, train_loss, train_correct, trained, test, len_test,
                 train_time, eval_time, elapsed, global_step):
    """The epoch's line: the seed's printed numbers, TTA, timings and the step.
    lr: the trainer's at the epoch's end (the seed prints lr_schedule(epoch+1), per batch);
    train_loss and train_correct are sums over the `trained` images of the epoch; `test` is
    the EvalSums (without TTA figures, none are written)."""
    record = {
        "epoch": epoch, "lr": float(lr),
        "train_loss": train_loss / trained, "train_acc": train_correct / trained,
        "val_loss": test.loss / len_test, "val_acc": test.correct / len_test,
        "train_time_s": train_time, "eval_time_s": eval_time,
        "epoch_time_s": train_time + eval_time, "elapsed_s": elapsed,
        "images_per_s": trained / train_time,
        "global_step": global_step,
    }
    if test.loss_tta is not None:
        record.update(val_loss_tta=test.loss_tta / len_test, val_acc_tta=test.correct_tta / len_test)
    return record


class _Saver:
    """Checkpoints, each only after checking that nothing it would keep has diverged."""

    def __init__(self, trainer, out_dir):
        self.trainer, self.manager = trainer, checkpoints.manager(trainer, out_dir)
        self._finite_at_step = None  # global step at which the variables were last found finite

    def check_finite(self, epoch, val_loss=None):
        """Exit 3, saving nothing, if anything that a checkpoint would keep diverged.
        The pass over the variables runs once per global step: only training steps change
        them (evaluation reads BatchNorm's moving statistics, it does not update them)."""
        step = int(self.trainer.global_step.numpy())
        problem = self.trainer.divergence(epoch, val_loss,
                                          variables=step != self._finite_at_step)
        if problem is not None:
            kept = self.manager.latest_checkpoint
            raise Diverged(f"{problem}; stopped without saving; the last good checkpoint is "
                           f"{kept or 'none (no epoch had finished)'}")
        self._finite_at_step = step

    def save(self, epoch, val_loss=None):
        self.check_finite(epoch, val_loss)
        self.manager.save(checkpoint_number=int(self.trainer.global_step.numpy()))


def fit(trainer, train_set, test_set, len_train, len_test, out_dir, log=print, stop=None,
        observers=(), batches=epoch_batches):
    """Epochs from where trainer.progress stands (zero for a new run, the restored state
    for --resume) to the last. Returns the last epoch's record (None: nothing left).
    Each observer's epoch_done(record, step_losses, first_batch) runs after the epoch's
    checkpoint (step_losses: each step's training loss per image; first_batch: the run's
    number of the first of them). `batches(train_set, epoch, start)` yields an epoch's
    batches from `start` (input_pipeline.epoch_batches; tests pass one that also sends a signal)."""
    progress = trainer.progress
    metrics = report.JsonLines(f"{out_dir}/metrics.jsonl")
    saver = _Saver(trainer, out_dir)
    should_stop = (lambda: stop() is not None) if stop else None
    resume_hint = f"resume with: ./run.sh --resume {out_dir}"
    log(report.header_row())
    record = None
    t_start, elapsed_before = time.time(), float(progress.elapsed.numpy())
    for epoch in range(int(progress.epoch.numpy()), trainer.epochs):
        start, steps = int(progress.batch.numpy()), trainer.steps_in_epoch(epoch)
        t_epoch = time.time()
        sums = trainer.train_epoch(
            batches(train_set, epoch, start), desc=f"epoch {epoch + 1}",
            total=steps - start, should_stop=should_stop)
        # a resumed epoch adds the sums its checkpoint kept from before the stop
        loss_sum = sums.loss + float(progress.loss_sum.numpy())
        correct_sum = sums.correct + float(progress.correct_sum.numpy())
        ran, step_losses = sums.batches, sums.step_losses
        train_time = float(progress.train_time.numpy()) + time.time() - t_epoch
        if start + ran < steps:  # a signal stopped the epoch
            progress.set(epoch=epoch, batch=start + ran, loss_sum=loss_sum,
                         correct_sum=correct_sum, train_time=train_time,
                         elapsed=elapsed_before + time.time() - t_start)
            saver.save(epoch + 1)
            raise Stopped(
                f"stopped by {signal_name(stop())} in epoch {epoch + 1} after batch "
                f"{start + ran} of {steps} (global step "
                f"{int(trainer.global_step.numpy())}); checkpoint saved; {resume_hint}",
                128 + stop())
        saver.check_finite(epoch + 1)  # before spending time on evaluation
        t_eval = time.time()
        test = trainer.evaluate(test_set, final=epoch + 1 == trainer.epochs)
        eval_time, elapsed = time.time() - t_eval, elapsed_before + time.time() - t_start
        record = epoch_record(epoch + 1, lr=trainer.epoch_end_lr(epoch + 1), train_loss=loss_sum,
                              train_correct=correct_sum, trained=trainer.images_trained(epoch, len_train),
                              test=test, len_test=len_test,
                              train_time=train_time, eval_time=eval_time, elapsed=elapsed,
                              global_step=int(trainer.global_step.numpy()))
        saver.check_finite(epoch + 1, record["val_loss"])
        # The line first, then the checkpoint that counts it: a crash in between leaves
        # a line that --resume drops (the checkpoint says the epoch is not done).
        metrics.write(record)
        progress.set(epoch=epoch + 1, batch=0, loss_sum=0.0, correct_sum=0.0, train_time=0.0,
                     elapsed=elapsed)
        saver.save(epoch + 1, record["val_loss"])
        log(report.format_row(record))
        for observer in observers:
            observer.epoch_done(record, step_losses, epoch * trainer.steps_per_epoch + start)
        if stop is not None and stop() is not None:  # the signal came during evaluation
            raise Stopped(f"stopped by {signal_name(stop())} after epoch {epoch + 1}; "
                          f"checkpoint saved; {resume_hint}", 128 + stop())
    return record
