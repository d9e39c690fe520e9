"""The run's checkpoints: where they live, which one to restore, what a checkpoint file
says about itself (epoch reached, non-finite tensors) without building a model, and a
fingerprint of the trained state."""
import hashlib
import os

import numpy as np
import tensorflow as tf

MAX_TO_KEEP = 3
_VALUE = "/.ATTRIBUTES/VARIABLE_VALUE"


def manager(trainer, out_dir):
    return tf.train.CheckpointManager(trainer.checkpoint, os.path.join(out_dir, "checkpoints"),
                                      max_to_keep=MAX_TO_KEEP, checkpoint_name="ckpt")


def restore_latest(trainer, out_dir, warn):
    """Restore the newest checkpoint that reads back whole; a damaged one is reported and
    skipped. Returns its path, or None when there is none."""
    for path in reversed(manager(trainer, out_dir).checkpoints):
        try:
            trainer.checkpoint.restore(path).assert_existing_objects_matched()
            return path
        except Exception as e:  # TF's reader raises OpError, IndexError, ValueError...
            warn(f"warning: checkpoint {path} is damaged ({type(e).__name__}); "
                 "trying the one before")
    return None


def latest(run_dir):
    return tf.train.latest_checkpoint(os.path.join(run_dir, "checkpoints"))


def describe(path):
    """(completed epochs, batches into the next epoch, first non-finite tensor or None)
    of a checkpoint file, read without building the model."""
    reader = tf.train.load_checkpoint(path)
    shapes = reader.get_variable_to_dtype_map()
    epoch = int(reader.get_tensor("progress/epoch" + _VALUE))
    batch = int(reader.get_tensor("progress/batch" + _VALUE))
    bad = None
    for key in sorted(shapes):
        if shapes[key].is_floating and not key.startswith("progress/"):
            if not np.all(np.isfinite(reader.get_tensor(key))):
                bad = key.replace(_VALUE, "")
                break
    return epoch, batch, bad


def weights_fingerprint(trainer):
    """sha256 of every model variable and momentum slot, in order: equal fingerprints mean
    bit-identical trained state (used to compare workers and repeated runs)."""
    h = hashlib.sha256()
    for v in trainer.model.weights:
        h.update(v.numpy().tobytes())
    for v in trainer.model.trainable_variables:
        h.update(trainer.opt.get_slot(v, "momentum").numpy().tobytes())
    return h.hexdigest()
