"""Where the training state lives, checked on two logical CPU devices standing in for a
host and a GPU: everything the compiled step reads or updates must be on the device the
model was built on. Prints one JSON object per mode given. Its own process: logical
devices must be set before TensorFlow starts."""
import json
import sys

import tensorflow as tf

cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)

from legacy_eager.config import Config  # noqa: E402
from legacy_eager.trainer import Trainer  # noqa: E402


def main(*modes):
    for mode in modes:
        print(json.dumps(dict(mode=mode, **placement(mode))), flush=True)


def placement(mode):
    config = Config(epochs=2, batch_size=8, width=4, mode=mode)
    with tf.device("/CPU:1"):  # "the GPU"
        trainer = Trainer(config, 16)
        x, y = tf.zeros([8, 32, 32, 3]), tf.zeros([8], tf.int64)
        trainer.train_step(x, y)
        traced = trainer.train_step.get_concrete_function(x, y)
    captured = {t.device for t in traced.captured_inputs if t.dtype == tf.resource}
    return {
        "global_step": trainer.global_step.device,
        "model": sorted({v.device for v in trainer.model.weights}),
        "slots": sorted({trainer.opt.get_slot(v, "momentum").device
                         for v in trainer.model.trainable_variables}),
        "captured": sorted(captured),
        "steps": int(trainer.global_step.numpy()),
    }


if __name__ == "__main__":
    main(*sys.argv[1:])
