"""Requests generated from each protocol's grammar (hypothesis), with the edges turned,
against one server: TensorFlow Serving's REST API, the Open Inference Protocol (JSON and its
binary tensor data extension) and TensorFlow Serving's gRPC API.

Each generated request knows whether it is valid. Whatever comes in, no answer is a 5xx,
INTERNAL or UNKNOWN: a valid request gets 200 / OK and export.predict's logits and
probabilities for the images it carries (flip TTA when asked for, from the version it
names); any other gets a 4xx or INVALID_ARGUMENT / NOT_FOUND / FAILED_PRECONDITION with a
message, and one whose only fault is its size 413 / RESOURCE_EXHAUSTED. After the examples,
the server still answers a valid request.

Each test runs once per edge of its grammar (every fault, each with up to one other drawn
beside it) and once for valid requests only, so that every edge is tried on every run. How
many examples: the hypothesis profile's max_examples per edge, ten times that for valid
requests (conftest.py: 3 in the suite; `--hypothesis-profile long`: 200, over 5,000
requests per protocol). With -s, the counts of answers per protocol are printed at the end.
"""
import base64
import collections
import http.client
import io
import json

import grpc
import numpy as np
import pytest
from hypothesis import event, given, settings
from hypothesis import strategies as st
from PIL import Image

from export.predict import OnnxClassifier, to_model_input
from tests import onnx_models
from tests.serving import Server

# TensorFlow Serving's own messages (this process may hold TensorFlow's protos, so it never
# imports export/serving/protos, whose messages share their names)
from tensorflow.core.framework import tensor_pb2, tensor_shape_pb2, types_pb2  # noqa: E402,I100
from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc  # noqa: E402

pytestmark = pytest.mark.slow  # every test here starts a server

MAX_INSTANCES = 8            # --max-instances
MAX_BODY = 256 * 1024        # --max-body-mb 0.25 (gRPC: the largest message)
MAX_IMAGE_PIXELS = 4096      # --max-image-pixels
SIZE_FAULTS = {"too_many", "too_large"}
GRPC_REFUSALS = {"INVALID_ARGUMENT", "NOT_FOUND", "FAILED_PRECONDITION", "RESOURCE_EXHAUSTED"}
COUNTS = collections.defaultdict(collections.Counter)  # protocol -> answers seen


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """The server on versions 1 and 3 (label stable = 1), and export.predict's classifier of
    each version."""
    base = tmp_path_factory.mktemp("models")
    onnx_models.publish(base, 1, favourite=2, seed=1, by_position=True)  # flip TTA tells
    onnx_models.publish(base, 3, favourite=5, seed=3, by_position=True)
    with Server("--model-base-path", str(base), "--version-policy", "all", "--version-labels",
                "stable=1", "--max-instances", str(MAX_INSTANCES), "--max-body-mb",
                str(MAX_BODY / 2 ** 20), "--max-image-pixels", str(MAX_IMAGE_PIXELS),
                "--quiet") as server:
        yield server, {v: OnnxClassifier(str(base / str(v) / "model.onnx")) for v in (1, 3)}
    for protocol, counts in COUNTS.items():
        print(f"{protocol}: {sum(counts.values())} generated requests: "
              + ", ".join(f"{k} {n}" for k, n in sorted(counts.items())))


def chosen_faults(draw, focus, faults):
    """No fault for focus None (a valid request), else `focus` and at most one more."""
    if focus is None:
        return set()
    return {focus} | draw(st.sets(st.sampled_from(faults), max_size=1))


def generated(strategy, focus):
    """given(case=strategy): the profile's examples per edge, ten times that for valid ones."""
    examples = settings.default.max_examples * (10 if focus is None else 1)
    return lambda check: settings(max_examples=examples)(given(case=strategy(focus))(check))


def edges(faults):
    return pytest.mark.parametrize("focus", [None, *faults], ids=["valid", *faults])


class Case:
    """A generated request and what it must get: `faults` empty means valid (then `images`,
    `version` and `tta` say what the answer holds)."""

    def __init__(self, images, version, tta, faults, **request):
        self.images, self.version, self.tta, self.faults = images, version, tta, set(faults)
        self.request = request

    @property
    def only_too_large(self):
        return bool(self.faults) and self.faults <= SIZE_FAULTS


# ---------------------------------------------------------------- shared pieces


@st.composite
def pixel_arrays(draw, count=st.integers(1, 3)):
    """uint8 [N, 32, 32, 3] images: random pixels from a drawn seed (cheap to draw, and a
    failing example still names them)."""
    n, seed = draw(count), draw(st.integers(0, 2 ** 32 - 1))
    return np.random.default_rng(seed).integers(0, 256, (n, 32, 32, 3), dtype=np.uint8)


def expected(case, served):
    logits, probs = served[1][case.version].run(case.images, tta=case.tta)
    return logits, probs


def assert_close(logits, probs, case, served):
    want_logits, want_probs = expected(case, served)
    np.testing.assert_allclose(np.asarray(logits, np.float32), want_logits, atol=1e-5)
    np.testing.assert_allclose(np.asarray(probs, np.float32), want_probs, atol=1e-6)


def post(server, path, body, headers=None):
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=120)
    try:
        conn.request("POST", path, body, headers or {})
        response = conn.getresponse()
        return response.status, dict(response.getheaders()), response.read()
    finally:
        conn.close()


def assert_refused(status, body, case):
    """A 4xx ({"error": message}), 413 when the only fault is the request's size."""
    assert 400 <= status < 500, (status, body[:300], case.faults)
    if case.only_too_large:
        assert status == 413, (status, body[:300], case.faults)
    error = json.loads(body)["error"]
    assert isinstance(error, str) and error.strip(), body[:300]


def value_fault(draw):
    """A JSON value that is no pixel: out of 0..255 (up to 64-bit), a fraction, a string,
    null, a list."""
    return draw(st.one_of(st.integers(256, 2 ** 64 - 1), st.integers(-2 ** 63, -1),
                          st.floats(0.01, 254.99).filter(lambda v: v != int(v)),
                          st.floats(256, 1e300), st.text(max_size=3), st.none(),
                          st.just([1, 2])))


def poke(draw, nested, value):
    """`nested` (rows of pixels of channel values) with one drawn value set to `value`."""
    row = nested[draw(st.integers(0, len(nested) - 1))]
    pixel = row[draw(st.integers(0, len(row) - 1))]
    pixel[draw(st.integers(0, len(pixel) - 1))] = value
    return nested


def image_file(draw, image):
    """(file bytes, the uint8 [32, 32, 3] export.predict makes of them): the image as PNG,
    JPEG or BMP, at 32x32 or another size within the pixel cap, RGB, grayscale or RGBA."""
    fmt = draw(st.sampled_from(["PNG", "JPEG", "BMP"]))
    mode = draw(st.sampled_from(["RGB", "L"] + (["RGBA"] if fmt == "PNG" else [])))
    width, height = draw(st.sampled_from([(32, 32), (32, 32), (16, 24), (64, 64), (48, 40)]))
    picture = Image.fromarray(image).resize((width, height), Image.NEAREST).convert(mode)
    buf = io.BytesIO()
    picture.save(buf, format=fmt)
    raw = buf.getvalue()
    with Image.open(io.BytesIO(raw)) as decoded:
        return raw, to_model_input(decoded)


# ---------------------------------------------------------------- TensorFlow Serving REST

REST_PATHS = {"/v1/models/davidnet:predict": 3, "/v1/models/davidnet/versions/1:predict": 1,
              "/v1/models/davidnet/versions/3:predict": 3,
              "/v1/models/davidnet/labels/stable:predict": 1}
REST_BAD_PATHS = ["/v1/models/resnet:predict", "/v1/models/davidnet/versions/2:predict",
                  "/v1/models/davidnet/versions/x:predict", "/v1/models/davidnet/labels/canary:predict",
                  "/v1/models/resnet/labels/stable:predict"]
INSTANCE_FAULTS = ["value", "missing_row", "short_row", "extra_channel", "nested", "flat", "empty",
                   "b64_not_base64", "b64_not_an_image", "b64_not_a_string", "b64_too_many_pixels",
                   "unknown_key"]
BODY_FAULTS = ["not_an_object", "both_keys", "neither_key", "inputs_without_images", "no_instances",
               "instances_not_a_list", "tta_not_a_bool", "truncated", "not_utf8", "too_many",
               "too_large", "bad_path"]


@st.composite
def rest_requests(draw, focus):
    faults = chosen_faults(draw, focus, INSTANCE_FAULTS + BODY_FAULTS)
    images = draw(pixel_arrays(st.integers(MAX_INSTANCES + 1, MAX_INSTANCES + 4)
                               if "too_many" in faults else st.integers(1, 3)))
    items, pixels = [], []
    for i, image in enumerate(images):
        form = draw(st.sampled_from(["list", "floats", "named", "b64"]))
        if form == "b64":
            raw, decoded = image_file(draw, image)
            items.append({"b64": base64.b64encode(raw).decode()})
            pixels.append(decoded)
            continue
        nested = image.tolist()
        if form == "floats":  # integral numbers written as floats are still pixels
            nested = [[[float(v) for v in px] for px in row] for row in nested]
        items.append({"images": nested} if form == "named" else nested)
        pixels.append(image)
    images = np.stack(pixels)
    where = draw(st.integers(0, len(items) - 1))
    nested = images[where].tolist()  # what a fault below works on (any fault is enough)
    if faults & set(INSTANCE_FAULTS):
        items[where] = nested
    for fault in sorted(faults & set(INSTANCE_FAULTS)):
        if fault.startswith("b64"):
            items[where] = {"b64": {
                "b64_not_base64": "%%not base64%%",
                "b64_not_an_image": base64.b64encode(b"GIF89" + draw(st.binary(max_size=64))).decode(),
                "b64_not_a_string": draw(st.sampled_from([7, None, [], {"b64": "x"}])),
                "b64_too_many_pixels": _png_b64(65, 64)}[fault]}
        elif fault == "value":
            poke(draw, nested, value_fault(draw))
        elif fault == "missing_row":
            del nested[draw(st.integers(0, len(nested) - 1))]
        elif fault == "short_row":
            row = nested[draw(st.integers(0, len(nested) - 1))]
            del row[draw(st.integers(0, len(row) - 1))]
        elif fault == "extra_channel":
            for row in nested:
                for px in row:
                    px.append(0)
        elif fault == "nested":
            items[where] = [nested]
        elif fault == "flat":
            items[where] = [v for row in nested for px in row for v in px]
        elif fault == "empty":
            items[where] = []
        elif fault == "unknown_key":
            items[where] = {"pixels": nested}
    columnar = draw(st.booleans())
    key = "inputs" if columnar else "instances"
    document = {key: {"images": items} if columnar and draw(st.booleans()) else items}
    if (not columnar and len(items) == 1 and isinstance(items[0], dict) and "b64" in items[0]
            and draw(st.booleans())):
        document[key] = items[0]  # one b64 image, not in a list
    tta = draw(st.sampled_from([None, False, True]))
    if tta is not None:
        document["tta"] = tta
    if "tta_not_a_bool" in faults:
        document["tta"] = draw(st.sampled_from(["yes", 1, None, [True]]))
    if "both_keys" in faults:
        document["inputs" if key == "instances" else "instances"] = items
    if "neither_key" in faults:
        document["images"] = items
        document.pop("instances", None)
        document.pop("inputs", None)
    if "inputs_without_images" in faults:
        document.pop(key, None)
        document["inputs"] = {"pictures": items}
    if "no_instances" in faults:
        document[key] = []
    if "instances_not_a_list" in faults:
        document[key] = draw(st.sampled_from([5, "x", None, True]))
    body = json.dumps(document).encode()
    if "not_an_object" in faults:
        body = json.dumps(draw(st.sampled_from([items, "instances", 3, None]))).encode()
    if "truncated" in faults:
        body = body[:draw(st.integers(0, len(body) - 1))]
    if "not_utf8" in faults:
        body = b"\xff\xfe" + body
    if "too_large" in faults:
        body += b" " * (MAX_BODY + 1 - len(body))
    path = draw(st.sampled_from(sorted(REST_PATHS)))
    if "bad_path" in faults:
        path = draw(st.sampled_from(REST_BAD_PATHS))
    query = draw(st.sampled_from(["", "", "?tta=1"]))
    return Case(images, REST_PATHS.get(path), bool(tta) or bool(query), faults,
                path=path + query, body=body, columnar=columnar)


def _png_b64(width, height):
    buf = io.BytesIO()
    Image.new("RGB", (width, height), (1, 2, 3)).save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode()


@edges(INSTANCE_FAULTS + BODY_FAULTS)
def test_generated_tf_serving_rest_requests(served, focus):
    server, _ = served

    @generated(rest_requests, focus)
    def check(case):
        status, _, body = post(server, case.request["path"], case.request["body"],
                               {"Content-Type": "application/json"})
        COUNTS["TF Serving REST"][f"HTTP {status}"] += 1
        event(f"HTTP {status}")
        if case.faults:
            return assert_refused(status, body, case)
        assert status == 200, (status, body[:300])
        answer = json.loads(body)
        if case.request["columnar"]:
            outputs = answer["outputs"]
            logits, probs = outputs["logits"], outputs["probabilities"]
        else:
            rows = answer["predictions"]
            logits, probs = [r["logits"] for r in rows], [r["probabilities"] for r in rows]
        assert_close(logits, probs, case, served)
    check()
    assert_still_answers(server, served)


def assert_still_answers(server, served):
    image = np.full((1, 32, 32, 3), 77, np.uint8)
    status, answer = server.predict({"instances": image.tolist()})
    assert status == 200
    np.testing.assert_allclose(answer["predictions"][0]["probabilities"],
                               served[1][3].run(image)[1][0], atol=1e-6)


# ---------------------------------------------------------------- the Open Inference Protocol

V2_PATHS = {"/v2/models/davidnet/infer": 3, "/v2/models/davidnet/versions/1/infer": 1,
            "/v2/models/davidnet/versions/3/infer": 3}
V2_BAD_PATHS = ["/v2/models/resnet/infer", "/v2/models/davidnet/versions/2/infer",
                "/v2/models/davidnet/versions/x/infer", "/v2/models/resnet/versions/1/infer"]
V2_FAULTS = ["datatype", "shape_rank", "shape_dims", "shape_batch", "shape_not_integers", "too_many",
             "input_name", "two_inputs", "inputs_not_a_list", "data_count", "data_value",
             "data_float", "binary_size", "binary_size_not_an_integer", "binary_bytes",
             "binary_unclaimed", "header_not_a_number", "header_past_the_body", "header_short",
             "header_long", "outputs_unknown", "outputs_not_a_list", "binary_data_not_a_bool",
             "parameters_not_an_object", "tta_not_a_bool", "truncated", "too_large", "bad_path"]
BINARY_ONLY = {"binary_size", "binary_size_not_an_integer", "binary_bytes", "header_long"}


@st.composite
def v2_requests(draw, focus):
    faults = chosen_faults(draw, focus, V2_FAULTS)
    binary = draw(st.booleans()) or bool(faults & BINARY_ONLY)
    images = draw(pixel_arrays(st.integers(MAX_INSTANCES + 1, MAX_INSTANCES + 4)
                               if "too_many" in faults else st.integers(1, 3)))
    shape = list(images.shape)
    tensor = {"name": "images", "datatype": "UINT8", "shape": shape}
    raw = images.tobytes()
    if binary:
        tensor["parameters"] = {"binary_data_size": len(raw)}
    else:
        tensor["data"] = images.ravel().tolist() if draw(st.booleans()) else images.tolist()
    request = {"inputs": [tensor]}
    outputs = draw(st.one_of(st.none(), st.lists(
        st.tuples(st.sampled_from(["logits", "probabilities"]), st.sampled_from([None, True, False])),
        min_size=1, max_size=2, unique_by=lambda o: o[0])))
    if outputs is not None:
        request["outputs"] = [{"name": n, **({} if b is None else {"parameters": {"binary_data": b}})}
                              for n, b in outputs]
    parameters = {}
    tta = draw(st.sampled_from([None, False, True]))
    if tta is not None:
        parameters["tta"] = tta
    if draw(st.booleans()):
        parameters["binary_data_output"] = draw(st.booleans())
    if parameters:
        request["parameters"] = parameters
    request_id = draw(st.sampled_from([None, "abc", 7]))
    if request_id is not None:
        request["id"] = request_id

    if "datatype" in faults:
        tensor["datatype"] = draw(st.sampled_from(["FP32", "INT8", "uint8", "BYTES", None, 3]))
    if "shape_rank" in faults:
        tensor["shape"] = draw(st.sampled_from([shape[:3], shape + [1], [shape[0] * 3072]]))
    if "shape_dims" in faults:
        tensor["shape"] = [shape[0], 32, draw(st.sampled_from([28, 33])), 3]
    if "shape_batch" in faults:
        tensor["shape"] = [draw(st.sampled_from([0, -1, -2 ** 40])), 32, 32, 3]
    if "shape_not_integers" in faults:
        tensor["shape"] = draw(st.sampled_from([[float(shape[0]), 32, 32, 3], [str(shape[0]), 32, 32, 3],
                                                None, "1,32,32,3"]))
    if "input_name" in faults:
        tensor["name"] = draw(st.sampled_from(["image", "", None]))
    if "two_inputs" in faults:
        request["inputs"].append(dict(tensor, name="extra"))
    if "inputs_not_a_list" in faults:
        request["inputs"] = tensor
    if "data_count" in faults:
        if binary:
            tensor.pop("parameters")
        tensor["data"] = images.ravel().tolist()[:-1] if draw(st.booleans()) else images.ravel().tolist() + [0]
        binary, raw = False, b""
    if "data_value" in faults or "data_float" in faults:
        if binary:
            tensor.pop("parameters")
            binary, raw = False, b""
        data = images.ravel().tolist()
        data[draw(st.integers(0, len(data) - 1))] = (
            value_fault(draw) if "data_value" in faults else float(draw(st.integers(0, 255))))
        tensor["data"] = data
    size = images.size  # what binary_data_size must say
    if "binary_size" in faults:
        tensor.setdefault("parameters", {})["binary_data_size"] = size + draw(st.sampled_from([-1, 1, -size]))
    if "binary_size_not_an_integer" in faults:
        tensor.setdefault("parameters", {})["binary_data_size"] = draw(st.sampled_from(
            [str(size), float(size), True, None]))
    if "outputs_unknown" in faults:
        request["outputs"] = (request.get("outputs") or []) + [{"name": draw(st.sampled_from(
            ["class", "Logits", "", None]))}]
    if "outputs_not_a_list" in faults:
        request["outputs"] = draw(st.sampled_from(["logits", {"name": "logits"}, 1]))
    if "binary_data_not_a_bool" in faults:
        request["outputs"] = [{"name": "logits", "parameters": {"binary_data": draw(st.sampled_from(
            ["true", 1, None]))}}]
    if "parameters_not_an_object" in faults:
        request["parameters"] = draw(st.sampled_from([[1], "tta", 1]))
    if "tta_not_a_bool" in faults:
        request["parameters"] = {"tta": draw(st.sampled_from(["yes", 1, None]))}

    head = json.dumps(request).encode()
    if "truncated" in faults:
        head = head[:draw(st.integers(0, len(head) - 1))]
    if "binary_bytes" in faults and raw:
        raw = raw[:draw(st.integers(0, len(raw) - 1))]
    body = head + raw if binary else head
    if "binary_unclaimed" in faults:  # bytes after the JSON (or the claimed ones) that no input claims
        body += b"\0" + images.tobytes()
        binary = binary or draw(st.booleans())  # with or without a header naming the JSON's length
    headers = {"Content-Type": "application/json"}
    if binary:
        headers["Inference-Header-Content-Length"] = str(len(head))
    if "header_not_a_number" in faults:
        headers["Inference-Header-Content-Length"] = draw(st.sampled_from(["x", "-1", "1e3", ""]))
    if "header_past_the_body" in faults:
        headers["Inference-Header-Content-Length"] = str(len(body) + draw(st.integers(1, 10 ** 6)))
    if "header_short" in faults and head:
        headers["Inference-Header-Content-Length"] = str(draw(st.integers(0, len(head) - 1)))
    if "header_long" in faults and len(body) > len(head):
        headers["Inference-Header-Content-Length"] = str(len(head) + draw(st.integers(1, len(body) - len(head))))
    if "too_large" in faults:
        body += b" " * (MAX_BODY + 1 - len(body))
    path = draw(st.sampled_from(sorted(V2_PATHS)))
    if "bad_path" in faults:
        path = draw(st.sampled_from(V2_BAD_PATHS))
    wanted = [(n, parameters.get("binary_data_output", False) if b is None else b)
              for n, b in (outputs or [("logits", None), ("probabilities", None)])]
    return Case(images, V2_PATHS.get(path), bool(tta), faults, path=path, body=body, headers=headers,
                outputs=wanted, id=request_id if isinstance(request_id, str) else None)


@edges(V2_FAULTS)
def test_generated_open_inference_protocol_requests(served, focus):
    server, _ = served

    @generated(v2_requests, focus)
    def check(case):
        status, headers, body = post(server, case.request["path"], case.request["body"],
                                     case.request["headers"])
        COUNTS["Open Inference Protocol"][f"HTTP {status}"] += 1
        event(f"HTTP {status}")
        if case.faults:
            return assert_refused(status, body, case)
        assert status == 200, (status, body[:300])
        length = {k.lower(): v for k, v in headers.items()}.get("inference-header-content-length")
        head, binary = (body, b"") if length is None else (body[:int(length)], body[int(length):])
        answer = json.loads(head)
        assert answer["model_version"] == str(case.version) and answer.get("id") == case.request["id"]
        assert [(o["name"], "parameters" in o) for o in answer["outputs"]] == case.request["outputs"]
        got = {}
        for output in answer["outputs"]:
            assert (output["datatype"], output["shape"]) == ("FP32", [len(case.images), 10])
            if "parameters" in output:
                size = output["parameters"]["binary_data_size"]
                got[output["name"]], binary = np.frombuffer(binary[:size], np.float32), binary[size:]
            else:
                got[output["name"]] = np.asarray(output["data"], np.float32)
        assert binary == b""
        want_logits, want_probs = expected(case, served)
        for name, want in (("logits", want_logits), ("probabilities", want_probs)):
            if name in got:
                np.testing.assert_allclose(got[name].reshape(-1, 10), want,
                                           atol=1e-5 if name == "logits" else 1e-6)
    check()
    assert_still_answers(server, served)


# ---------------------------------------------------------------- TensorFlow Serving gRPC

GRPC_FAULTS = ["model_name", "version", "version_label", "signature", "no_input", "extra_input",
               "input_name", "dtype", "rank", "dims", "batch", "too_many", "content_length",
               "int_val_count", "int_val_value", "no_values", "output_filter", "too_large"]
DTYPES = [types_pb2.DT_FLOAT, types_pb2.DT_INT32, types_pb2.DT_INT8, types_pb2.DT_STRING,
          types_pb2.DT_INVALID, types_pb2.DT_UINT16, 999]


@st.composite
def grpc_requests(draw, focus):
    faults = chosen_faults(draw, focus, GRPC_FAULTS)
    images = draw(pixel_arrays(st.integers(MAX_INSTANCES + 1, MAX_INSTANCES + 4)
                               if "too_many" in faults else st.integers(1, 3)))
    request = predict_pb2.PredictRequest()
    request.model_spec.name = "davidnet"
    version = 3
    choice = draw(st.sampled_from(["latest", "1", "3", "stable"]))
    if choice in ("1", "3"):
        request.model_spec.version.value = version = int(choice)
    elif choice == "stable":
        request.model_spec.version_label, version = "stable", 1
    signature = draw(st.sampled_from(["", "serving_default", "serving_tta"]))
    request.model_spec.signature_name = signature
    tensor = tensor_pb2.TensorProto(dtype=types_pb2.DT_UINT8)
    shape = list(images.shape)
    content = draw(st.sampled_from(["tensor_content", "int_val", "both"]))
    if content in ("tensor_content", "both"):
        tensor.tensor_content = images.tobytes()
    if content in ("int_val", "both"):  # with both, tensor_content is the one read
        tensor.int_val.extend(images.ravel().tolist())
    filters = draw(st.lists(st.sampled_from(["logits", "probabilities"]), max_size=3))
    request.output_filter.extend(filters)

    if "model_name" in faults:
        request.model_spec.name = draw(st.sampled_from(["resnet", "", "DavidNet"]))
    if "version" in faults:
        request.model_spec.version.value = draw(st.sampled_from([2, 0, -1, 2 ** 62]))
    if "version_label" in faults:
        request.model_spec.version_label = draw(st.sampled_from(["canary", "Stable", "stable2"]))
    if "signature" in faults:
        request.model_spec.signature_name = draw(st.sampled_from(["predict", "serving", "tta"]))
    if "dtype" in faults:
        tensor.dtype = draw(st.sampled_from(DTYPES))
    if "rank" in faults:
        shape = draw(st.sampled_from([shape[:3], shape + [1], [int(images.size)], []]))
    if "dims" in faults:
        shape = [len(images), draw(st.sampled_from([28, 64, -32])), 32, 3]
    if "batch" in faults:
        shape = [draw(st.sampled_from([0, -1, -2 ** 40])), 32, 32, 3]
    if "content_length" in faults:
        cut = draw(st.integers(1, 3072))
        tensor.ClearField("int_val")
        tensor.tensor_content = (images.tobytes()[:-cut] if draw(st.booleans())
                                 else images.tobytes() + bytes(cut))
    if "int_val_count" in faults:
        tensor.ClearField("tensor_content")
        values = images.ravel().tolist()
        tensor.ClearField("int_val")
        tensor.int_val.extend(values[:-1] if draw(st.booleans()) else values + [0])
    if "int_val_value" in faults:
        tensor.ClearField("tensor_content")
        values = images.ravel().tolist()
        values[draw(st.integers(0, len(values) - 1))] = draw(st.one_of(
            st.integers(256, 2 ** 31 - 1), st.integers(-2 ** 31, -1)))
        tensor.ClearField("int_val")
        tensor.int_val.extend(values)
    if "no_values" in faults:
        tensor.ClearField("tensor_content")
        tensor.ClearField("int_val")
        if draw(st.booleans()):
            tensor.float_val.extend([1.0] * int(images.size))
    if "output_filter" in faults:
        request.output_filter.append(draw(st.sampled_from(["class", "Logits", ""])))
    if "too_large" in faults:
        tensor.string_val.append(bytes(MAX_BODY + 1))
    tensor.tensor_shape.CopyFrom(tensor_shape_pb2.TensorShapeProto(
        dim=[tensor_shape_pb2.TensorShapeProto.Dim(size=s) for s in shape]))
    name = "images"
    if "input_name" in faults:
        name = draw(st.sampled_from(["image", "", "inputs"]))
    if "no_input" not in faults:
        request.inputs[name].CopyFrom(tensor)
    if "extra_input" in faults:
        request.inputs["extra"].CopyFrom(tensor)
    return Case(images, version, signature == "serving_tta", faults, message=request,
                outputs=set(filters) or {"logits", "probabilities"})


@edges(GRPC_FAULTS)
def test_generated_tf_serving_grpc_requests(served, focus):
    server, _ = served
    with grpc.insecure_channel(f"127.0.0.1:{server.grpc_port}") as channel:
        stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)

        @generated(grpc_requests, focus)
        def check(case):
            try:
                response, code = stub.Predict(case.request["message"], timeout=120), "OK"
            except grpc.RpcError as e:
                response, code, details = None, e.code().name, e.details()
            COUNTS["TF Serving gRPC"][code] += 1
            event(code)
            if case.faults:
                assert code in GRPC_REFUSALS, (code, case.faults)
                if case.only_too_large:
                    assert code == "RESOURCE_EXHAUSTED", (code, details, case.faults)
                assert details and details.strip(), code
                return
            assert code == "OK"
            assert response.model_spec.version.value == case.version
            assert set(response.outputs) == case.request["outputs"]
            got = {}
            for name, tensor in response.outputs.items():
                assert tensor.dtype == types_pb2.DT_FLOAT
                assert [d.size for d in tensor.tensor_shape.dim] == [len(case.images), 10]
                got[name] = np.frombuffer(tensor.tensor_content, np.float32).reshape(-1, 10)
            want_logits, want_probs = expected(case, served)
            for name, want in (("logits", want_logits), ("probabilities", want_probs)):
                if name in got:
                    np.testing.assert_allclose(got[name], want, atol=1e-5 if name == "logits" else 1e-6)
        check()
    assert_still_answers(server, served)
