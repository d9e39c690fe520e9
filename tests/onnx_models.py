"""Tiny ONNX models with DavidNet's serving signature, built with onnx.helper in
milliseconds: images uint8 [N, 32, 32, 3] -> the per-channel means -> a 3x10 matrix plus
a bias -> logits, and their softmax -> probabilities, with the class names in the metadata.
`favourite` puts a large bias on one class, so that models built with different favourites
answer differently and a test can tell which version answered. `by_position` weighs each
pixel by its position before the means, so that an image's mirror (or its upside-down)
scores differently."""
import json

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


def build(favourite=0, image_size=32, class_names=CLASSES, seed=0, by_position=False):
    weights = np.random.default_rng(seed).normal(0, 0.01, (3, 10)).astype(np.float32)
    bias = np.zeros(10, np.float32)
    bias[favourite] = 10.0
    positions = np.arange(image_size * image_size, dtype=np.float32).reshape(1, image_size, image_size, 1)
    initializers = []
    nodes = [helper.make_node("Cast", ["images"], ["pixels"], to=TensorProto.FLOAT)]
    if by_position:  # pixel (row, column) weighed by 1 + (row * size + column) / size^2
        initializers.append(numpy_helper.from_array(1 + positions / image_size ** 2, "position"))
        nodes.append(helper.make_node("Mul", ["pixels", "position"], ["weighed"]))
    nodes += [
        helper.make_node("ReduceMean", ["weighed" if by_position else "pixels"], ["means"],
                         axes=[1, 2], keepdims=0),
        helper.make_node("MatMul", ["means", "weights"], ["scores"]),
        helper.make_node("Add", ["scores", "bias"], ["logits"]),
        helper.make_node("Softmax", ["logits"], ["probabilities"], axis=1),
    ]
    graph = helper.make_graph(
        nodes, "tiny_davidnet",
        [helper.make_tensor_value_info("images", TensorProto.UINT8,
                                       ["N", image_size, image_size, 3])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 10]),
         helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["N", 10])],
        [numpy_helper.from_array(weights, "weights"), numpy_helper.from_array(bias, "bias"),
         *initializers])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    if class_names is not None:
        helper.set_model_props(model, {"class_names": json.dumps(class_names)})
    onnx.checker.check_model(model)
    return model


def save(path, **kwargs):
    onnx.save(build(**kwargs), str(path))
    return str(path)


def publish(base, version, **kwargs):
    """base/version/model.onnx, written in a scratch folder and renamed into place."""
    import os

    scratch = os.path.join(str(base), f".staging-{version}")
    os.makedirs(scratch)
    save(os.path.join(scratch, "model.onnx"), **kwargs)
    os.rename(scratch, os.path.join(str(base), str(version)))
