"""What ./run.sh runs: train, export the SavedModel, convert to ONNX with the parity check
(which classifies the run's test images with the ONNX model through export.predict's
classifier), and print that accuracy beside the training's final val_acc.

    python -m export.train_and_export [TRAINING FLAGS]     (flags: python -m legacy_eager.train --help)

Exit codes (the training run and its checkpoints are kept in every case):
    0    done (also a non-chief worker of a TF_CONFIG cluster, whose chief exports)
    1    an export failed its checks (export.onnx's parity, or the ONNX accuracy more than
         0.1 point from the training's) or refused the run (unfinished, or a checkpoint that
         is not finite); or an unexpected error, in one line (DAVIDNET_TRACEBACK=1 shows it)
    2    bad flags, paths or data: one line naming the flag or file, before TensorFlow
         starts; or, once it has, a GPU that nvidia-smi lists and TensorFlow cannot use
         (--allow-cpu trains on the CPU anyway)
    3    training diverged: a loss, a checkpointed variable or val_loss stopped being finite
         (legacy_eager.trainer.Diverged); nothing after the last good checkpoint is saved
    130  stopped by SIGINT (Ctrl-C); during training, after saving a checkpoint, which
         `--resume RUN_DIR` goes on from
    143  stopped by SIGTERM, likewise
"""
import sys

from export.onnx import ExportFailed, export_onnx
from export.savedmodel import export_savedmodel
from legacy_eager.config import parse_args
from legacy_eager.config import parser as training_parser
from legacy_eager.errors import run_cli
from legacy_eager.run import run, tta_name

MAX_ACCURACY_GAP = 0.001  # 0.1 percentage point
PROG = "python -m export.train_and_export"


def parser():
    """The training flags, which are this command's (./run.sh [FLAGS] runs it)."""
    return training_parser(PROG)


def train_and_export(argv, log=print):
    summary = run(parse_args(argv, parser()), log=log).summary
    if not summary["chief"]:
        return  # in a TF_CONFIG cluster the chief exports; this worker's folder is gone
    out = summary["out"]
    log(f"wrote {export_savedmodel(out)}")
    # The parity check has already classified the run's test images with ONNX Runtime,
    # through export.predict's classifier and accuracy report: its accuracy is reused.
    parity = export_onnx(out, log=log)
    onnx_acc, onnx_tta = parity["onnx_accuracy"], parity["tta"]["onnx_accuracy"]
    final = summary["final"]
    val_acc, val_tta = final["val_acc"], final["val_acc_tta"]
    precision = summary["config"]["precision"]
    tta = tta_name(summary["config"].get("network", "davidnet"))
    log(f"accuracy on the {parity['images']} test images: ONNX Runtime {onnx_acc:.4f} "
        f"({tta} {onnx_tta:.4f}), training's final val_acc {val_acc:.4f} ({tta} {val_tta:.4f})"
        + ("" if precision == "fp32" else
           f" (evaluated in {precision}; exports are float32, so they may differ a little)"))
    # Only a float32 run evaluates the very network that is exported.
    for name, got, want in (("", onnx_acc, val_acc), (f" with {tta}", onnx_tta, val_tta)):
        if precision == "fp32" and abs(got - want) > MAX_ACCURACY_GAP:
            raise ExportFailed(f"ONNX accuracy{name} {got:.4f} is more than 0.1 point from "
                               f"the training's {want:.4f}")


def main(argv=None, log=print):
    return run_cli(train_and_export, argv, log)


if __name__ == "__main__":
    sys.exit(main())
