"""TensorFlow Serving's gRPC API, proven with TensorFlow Serving's own client package
(tensorflow-serving-api) and `tf.make_tensor_proto`, as TF Serving's examples call it:
Predict (tensor_content and int_val, serving_default and serving_tta, versions and labels),
GetModelMetadata, GetModelStatus, status codes for what is wrong, the shared metrics, and a
drain on SIGTERM. The server process loads no TensorFlow. This test process imports
tensorflow_serving.apis, so it never imports export/serving/protos."""
import os
import shutil
import signal
import subprocess
import sys
import threading
import time

import grpc
import numpy as np
import pytest

from export.predict import OnnxClassifier
from tests import onnx_models
from tests.serving import ROOT, Server

import tensorflow as tf  # pinned requirements, both: missing, this module fails
from tensorflow_serving.apis import (get_model_metadata_pb2, get_model_status_pb2,
                                     model_service_pb2_grpc, predict_pb2,
                                     prediction_service_pb2_grpc)

IMAGES = np.random.default_rng(5).integers(0, 256, (6, 32, 32, 3), dtype=np.uint8)


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    base = tmp_path_factory.mktemp("models")
    onnx_models.publish(base, 1, favourite=1, seed=1)
    onnx_models.publish(base, 2, favourite=2, seed=2)
    return base


@pytest.fixture(scope="module")
def server(base):
    with Server("--model-base-path", str(base), "--version-policy", "all",
                "--version-labels", "stable=1", "--quiet") as s:
        yield s


def _stubs(server):
    channel = grpc.insecure_channel(f"127.0.0.1:{server.grpc_port}")
    return (prediction_service_pb2_grpc.PredictionServiceStub(channel),
            model_service_pb2_grpc.ModelServiceStub(channel))


def _request(images, signature="serving_default", version=None, label=None, name="davidnet"):
    request = predict_pb2.PredictRequest()
    request.model_spec.name = name
    request.model_spec.signature_name = signature
    if version is not None:
        request.model_spec.version.value = version
    if label is not None:
        request.model_spec.version_label = label
    request.inputs["images"].CopyFrom(tf.make_tensor_proto(images))
    return request


@pytest.mark.slow
def test_predict_equals_export_predict_in_every_form(server, base):
    predict, _ = _stubs(server)
    latest = OnnxClassifier(str(base / "2" / "model.onnx"))
    first = OnnxClassifier(str(base / "1" / "model.onnx"))
    for kwargs, classifier, tta in (({}, latest, False), ({"signature": ""}, latest, False),
                                    ({"signature": "serving_tta"}, latest, True),
                                    ({"version": 1}, first, False), ({"label": "stable"}, first, False)):
        response = predict.Predict(_request(IMAGES, **kwargs), timeout=30)
        logits, probs = classifier.run(IMAGES, tta=tta)
        np.testing.assert_allclose(tf.make_ndarray(response.outputs["probabilities"]), probs, atol=1e-6)
        np.testing.assert_allclose(tf.make_ndarray(response.outputs["logits"]), logits, atol=1e-5)
        assert response.model_spec.name == "davidnet"
        assert response.model_spec.version.value == (1 if classifier is first else 2)
    # int_val, as clients that build the TensorProto by hand send it; and output_filter
    request = _request(IMAGES[:2])
    tensor = request.inputs["images"]
    tensor.ClearField("tensor_content")
    tensor.int_val.extend(IMAGES[:2].ravel().tolist())
    request.output_filter.append("probabilities")
    response = predict.Predict(request, timeout=30)
    assert set(response.outputs) == {"probabilities"}
    np.testing.assert_allclose(tf.make_ndarray(response.outputs["probabilities"]),
                               latest.run(IMAGES[:2])[1], atol=1e-6)


@pytest.mark.slow
@pytest.mark.parametrize("change,code,message", [
    (lambda r: r.inputs["images"].CopyFrom(tf.make_tensor_proto(np.zeros((1, 28, 28, 3), np.uint8))),
     grpc.StatusCode.INVALID_ARGUMENT, "input images: shape [1, 28, 28, 3], expected [N, 32, 32, 3]"),
    (lambda r: r.inputs["images"].CopyFrom(tf.make_tensor_proto(np.zeros((1, 32, 32, 3), np.float32))),
     grpc.StatusCode.INVALID_ARGUMENT, "input images: dtype DT_FLOAT, expected DT_UINT8"),
    (lambda r: setattr(r.model_spec, "name", "resnet"),
     grpc.StatusCode.NOT_FOUND, "Servable not found for request: Latest(resnet)"),
    (lambda r: r.model_spec.version.__setattr__("value", 7),
     grpc.StatusCode.NOT_FOUND, "Servable not found for request: Specific(davidnet, 7)"),
    (lambda r: setattr(r.model_spec, "version_label", "canary"),
     grpc.StatusCode.INVALID_ARGUMENT, "Unrecognized servable version label: canary"),
    (lambda r: setattr(r.model_spec, "signature_name", "classify"),
     grpc.StatusCode.FAILED_PRECONDITION, "Serving signature key \"classify\" not found"),
    (lambda r: r.inputs["pixels"].CopyFrom(r.inputs["images"]),
     grpc.StatusCode.INVALID_ARGUMENT, "expected exactly [\"images\"]"),
])
def test_what_is_wrong_gets_its_status_code(server, change, code, message):
    predict, _ = _stubs(server)
    request = _request(IMAGES[:1])
    change(request)
    with pytest.raises(grpc.RpcError) as e:
        predict.Predict(request, timeout=30)
    assert e.value.code() == code and message in e.value.details(), e.value.details()


@pytest.mark.slow
def test_metadata_and_status(server):
    predict, models = _stubs(server)
    request = get_model_metadata_pb2.GetModelMetadataRequest()
    request.model_spec.name = "davidnet"
    request.metadata_field.append("signature_def")
    response = predict.GetModelMetadata(request, timeout=30)
    signatures = get_model_metadata_pb2.SignatureDefMap()
    response.metadata["signature_def"].Unpack(signatures)
    assert set(signatures.signature_def) == {"serving_default", "serving_tta"}
    sig = signatures.signature_def["serving_default"]
    assert sig.inputs["images"].dtype == tf.uint8.as_datatype_enum
    assert [d.size for d in sig.inputs["images"].tensor_shape.dim] == [-1, 32, 32, 3]
    assert {k: [d.size for d in v.tensor_shape.dim] for k, v in sig.outputs.items()} == {
        "logits": [-1, 10], "probabilities": [-1, 10]}
    assert response.model_spec.version.value == 2

    status = get_model_status_pb2.GetModelStatusRequest()
    status.model_spec.name = "davidnet"
    answer = models.GetModelStatus(status, timeout=30)
    states = {s.version: get_model_status_pb2.ModelVersionStatus.State.Name(s.state)
              for s in answer.model_version_status}
    assert states == {1: "AVAILABLE", 2: "AVAILABLE"}
    assert all(s.status.error_code == 0 for s in answer.model_version_status)
    status.model_spec.name = "resnet"
    with pytest.raises(grpc.RpcError) as e:
        models.GetModelStatus(status, timeout=30)
    assert e.value.code() == grpc.StatusCode.NOT_FOUND


@pytest.mark.slow
def test_grpc_calls_are_counted_in_the_same_metrics(server):
    from prometheus_client.parser import text_string_to_metric_families

    def count():
        body = server.request("GET", "/monitoring/prometheus/metrics")[1].decode()
        return sum(s.value for f in text_string_to_metric_families(body) for s in f.samples
                   if s.name == "davidnet_requests_total" and s.labels["endpoint"] == "grpc_predict"
                   and s.labels["code"] == "OK")
    predict, _ = _stubs(server)
    before = count()
    for _ in range(4):
        predict.Predict(_request(IMAGES[:1]), timeout=30)
    assert count() - before == 4


@pytest.mark.slow
def test_the_server_loads_no_tensorflow(server):
    with open(f"/proc/{server.proc.pid}/maps") as f:
        maps = f.read()
    assert "libtensorflow" not in maps and "_pywrap_tensorflow" not in maps
    assert "grpc" in maps and "onnxruntime" in maps


@pytest.mark.slow
def test_sigterm_lets_grpc_calls_in_flight_finish(base):
    """8 clients call all the time; each call waits 200 ms in the batcher, so calls are in
    flight when closing begins (SIGTERM + 0.3 s of draining). Every call started before then
    is answered; later ones get UNAVAILABLE from the closing server, or CANCELLED if they
    reach gRPC in the instant it stops (README); the process exits 0."""
    server = Server(str(base / "2"), "--quiet", "--drain-seconds", "0.3", "--batch-window-ms", "200")
    predict, _ = _stubs(server)
    calls, stop = [], threading.Event()

    def client():
        while not stop.is_set():
            started = time.time()
            try:
                predict.Predict(_request(IMAGES[:2]), timeout=30)
                calls.append((started, "OK"))
            except grpc.RpcError as e:
                calls.append((started, e.code().name))
                time.sleep(0.01)
    threads = [threading.Thread(target=client) for _ in range(8)]
    for t in threads:
        t.start()
    time.sleep(1.0)
    sigterm = time.time()
    code, err = server.stop(signal.SIGTERM)
    stop.set()
    for t in threads:
        t.join()
    assert code == 0, err[-2000:]
    before_closing = [outcome for started, outcome in calls if started < sigterm + 0.25]
    assert len(before_closing) > 20 and set(before_closing) == {"OK"}, sorted(set(before_closing))
    assert {outcome for _, outcome in calls} <= {"OK", "UNAVAILABLE", "CANCELLED"}


def test_the_generated_modules_match_their_protos(tmp_path):
    """The committed *_pb2*.py are what grpcio-tools makes of the committed .proto files."""
    protos = os.path.join("export", "serving", "protos")
    shutil.copytree(os.path.join(ROOT, protos), tmp_path / protos,
                ignore=lambda d, names: [n for n in names if not n.endswith(".proto")])
    files = sorted(str(p.relative_to(tmp_path)) for p in (tmp_path / protos).glob("*.proto"))
    for outputs, sources in ((["--python_out=.", "--pyi_out=."], files),
                             (["--grpc_python_out=."], [os.path.join(protos, "tf_serving.proto")])):
        done = subprocess.run([sys.executable, "-m", "grpc_tools.protoc", "-I", ".", *outputs,
                               *sources], cwd=tmp_path, capture_output=True, text=True)
        assert done.returncode == 0, done.stderr
    generated = sorted(p.name for p in (tmp_path / protos).iterdir() if p.suffix in (".py", ".pyi"))
    committed = sorted(n for n in os.listdir(os.path.join(ROOT, protos))
                       if n.endswith((".py", ".pyi")) and n != "__init__.py")
    assert generated == committed
    for name in generated:
        with open(os.path.join(ROOT, protos, name)) as committed:
            assert (tmp_path / protos / name).read_text() == committed.read(), name
