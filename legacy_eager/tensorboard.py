"""TensorBoard event files in OUT/tensorboard/, written with tf.summary: the training loss
(per image) and learning rate (per batch, as the console prints it) at every step, and at
every epoch the row's numbers. View with `tensorboard --logdir OUT/tensorboard`."""
import os

import tensorflow as tf

# (record key, tag) written once an epoch, at step = epoch number
EPOCH_SCALARS = (
    ("train_loss", "epoch/train_loss"), ("train_acc", "epoch/train_acc"),
    ("val_loss", "epoch/val_loss"), ("val_acc", "epoch/val_acc"),
    ("val_loss_tta", "epoch/val_loss_tta"), ("val_acc_tta", "epoch/val_acc_tta"),
    ("images_per_s", "epoch/images_per_s"), ("lr", "epoch/lr"),
)


class TensorBoardLog:
    def __init__(self, out_dir, lr_at_step):
        """lr_at_step(global step): the trainer's learning rate there, as its rows print it."""
        self.folder, self.writer = os.path.join(out_dir, "tensorboard"), None
        self.lr_at_step = lr_at_step

    def epoch_done(self, record, step_losses, first_batch):
        # Made at the first finished epoch: a run that diverges before it leaves no folder.
        self.writer = self.writer or tf.summary.create_file_writer(self.folder)
        losses = tf.stack(step_losses).numpy() if step_losses else []
        with self.writer.as_default():
            for i, loss in enumerate(losses):
                step = first_batch + i  # the run's batch number (= the global step in fp32)
                tf.summary.scalar("train/loss", float(loss), step=step)
                tf.summary.scalar("train/lr", float(self.lr_at_step(step)), step=step)
            for key, tag in EPOCH_SCALARS:
                if key in record:  # airbench94's TTA figures: the last epoch only
                    tf.summary.scalar(tag, float(record[key]), step=record["epoch"])
        self.writer.flush()
