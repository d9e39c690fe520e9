"""A 2-replica MirroredStrategy step against a 1-replica step on the same global batch.

The global batch is two copies of one half, so each replica's BatchNorm batch statistics
equal those of the whole batch: losses, weights and momentum slots must then agree up to
float32 round-off. Run in
its own process: the 2 logical CPU devices must be made before TensorFlow starts.
Prints the largest differences as JSON after the first step and after the last."""
import json

import numpy as np
import tensorflow as tf

cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)

from legacy_eager.config import Config  # noqa: E402
from legacy_eager.model import DavidNet, build  # noqa: E402
from legacy_eager.trainer import Trainer  # noqa: E402
from tests import synthetic  # noqa: E402


def main(steps=3, half=8):
    config = Config(epochs=2, batch_size=2 * half, width=4, dropout=0.0)
    x, y = synthetic.make_arrays(steps * half, seed=5)
    x = (x.astype(np.float32) - 128) / 64
    tf.random.set_seed(2)
    init = build(DavidNet(c=4, dropout=0.0)).get_weights()
    strategies = {"one": tf.distribute.OneDeviceStrategy("/cpu:0"),
                  "two": tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])}
    trainers, losses = {}, {"one": [], "two": []}
    for name, strategy in strategies.items():
        with strategy.scope():
            model = build(DavidNet(c=4, dropout=0.0))
            model.set_weights(init)
        # OneDeviceStrategy has one replica, so it takes the plain (undistributed) step.
        trainers[name] = Trainer(config, 10 * half, model=model,
                                 strategy=strategy if name == "two" else None)
    for i in range(steps):
        xb = tf.constant(np.concatenate([x[i * half:(i + 1) * half]] * 2))
        yb = tf.constant(np.concatenate([y[i * half:(i + 1) * half]] * 2))
        for name, trainer in trainers.items():
            loss, _ = trainer.train_step(xb, yb)
            losses[name].append(float(loss))
        if i + 1 in (1, steps):
            print(json.dumps(differences(trainers["one"], trainers["two"], losses, init)), flush=True)


def differences(one, two, losses, init):
    def worst(pairs):
        return max(float(np.max(np.abs(a - b)) / max(np.max(np.abs(a)), 1e-3)) for a, b in pairs)

    return {
        "replicas": [one.replicas, two.replicas],
        "loss": max(abs(a - b) / abs(a) for a, b in zip(losses["one"], losses["two"])),
        "weights": worst((a.numpy(), b.numpy()) for a, b in
                         zip(one.model.trainable_variables, two.model.trainable_variables)),
        "moving_means": worst((a.numpy(), b.numpy()) for a, b in
                              zip(one.model.weights, two.model.weights) if "moving_mean" in a.name),
        # TF's fused BatchNorm updates the moving variance with Bessel's correction
        # n/(n-1), n counted per replica: 2 replicas of half the batch see a slightly
        # larger factor. A property of per-replica BatchNorm, measured, not hidden.
        "moving_variances": worst((a.numpy(), b.numpy()) for a, b in
                                  zip(one.model.weights, two.model.weights)
                                  if "moving_variance" in a.name),
        "slots": worst((one.opt.get_slot(a, "momentum").numpy(), two.opt.get_slot(b, "momentum").numpy())
                       for a, b in zip(one.model.trainable_variables, two.model.trainable_variables)),
        "global_step": [int(one.global_step.numpy()), int(two.global_step.numpy())],
        "moved": worst((a.numpy(), b) for a, b in zip(one.model.weights, init)),
    }

if __name__ == "__main__":
    import sys

    main(steps=int(sys.argv[1]) if len(sys.argv) > 1 else 3)
