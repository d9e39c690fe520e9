"""What ./run.sh runs: train, export the SavedModel, convert to ONNX with the parity check
(which classifies the run's test images with the ONNX model through export.predict's
classifier), and print that accuracy beside the training's final val_acc.

    python -m export.train_and_export [TRAINING FLAGS]     (flags: python -m legacy_eager.train --help)

Exit codes: 0 done; 2 bad flags or data; 1 export failed its checks (the training run and
its checkpoints are kept either way).
"""
import sys

from export.onnx import ExportFailed, export_onnx
from export.savedmodel import export_savedmodel
from legacy_eager.config import parse_args
from legacy_eager.errors import run_cli
from legacy_eager.run import run, tta_name

MAX_ACCURACY_GAP = 0.001  # 0.1 percentage point


def train_and_export(argv, log=print):
    summary = run(parse_args(argv), log=log)
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
