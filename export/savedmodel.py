"""Export a training run's newest checkpoint as a SavedModel for serving.

    python -m export.savedmodel --run DIR      # writes DIR/saved_model/

Signature `serving_default`:
    images          uint8   [batch, 32, 32, 3]  RGB pixels, 0..255
 -> logits          float32 [batch, 10]
    probabilities   float32 [batch, 10]        softmax of logits
Signature `serving_tta`: the same, with the run's test-time augmentation: the weighted sum
of the logits of its views (legacy_eager.tta): DavidNet's flip TTA, the image and its mirror
image 1/2 each; airbench94's level 2, the image and its mirror 1/4 each and the four
mirrored and unmirrored 1-pixel translations 1/8 each. Probabilities are their softmax.
The training normalisation ((x - mean) / std per RGB channel) runs inside the graph and
the network runs in inference mode (BatchNorm moving statistics, no dropout). The model
also carries `class_names` (string [10]), `mean` and `std` (float32 [3]) as variables, and
the same as JSON in `assets.extra/davidnet.json` (with the network's name and TTA views).
The network is the one the run's config.json names (DavidNet when it names none). No
optimizer state, no device pinning.
"""
import argparse
import json
import math
import os
import sys

from legacy_eager.atomic import staged_path
from legacy_eager.cli import Parser
from legacy_eager.errors import UsageError, UserFacingError, run_cli
from legacy_eager.run_folder import read_run_info

SIGNATURE_NAME = "serving_default"
TTA_SIGNATURE_NAME = "serving_tta"


class ExportRefused(UserFacingError):
    """The run cannot be exported as it stands (exit 1): unfinished or diverged."""


def read_run(run_dir):
    """The run's config.json and the checkpoint to export: the newest one, which must be
    the end of the run's last epoch (a stopped run is resumed first, not exported) and
    hold only finite numbers. Anything else is a one-line error."""
    run_info = read_run_info(run_dir)
    from legacy_eager import checkpoints

    checkpoint = checkpoints.latest(run_dir)
    if checkpoint is None:
        raise UsageError(f"--run {run_dir}: no checkpoint in {run_dir}/checkpoints/ "
                         "(the run has not finished an epoch)")
    epoch, batch, bad = checkpoints.describe(checkpoint)
    epochs = math.ceil(run_info["config"]["epochs"])  # airbench94's 9.9 runs 10 epoch loops
    if batch != 0 or epoch != epochs:
        where = (f"in epoch {epoch + 1} of {epochs}, after batch {batch}" if batch
                 else f"after epoch {epoch} of {epochs}")
        raise ExportRefused(f"--run {run_dir}: the run stopped {where} "
                            f"({os.path.basename(checkpoint)}); finish it with ./run.sh "
                            f"--resume {run_dir} before exporting")
    if bad is not None:
        raise ExportRefused(f"--run {run_dir}: {os.path.basename(checkpoint)} holds a "
                            f"non-finite value in {bad}; a diverged model is not exported")
    return run_info, checkpoint


def network_name(run_info):
    """The network a run trained: config.json's, DavidNet for runs from before airbench94."""
    return run_info["config"].get("network", "davidnet")


def tta_views(run_info):
    """The run's test-time augmentation as legacy_eager.tta views."""
    from legacy_eager import tta

    if network_name(run_info) == "airbench94":
        from airbench_tf import hyp

        return hyp.TTA_VIEWS[hyp.TTA_LEVEL]
    return tta.FLIP


def restore_model(run_info, checkpoint):
    """A fresh network of the run's kind (DavidNet of its width, or airbench94) holding the
    checkpoint's weights (model only: the optimizer's state and the global step are left
    behind), and its TTA logits function (model, normalised images) -> logits."""
    import tensorflow as tf

    if network_name(run_info) == "airbench94":
        from airbench_tf.model import Airbench94, build, tta_logits

        model, tta = Airbench94(), tta_logits
    else:
        from legacy_eager.model import DavidNet, build, flip_tta_logits

        model, tta = DavidNet(c=run_info["config"]["width"]), flip_tta_logits
    status = tf.train.Checkpoint(model=model).restore(checkpoint).expect_partial()
    build(model)
    status.assert_existing_objects_matched()
    return model, tta


def make_serving_module(model, run_info, tta_logits):
    import tensorflow as tf

    norm = run_info["data"]["normalization"]

    class DavidNetServing(tf.Module):
        def __init__(self):
            super().__init__()
            self.model = model
            self.class_names = tf.Variable(run_info["data"]["classes"], trainable=False)
            self.mean = tf.Variable(norm["mean"], dtype=tf.float32, trainable=False)
            self.std = tf.Variable(norm["std"], dtype=tf.float32, trainable=False)

        def _normalized(self, images):
            return (tf.cast(images, tf.float32) - self.mean) / self.std

        @tf.function(input_signature=[tf.TensorSpec([None, 32, 32, 3], tf.uint8, name="images")])
        def serve(self, images):
            logits = self.model.logits(self._normalized(images), training=False)
            return {"logits": logits, "probabilities": tf.nn.softmax(logits)}

        @tf.function(input_signature=[tf.TensorSpec([None, 32, 32, 3], tf.uint8, name="images")])
        def serve_tta(self, images):
            logits = tta_logits(self.model, self._normalized(images))
            return {"logits": logits, "probabilities": tf.nn.softmax(logits)}

    return DavidNetServing()


def metadata(run_info):
    norm = run_info["data"]["normalization"]
    return {"class_names": run_info["data"]["classes"], "mean": norm["mean"], "std": norm["std"],
            "input": "images: uint8 [batch, 32, 32, 3] RGB",
            "normalization": "(images - mean) / std per RGB channel, inside the graph",
            "width": run_info["config"]["width"], "network": network_name(run_info),
            "tta_views": [v._asdict() for v in tta_views(run_info)]}


def export_savedmodel(run_dir):
    """Write RUN/saved_model/ atomically; returns its path."""
    run_info, checkpoint = read_run(run_dir)
    import tensorflow as tf

    model, tta = restore_model(run_info, checkpoint)
    module = make_serving_module(model, run_info, tta)
    target = os.path.join(run_dir, "saved_model")
    # Keras warns once per sub-model that it cannot serialise its config; the SavedModel
    # does not need it (it is served through the traced signature).
    tf.get_logger().setLevel("ERROR")
    with staged_path(target, is_dir=True) as staged:
        tf.saved_model.save(module, staged, signatures={SIGNATURE_NAME: module.serve,
                                                        TTA_SIGNATURE_NAME: module.serve_tta})
        os.makedirs(os.path.join(staged, "assets.extra"), exist_ok=True)
        with open(os.path.join(staged, "assets.extra", "davidnet.json"), "w", encoding="utf-8") as f:
            json.dump(metadata(run_info), f, indent=2)
    return target


def run_dir_parser(prog, doc):
    """`prog --run DIR`: what both export commands take; each adds its own flags."""
    p = Parser(prog=prog, description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--run", required=True, metavar="DIR", help="run folder from legacy_eager.train")
    return p


def run_dir_cli(parser, action, argv):
    """Parse argv with `parser` (a run_dir_parser), then action(DIR, **the other flags), with
    one-line errors."""
    def body():
        args = vars(parser.parse_args(argv))
        run_dir = args.pop("run")
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
        action(run_dir, **args)
    return run_cli(body)


def parser():
    return run_dir_parser("python -m export.savedmodel", __doc__)


def main(argv=None):
    return run_dir_cli(parser(), lambda run_dir: print(f"wrote {export_savedmodel(run_dir)}"), argv)


if __name__ == "__main__":
    sys.exit(main())
