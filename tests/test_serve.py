"""The HTTP server on one trained model: TensorFlow Serving's REST API on a real loopback
port, its errors, micro-batching, no TensorFlow in the process, and the demo page in a real
headless browser. (Versions: test_serve_versions; limits: test_serve_limits; shutdown:
test_serve_lifecycle.)"""
import asyncio
import base64
import io
import json
import os
import shutil
import subprocess
import sys
import threading

import numpy as np
import pytest
from PIL import Image
from selenium import webdriver  # a pinned requirement (the demo page's browser test)
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

from export.predict import OnnxClassifier
from legacy_eager.tta import FLIP
from export.serving.batcher import Batcher
from tests import programs, synthetic
from tests.serving import Server

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def model(exported_run, tiny_arrays):
    """The session's shared run (served read only) and the test images it was scored on."""
    return exported_run[0], tiny_arrays[1][0]


@pytest.fixture(scope="module")
def server(model):
    s = Server(model[0])
    yield s
    s.stop()


@pytest.mark.slow
def test_status_and_metadata_as_tensorflow_serving_gives_them(server):
    status, body = server.request("GET", "/v1/models/davidnet")
    assert status == 200
    assert json.loads(body) == {"model_version_status": [{"version": "1", "state": "AVAILABLE", "status": {
        "error_code": "OK", "error_message": ""}}]}
    status, body = server.request("GET", "/v1/models/davidnet/metadata")
    meta = json.loads(body)
    signature = meta["metadata"]["signature_def"]["signature_def"]["serving_default"]
    dims = lambda t: [int(d["size"]) for d in t["tensor_shape"]["dim"]]  # noqa: E731
    assert signature["inputs"]["images"]["dtype"] == "DT_UINT8"
    assert dims(signature["inputs"]["images"]) == [-1, 32, 32, 3]
    assert {k: (v["dtype"], dims(v)) for k, v in signature["outputs"].items()} == {
        "logits": ("DT_FLOAT", [-1, 10]), "probabilities": ("DT_FLOAT", [-1, 10])}
    assert meta["class_names"][3] == "cat" and meta["model_spec"]["name"] == "davidnet"


@pytest.mark.slow
def test_predictions_equal_export_predicts(model, server):
    run_dir, images = model
    direct_logits, direct_probs = OnnxClassifier(os.path.join(run_dir, "model.onnx")).run(images)
    status, rows = server.predict({"instances": images[:7].tolist()})
    assert status == 200 and len(rows["predictions"]) == 7
    names = OnnxClassifier(os.path.join(run_dir, "model.onnx")).class_names
    for row, lg, pr in zip(rows["predictions"], direct_logits, direct_probs):
        np.testing.assert_allclose(row["probabilities"], pr, atol=1e-6)
        np.testing.assert_allclose(row["logits"], lg, atol=1e-5)
        assert row["class"] == names[int(np.argmax(pr))]
    status, columns = server.predict({"inputs": images[:3].tolist()})
    assert status == 200 and set(columns["outputs"]) == {"logits", "probabilities", "class"}
    np.testing.assert_allclose(columns["outputs"]["probabilities"], direct_probs[:3], atol=1e-6)
    # b64: a PNG file of the image decodes to the same pixels
    png = base64.b64encode(synthetic.png_bytes(images[0])).decode()
    status, b64 = server.predict({"instances": [{"b64": png}]})
    np.testing.assert_allclose(b64["predictions"][0]["probabilities"], direct_probs[0], atol=1e-6)


@pytest.mark.slow
def test_tta_by_query_or_body_averages_with_the_mirror(model, server):
    run_dir, images = model
    tta_logits, tta_probs = OnnxClassifier(os.path.join(run_dir, "model.onnx")).run(images[:4], tta=True)
    for query, payload in (("?tta=1", {"instances": images[:4].tolist()}),
                           ("", {"instances": images[:4].tolist(), "tta": True})):
        status, rows = server.predict(payload, "/v1/models/davidnet:predict" + query)
        assert status == 200
        np.testing.assert_allclose([r["probabilities"] for r in rows["predictions"]], tta_probs, atol=1e-6)


def _tiny_png():
    buf = io.BytesIO()
    Image.new("RGB", (4, 4), (10, 200, 30)).save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode()


@pytest.mark.slow
def test_bad_requests_get_their_error_and_the_server_goes_on(model, server):
    good = {"instances": model[1][:1].tolist()}
    row = [[0, 0, 0]] * 32
    cases = [
        (b"{not json", 400, "request body is not JSON"),
        ({"instances": [[row] * 31]}, 400, "instances[0]: shape [31, 32, 3], expected [32, 32, 3]"),
        ({"instances": [[[[0, 0, 300]] * 32] * 32]}, 400, "instances[0]: value 300 outside 0..255"),
        ({"instances": [[[[0, 0, 1.5]] * 32] * 32]}, 400, "instances[0]: values must be integers"),
        ({"instances": [{"b64": "%%%"}]}, 400, "instances[0]: \"b64\" is not valid base64"),
        ({"instances": [{"b64": base64.b64encode(b"hello").decode()}]}, 400, "undecodable image"),
        ({"instances": [{"b64": _tiny_png()}] * 2000}, 413, "2000 instances; at most 1024"),
        (b"[" + b" " * (20 * 2 ** 20) + b"]", 413, "at most 16777216 (--max-body-mb)"),
        ({"images": []}, 400, "expected a JSON object with \"instances\""),
        (b'{"instances": ' + b"[" * 100000 + b"]" * 100000 + b"}", 400, "nested too deeply"),
    ]
    for payload, code, message in cases:
        status, answer = server.predict(payload)
        assert (status, set(answer)) == (code, {"error"}), (payload if isinstance(payload, dict) else "", answer)
        assert message in answer["error"]
        assert server.predict(good)[0] == 200  # still answering
    status, body = server.request("GET", "/v1/models/resnet")
    # TF Serving's GetModelStatus and Predict words for an unknown model
    assert status == 404 and json.loads(body) == {"error": "Could not find any versions of model resnet"}
    status, body = server.request("POST", "/v1/models/resnet:predict", json.dumps(good))
    assert status == 404 and json.loads(body) == {"error": "Servable not found for request: Latest(resnet)"}


@pytest.mark.slow
def test_concurrent_requests_of_mixed_sizes_get_their_own_rows(model, server):
    run_dir, images = model
    classifier = OnnxClassifier(os.path.join(run_dir, "model.onnx"))
    jobs = [(images[i:i + n], tta) for i, n, tta in
            ((0, 1, False), (1, 3, True), (4, 7, False), (2, 2, False), (9, 5, True), (0, 11, False))] * 3
    answers = [None] * len(jobs)

    def send(k):
        answers[k] = server.predict({"instances": jobs[k][0].tolist(), "tta": jobs[k][1]})
    threads = [threading.Thread(target=send, args=(k,)) for k in range(len(jobs))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for (batch, tta), (status, rows) in zip(jobs, answers):
        assert status == 200 and len(rows["predictions"]) == len(batch)
        np.testing.assert_allclose([r["probabilities"] for r in rows["predictions"]],
                                   classifier.run(batch, tta=tta)[1], atol=1e-6)


def test_requests_in_one_window_run_as_one_batch():
    """The batcher itself: three requests within the window make one ONNX Runtime call, the
    middle one with flip TTA (its mirror images join the call), and each gets its own rows;
    a TTA request after the window makes its own call. The images are random, so no image
    is its own mirror (left-right) or its own upside-down: a missing or wrong-axis mirror
    changes the answer."""
    from export.predict import softmax

    calls = []

    def logits_of(images):  # a stand-in network: 10 pixels from each image's top-left corner
        return images[:, 0, :4].reshape(len(images), -1)[:, :10].astype(np.float32)

    class Recorder:
        tta_views = FLIP

        def run(self, images, batch_size):
            calls.append(len(images))
            return logits_of(images), softmax(logits_of(images))

    rng = np.random.default_rng(3)
    requests = [(rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8), tta)
                for n, tta in ((1, False), (2, True), (3, False), (1, True))]
    for images, _ in requests:
        assert not (images == images[:, :, ::-1]).all() and not (images == images[:, ::-1]).all()

    async def scenario():
        batcher = Batcher(Recorder(), max_batch=64, window=0.2)
        batcher.start()
        together = await asyncio.gather(*(batcher.predict(*r) for r in requests[:3]))
        alone = await batcher.predict(*requests[3])
        await batcher.stop()
        return [*together, alone]

    answers = asyncio.run(scenario())
    assert calls == [1 + 2 * 2 + 3, 2 * 1]  # the TTA requests' mirror images ran with them
    for (images, tta), (logits, probs) in zip(requests, answers):
        expected = logits_of(images)
        if tta:
            expected = (expected + logits_of(np.ascontiguousarray(images[:, :, ::-1]))) / 2
        np.testing.assert_array_equal(logits, expected)
        np.testing.assert_allclose(probs, softmax(expected), rtol=1e-6)


@pytest.mark.slow
def test_server_never_loads_tensorflow(model, server):
    with open(f"/proc/{server.proc.pid}/maps") as f:
        libraries = f.read()
    assert "libtensorflow" not in libraries and "_pywrap_tensorflow" not in libraries
    assert "onnxruntime" in libraries


def test_bad_model_path_is_one_line(tmp_path):
    done = subprocess.run([sys.executable, "-m", "export.serve", str(tmp_path)], cwd=ROOT,
                          env=dict(os.environ, PYTHONPATH=ROOT), capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 2
    assert done.stderr.strip() == (f"error: {tmp_path}: no such ONNX model (expected MODEL.onnx "
                                   "or a run folder with model.onnx)")


# ---------------------------------------------------------------- the demo page, in a browser


@pytest.mark.slow
def test_demo_page_classifies_a_chosen_image_in_a_real_browser(model, server, tmp_path):
    apt = "apt-get install chromium chromium-driver"
    chromium = programs.find("chromium", "chromium-browser", install=apt)
    chromedriver = programs.find("chromedriver", install=apt)
    run_dir, images = model
    picture = tmp_path / "picture.png"
    Image.fromarray(images[5]).resize((96, 96), Image.NEAREST).save(picture)
    expected = OnnxClassifier(os.path.join(run_dir, "model.onnx"))
    from export.predict import to_model_input
    with Image.open(picture) as img:
        probs = expected.run(to_model_input(img)[None])[1][0]
    top5 = [expected.class_names[i] for i in np.argsort(-probs)[:5]]

    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                 "--disable-background-networking", "--disable-component-update", "--no-first-run",
                 f"--user-data-dir={tmp_path / 'profile'}", "--window-size=900,800"):
        options.add_argument(flag)
    browser = webdriver.Chrome(service=Service(chromedriver), options=options)
    try:
        browser.get(f"http://127.0.0.1:{server.port}/")
        assert browser.title == "DavidNet: CIFAR-10 classifier"
        browser.find_element(By.ID, "file").send_keys(str(picture))
        WebDriverWait(browser, 30).until(lambda b: len(b.find_elements(By.CSS_SELECTOR, "#result .row")) == 5)
        rows = browser.find_elements(By.CSS_SELECTOR, "#result .row")
        assert [r.find_element(By.CLASS_NAME, "name").text for r in rows] == top5
        shown = [float(r.find_element(By.CLASS_NAME, "p").text.rstrip("%")) for r in rows]
        np.testing.assert_allclose(shown, np.sort(probs)[::-1][:5] * 100, atol=0.051)
        assert browser.find_element(By.ID, "preview").is_displayed()
        browser.save_screenshot(str(tmp_path / "demo.png"))
        if os.environ.get("DAVIDNET_SCREENSHOT"):
            shutil.copy(tmp_path / "demo.png", os.environ["DAVIDNET_SCREENSHOT"])
    finally:
        browser.quit()
