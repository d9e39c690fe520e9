"""Convert a run's SavedModel to ONNX and prove it serves the same predictions.

    python -m export.onnx --run DIR      # writes DIR/model.onnx and DIR/parity.json

Conversion is tf2onnx's own command line (opset 17; the batch dimension stays dynamic).
The model has one input, `images` uint8 [batch, 32, 32, 3], and two outputs, `logits` and
`probabilities` float32 [batch, 10]; `metadata_props` carries `class_names`, `mean` and
`std` (JSON), a description of the normalisation, which runs inside the graph, the
`network` and its TTA as `tta_views` (JSON: weight, flip, dy, dx of each view), which
export.predict and the server apply.
`onnx.checker` must pass. ONNX Runtime is then compared with the SavedModel on the run's
own test images, once plainly and once with the run's test-time augmentation (serving_tta
against export.predict's passes over the views of `tta_views`): max |logits difference| and top-1 agreement go to
parity.json, with "result": "pass" or "fail". The new model.onnx replaces an old one only
when max |diff| <= 1e-4 and the top-1 classes agree both ways on every image but ties
(images whose two highest SavedModel logits are within 2e-4, where two runtimes within
1e-4 of each other may rank them either way; parity.json counts them); otherwise the exit
code is 1 and any earlier model.onnx stays.

    python -m export.onnx --run DIR --int8  # also DIR/model.int8.onnx

INT8: ONNX Runtime static quantization (QDQ, per-channel int8 weights, uint8 activations,
MinMax calibration on CALIBRATION_IMAGES of the run's training images). It is kept only
if, on the run's test images, its top-1 agreement with the float32 model is at least 99%
and its accuracy at most 0.5 point lower; parity.json records both either way.
"""
import json
import os
import subprocess
import sys

import numpy as np

from legacy_eager.atomic import staged_path
from export.predict import OnnxClassifier, accuracy_report
from export.savedmodel import (SIGNATURE_NAME, TTA_SIGNATURE_NAME, export_savedmodel, metadata,
                               read_run, run_dir_cli, run_dir_parser)
from legacy_eager.errors import UserFacingError

OPSET = 17
MAX_LOGIT_DIFF = 1e-4
# Two runtimes within MAX_LOGIT_DIFF of each other can order two logits this close either
# way: such an image is a tie, not a disagreement (a barely trained network has some).
TIE_MARGIN = 2 * MAX_LOGIT_DIFF
CALIBRATION_IMAGES = 1024
MIN_INT8_AGREEMENT = 0.99
MAX_INT8_ACCURACY_DROP = 0.005


class ExportFailed(UserFacingError):
    """The export ran but its result failed a check (exit code 1)."""


def convert(saved_model, output):
    """tf2onnx's converter in its own process (it configures TF logging and graph state)."""
    cmd = [sys.executable, "-m", "tf2onnx.convert", "--saved-model", saved_model,
           "--signature_def", SIGNATURE_NAME, "--tag", "serve", "--opset", str(OPSET),
           "--output", output]
    done = subprocess.run(cmd, capture_output=True, text=True,
                          env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"))
    if done.returncode != 0 or not os.path.isfile(output):
        last = (done.stderr.strip().splitlines() or ["no output"])[-1]
        raise ExportFailed(f"tf2onnx could not convert {saved_model}: {last}")


def finish_model(path, run_info):
    """Add metadata, check the graph and its interface."""
    import onnx

    model = onnx.load(path)
    meta = metadata(run_info)
    props = {"class_names": json.dumps(meta["class_names"]), "mean": json.dumps(meta["mean"]),
             "std": json.dumps(meta["std"]), "normalization": meta["normalization"],
             "input": meta["input"], "network": meta["network"],
             "tta_views": json.dumps(meta["tta_views"])}
    del model.metadata_props[:]
    for key, value in props.items():
        model.metadata_props.add(key=key, value=value)
    network = "airbench94" if meta["network"] == "airbench94" else "DavidNet"
    model.doc_string = f"{network} (CIFAR-10) exported by davidnet-tf"
    onnx.checker.check_model(model)
    inputs = [(i.name, i.type.tensor_type.elem_type) for i in model.graph.input]
    if inputs != [("images", onnx.TensorProto.UINT8)]:
        raise ExportFailed(f"converted model has inputs {inputs}; expected only uint8 'images'")
    outputs = sorted(o.name for o in model.graph.output)
    if outputs != ["logits", "probabilities"]:
        raise ExportFailed(f"converted model has outputs {outputs}; expected logits, probabilities")
    onnx.save(model, path)


def run_images(run_info):
    """The run's own (train, test) uint8 images and labels: same source, same seeded subsets."""
    from legacy_eager.run_folder import run_config
    from legacy_eager.data import load_data

    _, train, test = load_data(run_config(run_info))
    return train, test


def savedmodel_logits(saved_model, images, signature=SIGNATURE_NAME, batch_size=500):
    import tensorflow as tf

    loaded = tf.saved_model.load(saved_model)  # keep a reference while its signature runs
    serve = loaded.signatures[signature]
    return np.concatenate([serve(images=tf.constant(images[i:i + batch_size]))["logits"].numpy()
                           for i in range(0, len(images), batch_size)])


def _compare(logits, reference, labels, class_names):
    predicted = np.argmax(logits, 1)
    agree = predicted == np.argmax(reference, 1)
    top2 = np.sort(reference, 1)[:, -2:]
    tie = top2[:, 1] - top2[:, 0] <= TIE_MARGIN
    max_diff = float(np.max(np.abs(logits - reference)))
    return {
        "max_abs_logits_diff": max_diff, "top1_agreement": float(np.mean(agree)),
        "disagreements_at_ties": int(np.sum(~agree & tie)),
        "passed": bool(max_diff <= MAX_LOGIT_DIFF and (agree | tie).all()),
        "onnx_accuracy": accuracy_report(predicted, labels, class_names)["accuracy"],
        "savedmodel_accuracy": float(np.mean(np.argmax(reference, 1) == labels)),
    }, predicted


def parity(onnx_path, saved_model, images, labels, class_names):
    """The parity.json record, and ONNX Runtime's top-1 predictions (reused for INT8).
    Checked twice: serving_default against one ONNX pass, and serving_tta against
    export.predict's TTA (a pass per view of the model's tta_views)."""
    classifier = OnnxClassifier(onnx_path)
    plain, predicted = _compare(classifier.run(images)[0], savedmodel_logits(saved_model, images),
                                labels, class_names)
    tta, _ = _compare(classifier.run(images, tta=True)[0],
                      savedmodel_logits(saved_model, images, TTA_SIGNATURE_NAME), labels, class_names)
    passed = plain["passed"] and tta["passed"]
    return dict(plain, images=int(len(images)), opset=OPSET,
                threshold_max_abs_logits_diff=MAX_LOGIT_DIFF, tta=tta, passed=passed,
                result="pass" if passed else "fail"), predicted


class _Discard(Exception):
    pass


class _Calibration:
    """onnxruntime.quantization.CalibrationDataReader over uint8 training images."""

    def __init__(self, images, batch_size=64):
        self.batches = iter([{"images": images[i:i + batch_size]}
                             for i in range(0, len(images), batch_size)])

    def get_next(self):
        return next(self.batches, None)


def quantize_int8(fp32_path, output, calibration_images):
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    prepared = f"{output}.prep.onnx"
    try:
        quant_pre_process(fp32_path, prepared, skip_symbolic_shape=True)  # no sympy needed
        quantize_static(prepared, output, _Calibration(calibration_images),
                        quant_format=QuantFormat.QDQ, per_channel=True,
                        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8)
    finally:
        if os.path.exists(prepared):
            os.remove(prepared)


def export_int8(run_dir, train_images, test_images, test_labels, fp32_accuracy, class_names,
                fp32_pred=None):
    """model.int8.onnx if it passes the accuracy bounds; returns its parity record.
    fp32_pred: model.onnx's top-1 predictions on test_images, if already computed."""
    rng = np.random.default_rng(0)
    calib = train_images[np.sort(rng.choice(len(train_images),
                                            min(CALIBRATION_IMAGES, len(train_images)),
                                            replace=False))]
    if fp32_pred is None:
        fp32_pred = np.argmax(OnnxClassifier(os.path.join(run_dir, "model.onnx")).run(test_images)[0], 1)
    target = os.path.join(run_dir, "model.int8.onnx")
    try:
        with staged_path(target, is_dir=False) as staged:
            quantize_int8(os.path.join(run_dir, "model.onnx"), staged, calib)
            int8_pred = np.argmax(OnnxClassifier(staged).run(test_images)[0], 1)
            record = {
                "calibration_images": int(len(calib)),
                "top1_agreement_with_fp32": float(np.mean(int8_pred == fp32_pred)),
                "accuracy": accuracy_report(int8_pred, test_labels, class_names)["accuracy"],
                "fp32_accuracy": fp32_accuracy,
            }
            record["kept"] = bool(record["top1_agreement_with_fp32"] >= MIN_INT8_AGREEMENT and
                                  fp32_accuracy - record["accuracy"] <= MAX_INT8_ACCURACY_DROP)
            if not record["kept"]:
                raise _Discard  # leaves the staged file to be cleaned up, uninstalled
    except _Discard:
        if os.path.exists(target):
            os.remove(target)  # an earlier INT8 model no longer matches this model.onnx
    return record


def export_onnx(run_dir, log=print, int8=False):
    """SavedModel (made if missing) -> model.onnx with metadata -> parity.json."""
    from legacy_eager.atomic import write_json

    run_info, _ = read_run(run_dir)
    saved_model = os.path.join(run_dir, "saved_model")
    if not os.path.isdir(saved_model):
        export_savedmodel(run_dir)
        log(f"wrote {saved_model}")
    (train_images, _), (images, labels) = run_images(run_info)
    target = os.path.join(run_dir, "model.onnx")
    with staged_path(target, is_dir=False) as staged:
        convert(saved_model, staged)
        finish_model(staged, run_info)
        result, fp32_pred = parity(staged, saved_model, images, labels, run_info["data"]["classes"])
        write_json(os.path.join(run_dir, "parity.json"), result)
        if not result["passed"]:
            raise ExportFailed(
                f"ONNX Runtime differs from the SavedModel on {result['images']} test images "
                f"(max |logits diff| {result['max_abs_logits_diff']:.2e}, with TTA "
                f"{result['tta']['max_abs_logits_diff']:.2e}; top-1 agreement "
                f"{result['top1_agreement']:.4f}, with TTA {result['tta']['top1_agreement']:.4f}); "
                f"{run_dir}/parity.json has the figures and any earlier model.onnx is kept")
    log(f"wrote {target}: on {result['images']} test images max |logits diff| "
        f"{result['max_abs_logits_diff']:.2e} (TTA {result['tta']['max_abs_logits_diff']:.2e}), "
        f"top-1 agreement {result['top1_agreement']:.4f} ({result['tta']['top1_agreement']:.4f}), "
        f"ONNX accuracy {result['onnx_accuracy']:.4f} ({result['tta']['onnx_accuracy']:.4f})")
    if int8:
        result["int8"] = export_int8(run_dir, train_images, images, labels,
                                     result["onnx_accuracy"], run_info["data"]["classes"], fp32_pred)
        write_json(os.path.join(run_dir, "parity.json"), result)
        r = result["int8"]
        verdict = (f"wrote {run_dir}/model.int8.onnx" if r["kept"] else
                   "INT8 model discarded (outside the bounds: agreement >= 99%, "
                   "accuracy drop <= 0.5 point)")
        log(f"{verdict}: top-1 agreement with fp32 {r['top1_agreement_with_fp32']:.4f}, "
            f"accuracy {r['accuracy']:.4f} (fp32 {r['fp32_accuracy']:.4f})")
    return result


def parser():
    p = run_dir_parser("python -m export.onnx", __doc__)
    p.add_argument("--int8", action="store_true", help="also write model.int8.onnx")
    return p


def main(argv=None):
    return run_dir_cli(parser(), export_onnx, argv)


if __name__ == "__main__":
    sys.exit(main())
