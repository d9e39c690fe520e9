"""Train the same tiny DavidNet in eager and function mode from the same weights on the
same batches; print, as JSON, the largest difference of every variable kind.

Run in its own process (tests/test_trainer.py does) so that environment switches such
as TF_ENABLE_ONEDNN_OPTS=0 take effect before TensorFlow loads."""
import dataclasses
import json
import sys

import numpy as np
import tensorflow as tf

from legacy_eager.config import Config
from legacy_eager.model import DavidNet, build
from legacy_eager.trainer import Trainer
from tests import synthetic


def main(wd_loop, steps=5, width=4, batch_size=16):
    config = Config(epochs=2, batch_size=batch_size, width=width, dropout=0.0, wd_loop=wd_loop)
    x, y = synthetic.make_arrays(steps * batch_size, seed=0)
    x = (x.astype(np.float32) - 128) / 64
    tf.random.set_seed(1)
    init = build(DavidNet(c=width, dropout=0.0)).get_weights()
    trainers, losses = {}, {}
    for mode in ("eager", "function"):
        model = build(DavidNet(c=width, dropout=0.0))
        model.set_weights(init)
        trainer = trainers[mode] = Trainer(dataclasses.replace(config, mode=mode),
                                           steps * batch_size, model=model)
        losses[mode] = [float(trainer.train_step(x[i:i + batch_size], y[i:i + batch_size])[0])
                        for i in range(0, len(x), batch_size)]
    eager, compiled = trainers["eager"], trainers["function"]

    def worst(pairs):
        return max(float(np.max(np.abs(a.numpy() - b.numpy()))) for a, b in pairs)

    slots = [(eager.opt.get_slot(a, "momentum"), compiled.opt.get_slot(b, "momentum"))
             for a, b in zip(eager.model.trainable_variables, compiled.model.trainable_variables)]
    print(json.dumps({
        "loss": max(abs(a - b) for a, b in zip(losses["eager"], losses["function"])),
        "weights": worst(zip(eager.model.trainable_variables, compiled.model.trainable_variables)),
        "bn_statistics": worst(zip(eager.model.non_trainable_variables,
                                   compiled.model.non_trainable_variables)),
        "momentum_slots": worst(slots),
        "global_step": [int(eager.global_step.numpy()), int(compiled.global_step.numpy())],
        "moved": worst(zip(eager.model.weights, map(tf.constant, init))),
    }))


if __name__ == "__main__":
    main(sys.argv[1])
