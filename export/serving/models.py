"""Load one ONNX model version for serving: the file a version folder holds, its signature
checked against the server's (input `images` uint8 [-1, 32, 32, 3]; outputs `logits` and
`probabilities` float32 [-1, 10]; ten class names in its metadata), and one warm-up batch
run, all before it takes any request. Runs in a worker thread."""
import os

import numpy as np

from export.predict import OnnxClassifier
from legacy_eager.errors import UsageError, cause

MODEL_FILE = "model.onnx"
INPUTS = {"images": ("tensor(uint8)", [32, 32, 3])}
OUTPUTS = {"logits": ("tensor(float)", [10]), "probabilities": ("tensor(float)", [10])}


class Refused(Exception):
    """A version that cannot be served; the message says why. `code` is the status's
    error code (TensorFlow Serving's names)."""

    def __init__(self, message, code="INVALID_ARGUMENT"):
        super().__init__(message)
        self.code = code


def model_file(folder):
    """The ONNX file of a version folder (a run folder is one too)."""
    return os.path.join(folder, MODEL_FILE)


def model_path(target):
    """MODEL.onnx itself, or RUN_DIR/model.onnx (a version folder is a run folder too)."""
    path = model_file(target) if os.path.isdir(target) else target
    if not os.path.isfile(path):
        raise UsageError(f"{target}: no such ONNX model (expected MODEL.onnx or a run folder "
                         f"with {MODEL_FILE})")
    return path


def _check_tensors(path, kind, found, expected):
    names = {t.name: t for t in found}
    if set(names) != set(expected):
        raise Refused(f"{path}: {kind} {sorted(names)}, expected {sorted(expected)}")
    for name, (dtype, dims) in expected.items():
        tensor = names[name]
        batch, rest = (tensor.shape[0] if tensor.shape else None), list(tensor.shape[1:])
        if tensor.type != dtype or rest != dims or isinstance(batch, int) and batch > 0:
            shape = [batch if isinstance(batch, int) else -1, *rest]
            raise Refused(f"{path}: {kind[:-1]} {name!r} is {tensor.type} {shape}, expected {dtype} "
                          f"[-1, {', '.join(map(str, dims))}]")


def load_file(path, threads=0):
    """An OnnxClassifier for the ONNX file at `path`, checked and warmed; Refused if not."""
    if not os.path.isfile(path):
        raise Refused(f"no {os.path.basename(path)} in {os.path.dirname(path) or '.'}",
                      code="NOT_FOUND")
    try:
        classifier = OnnxClassifier(path, threads=threads, memory_arena=False)
    except Exception as e:
        raise Refused(f"{path}: not a loadable ONNX model ({cause(e)})",
                      code="DATA_LOSS") from None
    _check_tensors(path, "inputs", classifier.session.get_inputs(), INPUTS)
    _check_tensors(path, "outputs", classifier.session.get_outputs(), OUTPUTS)
    if classifier.class_names == [str(i) for i in range(10)]:
        raise Refused(f"{path}: no class_names in its metadata (export.onnx writes them)")
    if len(classifier.class_names) != 10:
        raise Refused(f"{path}: {len(classifier.class_names)} class names, expected 10")
    try:
        logits, probs = classifier.run(np.zeros((1, 32, 32, 3), np.uint8))
    except Exception as e:
        raise Refused(f"{path}: the warm-up batch failed ({type(e).__name__})",
                      code="INTERNAL") from None
    if logits.shape != (1, 10) or probs.shape != (1, 10):
        raise Refused(f"{path}: the warm-up batch gave {list(logits.shape)}, expected [1, 10]")
    return classifier
