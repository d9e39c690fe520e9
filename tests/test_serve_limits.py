"""Limits that keep one request or client from stalling the others: bodies decoded off the
event loop (a one-image request overtakes a big one), the pixel cap read from an image's
header before decoding, and a 413 that every client reads, urllib included."""
import base64
import http.client
import io
import json
import struct
import subprocess
import threading
import urllib.error
import urllib.request
import zlib

import pytest
from PIL import Image

from tests import onnx_models, programs
from tests.serving import Server, wait_for

PIXELS = [[[10, 20, 30]] * 32] * 32


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    model = onnx_models.save(tmp_path_factory.mktemp("model") / "m.onnx", favourite=7)
    with Server(model, "--quiet") as s:
        yield s


def _png(width, height, colour=(0, 0, 0)):
    buf = io.BytesIO()
    Image.new("RGB", (width, height), colour).save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode()


def _png_header_only(width, height):
    """A PNG whose header says width x height and whose pixel data is garbage: decoding it
    fails, so an answer that names its size shows that it was never decoded."""
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    raw = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", b"garbage") + chunk(b"IEND", b"")
    return base64.b64encode(raw).decode()


def _in_flight(server, endpoint):
    from prometheus_client.parser import text_string_to_metric_families

    body = server.request("GET", "/monitoring/prometheus/metrics")[1].decode()
    for family in text_string_to_metric_families(body):
        for s in family.samples:
            if s.name == "davidnet_requests_in_flight" and s.labels == {"endpoint": endpoint}:
                return s.value
    return 0


@pytest.mark.slow
def test_a_one_image_request_overtakes_a_big_one_being_decoded(server):
    """Ordering, not timing: a request of twelve 4000x4000 images is in progress (the server
    says so on its metrics endpoint, which it could not answer if decoding blocked the event
    loop) when a one-image request is sent; the one-image request is answered first."""
    big = json.dumps({"instances": [{"b64": _png(4000, 4000)}] * 12})
    finished = []

    def send_big():
        status, answer = server.predict(big.encode())
        finished.append(("big", status, len(answer.get("predictions", []))))
    thread = threading.Thread(target=send_big)
    thread.start()
    wait_for(lambda: _in_flight(server, "predict") >= 1, timeout=30, every=0.01)
    status, answer = server.predict({"instances": [PIXELS]})
    finished.append(("small", status, len(answer["predictions"])))
    thread.join()
    assert finished == [("small", 200, 1), ("big", 200, 12)]


@pytest.mark.slow
def test_an_image_over_the_pixel_cap_is_refused_from_its_header(server):
    status, answer = server.predict({"instances": [{"b64": _png(32, 32)},
                                                   {"b64": _png_header_only(5000, 5000)}]})
    assert status == 400
    assert answer == {"error": "instances[1]: image of 5000x5000 = 25000000 pixels; at most "
                               "16777216 (--max-image-pixels)"}
    # the same garbage at an allowed size is decoded, and fails as undecodable
    status, answer = server.predict({"instances": [{"b64": _png_header_only(64, 64)}]})
    assert status == 400 and "undecodable image" in answer["error"]


@pytest.mark.slow
def test_a_lower_pixel_cap_from_the_flag(tmp_path):
    model = onnx_models.save(tmp_path / "m.onnx")
    with Server(model, "--quiet", "--max-image-pixels", "1000") as s:
        assert s.predict({"instances": [{"b64": _png(31, 32)}]})[0] == 200
        status, answer = s.predict({"instances": [{"b64": _png(32, 32)}]})
        assert status == 400 and "image of 32x32 = 1024 pixels; at most 1000" in answer["error"]


BIG = b'{"instances": [' + b" " * (20 * 2 ** 20) + b"]}"  # 20 MB, over the 16 MB default


def _expect_413(answer):
    assert json.loads(answer)["error"].startswith(f"request body of {len(BIG)} bytes; at most "
                                                  "16777216 (--max-body-mb)")


@pytest.mark.slow
def test_an_oversized_body_gets_its_413_in_urllib(server):
    request = urllib.request.Request(f"http://127.0.0.1:{server.port}/v1/models/davidnet:predict",
                                     data=BIG, headers={"Content-Type": "application/json"})
    for _ in range(3):
        with pytest.raises(urllib.error.HTTPError) as e:
            urllib.request.urlopen(request, timeout=60)
        assert e.value.code == 413
        _expect_413(e.value.read())


@pytest.mark.slow
def test_an_oversized_body_gets_its_413_in_http_client(server):
    for _ in range(3):
        status, answer = server.request("POST", "/v1/models/davidnet:predict", BIG)
        assert status == 413
        _expect_413(answer)


@pytest.mark.slow
def test_an_oversized_body_gets_its_413_in_curl(server, tmp_path):
    curl = programs.find("curl", install="apt-get install curl")
    body = tmp_path / "big.json"
    body.write_bytes(BIG)
    done = subprocess.run([curl, "-sS", "-o", "-", "-w", "\n%{http_code}", "--data-binary",
                           f"@{body}", "-H", "Content-Type: application/json",
                           f"http://127.0.0.1:{server.port}/v1/models/davidnet:predict"],
                          capture_output=True, timeout=60)
    answer, code = done.stdout.rsplit(b"\n", 1)
    assert (done.returncode, code) == (0, b"413"), done.stderr
    _expect_413(answer)


@pytest.mark.slow
def test_a_body_far_over_the_limit_is_answered_without_being_read(server):
    """Past 4x the limit the server does not read the body: the 413 comes with
    Connection: close, straight from the Content-Length."""
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=60)
    conn.putrequest("POST", "/v1/models/davidnet:predict")
    conn.putheader("Content-Length", str(100 * 2 ** 20))
    conn.endheaders()
    response = conn.getresponse()
    assert response.status == 413 and response.getheader("connection") == "close"
    assert json.loads(response.read())["error"].startswith(
        f"request body of {100 * 2 ** 20} bytes; at most 16777216")
    conn.close()
    assert server.predict({"instances": [PIXELS]})[0] == 200
