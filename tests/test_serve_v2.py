"""The Open Inference Protocol (v2), proven with Triton's own HTTP client (tritonclient):
health, metadata, infer with binary tensors (its default) and with JSON, versions, errors;
the Triton / KServe model repository export, checked against Triton's ModelConfig; and a
quick gRPC round trip beside them (the full gRPC tests, with TensorFlow Serving's own
client, are in test_serve_grpc)."""
import numpy as np
import pytest
import tritonclient.http as httpclient  # a pinned requirement: missing, this module fails
from tritonclient.utils import InferenceServerException

from export.predict import OnnxClassifier
from tests import onnx_models
from tests.serving import Server


IMAGES = np.random.default_rng(8).integers(0, 256, (5, 32, 32, 3), dtype=np.uint8)


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    base = tmp_path_factory.mktemp("models")
    onnx_models.publish(base, 1, favourite=6, seed=1)
    onnx_models.publish(base, 3, favourite=9, seed=3)
    return base


@pytest.fixture(scope="module")
def server(base):
    with Server("--model-base-path", str(base), "--version-policy", "all", "--quiet") as s:
        yield s


@pytest.fixture
def client(server):
    c = httpclient.InferenceServerClient(f"127.0.0.1:{server.port}")
    yield c
    c.close()


@pytest.mark.slow
def test_health_and_metadata(client):
    assert client.is_server_live() and client.is_server_ready()
    assert client.is_model_ready("davidnet") and client.is_model_ready("davidnet", "1")
    assert not client.is_model_ready("davidnet", "2") and not client.is_model_ready("resnet")
    assert "binary_tensor_data" in client.get_server_metadata()["extensions"]
    meta = client.get_model_metadata("davidnet")
    assert meta["versions"] == ["1", "3"] and meta["platform"] == "onnxruntime_onnx"
    assert meta["inputs"] == [{"name": "images", "datatype": "UINT8", "shape": [-1, 32, 32, 3]}]
    assert [(o["name"], o["datatype"], o["shape"]) for o in meta["outputs"]] == [
        ("logits", "FP32", [-1, 10]), ("probabilities", "FP32", [-1, 10])]


@pytest.mark.slow
@pytest.mark.parametrize("binary", [True, False])
def test_infer_equals_export_predict(client, base, binary):
    images = httpclient.InferInput("images", list(IMAGES.shape), "UINT8")
    images.set_data_from_numpy(IMAGES, binary_data=binary)
    outputs = [httpclient.InferRequestedOutput(name, binary_data=binary)
               for name in ("logits", "probabilities")]
    for version, folder in (("", "3"), ("1", "1")):
        result = client.infer("davidnet", [images], model_version=version, outputs=outputs)
        logits, probs = OnnxClassifier(str(base / folder / "model.onnx")).run(IMAGES)
        np.testing.assert_allclose(result.as_numpy("probabilities"), probs, atol=1e-6)
        np.testing.assert_allclose(result.as_numpy("logits"), logits, atol=1e-5)
        assert result.get_response()["model_version"] == folder
    # tritonclient's defaults: binary inputs, every output, binary outputs
    images.set_data_from_numpy(IMAGES)
    result = client.infer("davidnet", [images], parameters={"tta": True})
    np.testing.assert_allclose(result.as_numpy("probabilities"),
                               OnnxClassifier(str(base / "3" / "model.onnx")).run(IMAGES, tta=True)[1],
                               atol=1e-6)


@pytest.mark.slow
@pytest.mark.parametrize("name,version,shape,datatype,message", [
    ("resnet", "", [1, 32, 32, 3], "UINT8", "Servable not found for request: Latest(resnet)"),
    ("davidnet", "2", [1, 32, 32, 3], "UINT8", "Servable not found for request: Specific(davidnet, 2)"),
    ("davidnet", "", [1, 28, 28, 3], "UINT8", "input images: shape [1, 28, 28, 3], expected [N, 32, 32, 3]"),
    ("davidnet", "", [1, 32, 32, 3], "FP32", "input images: datatype 'FP32', expected \"UINT8\""),
])
def test_errors_name_what_is_wrong(client, name, version, shape, datatype, message):
    data = np.zeros(shape, np.uint8 if datatype == "UINT8" else np.float32)
    images = httpclient.InferInput("images", shape, datatype)
    images.set_data_from_numpy(data)
    with pytest.raises(InferenceServerException) as e:
        client.infer(name, [images], model_version=version)
    assert message in str(e.value)


# ---------------------------------------------------------------- the model repository


@pytest.mark.slow
def test_model_repository_parses_as_tritons_model_config_and_is_served(tmp_path, capsys):
    from google.protobuf import text_format
    from tritonclient.grpc import model_config_pb2

    from export import model_repository

    model = onnx_models.save(tmp_path / "m.onnx", favourite=4)
    assert model_repository.main([model, str(tmp_path / "repo")]) == 0
    folder = tmp_path / "repo" / "davidnet"
    assert sorted(p.name for p in folder.iterdir()) == ["1", "config.pbtxt", "labels.txt"]
    config = text_format.Parse((folder / "config.pbtxt").read_text(), model_config_pb2.ModelConfig())
    assert (config.name, config.platform, config.max_batch_size) == ("davidnet", "onnxruntime_onnx", 256)
    assert config.dynamic_batching.max_queue_delay_microseconds == 2000
    # Triton's dims leave out the batch dimension; its types are named after ONNX's
    onnx_types = {"tensor(uint8)": "TYPE_UINT8", "tensor(float)": "TYPE_FP32"}
    session = OnnxClassifier(str(folder / "1" / "model.onnx")).session
    for declared, actual in ((config.input, session.get_inputs()), (config.output, session.get_outputs())):
        assert [(t.name, model_config_pb2.DataType.Name(t.data_type), list(t.dims)) for t in declared] == [
            (t.name, onnx_types[t.type], list(t.shape[1:])) for t in actual]
    assert all(t.label_filename == "labels.txt" for t in config.output)
    assert (folder / "labels.txt").read_text().split() == onnx_models.CLASSES
    with Server("--model-base-path", str(folder), "--quiet") as server:
        status, answer = server.predict({"instances": [IMAGES[0].tolist()]})
        assert status == 200 and answer["predictions"][0]["class"] == "deer"


@pytest.mark.slow
def test_grpc_answers_beside_rest(server):
    """The project's own gRPC client (bench/grpc_clients.py, in a process of its own: this
    one may have loaded TensorFlow, whose messages share the protos' names) gets answers:
    it counts a reply only when it decodes to probabilities for its 3 images."""
    import json
    import os
    import subprocess
    import sys

    from tests.serving import ROOT

    done = subprocess.run([sys.executable, "-m", "bench.grpc_clients", "--port", str(server.grpc_port),
                           "--clients", "2", "--requests", "6", "--images", "3"], cwd=ROOT,
                          env=dict(os.environ, PYTHONPATH=ROOT),
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(done.stdout.splitlines()[-1])
    assert result["errors"] == [] and result["requests"] == 6 and result["images_per_request"] == 3
