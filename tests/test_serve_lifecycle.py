"""Shutdown that no client sees as a broken connection: on SIGTERM the status endpoint
answers 503 for --drain-seconds while predictions go on, then new requests get 503 with
Connection: close, requests in flight finish, and the process exits 0."""
import http.client
import json
import signal
import socket
import sys
import threading
import time

import pytest

from export.serving import lifecycle
from tests import onnx_models
from tests.serving import Server


PAYLOAD = json.dumps({"instances": [[[[10, 20, 30]] * 32] * 32] * 2})


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return onnx_models.save(tmp_path_factory.mktemp("model") / "m.onnx", favourite=3)


def _client(port, outcomes, stop):
    """One new connection per request, as urllib makes them; every outcome recorded."""
    while not stop.is_set():
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        try:
            conn.request("POST", "/v1/models/davidnet:predict", PAYLOAD)
            response = conn.getresponse()
            body = response.read()
            if response.status == 200 and len(json.loads(body)["predictions"]) == 2:
                outcomes.append("answer")
            elif response.status == 503 and "shutting down" in json.loads(body)["error"]:
                outcomes.append("503")
            else:
                outcomes.append(f"HTTP {response.status}: {body[:100]!r}")
        except ConnectionRefusedError:
            outcomes.append("refused")
            time.sleep(0.01)
        except Exception as e:  # a reset, a broken pipe, a connection closed unanswered
            outcomes.append(f"{type(e).__name__}: {e}")
        finally:
            conn.close()


@pytest.mark.slow
@pytest.mark.parametrize("attempt", range(5))
def test_sigterm_under_16_clients_gives_answers_503s_or_refusals_never_a_reset(model, attempt):
    server = Server(model, "--quiet", "--drain-seconds", "0.5")
    outcomes, stop = [], threading.Event()
    threads = [threading.Thread(target=_client, args=(server.port, outcomes, stop))
               for _ in range(16)]
    for t in threads:
        t.start()
    time.sleep(0.5)
    server.proc.send_signal(signal.SIGTERM)
    # draining: not ready, still answering
    time.sleep(0.1)
    status_during_drain = server.request("GET", "/v1/models/davidnet")[0]
    answered_before = outcomes.count("answer")
    time.sleep(0.2)
    answered_during_drain = outcomes.count("answer") - answered_before
    code, err = server.stop()  # waits for the exit
    time.sleep(0.2)  # the clients now meet a closed port
    stop.set()
    for t in threads:
        t.join()
    unexpected = [o for o in outcomes if o not in ("answer", "503", "refused")]
    assert unexpected == [], unexpected[:5]
    assert code == 0, err[-2000:]
    assert status_during_drain == 503 and answered_during_drain > 0
    assert outcomes.count("answer") > 20 and outcomes[-1] == "refused"


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="a Linux socket filter")
def test_the_closing_listener_queues_no_new_connection_and_the_late_client_is_refused():
    """The window the test above can only hit by chance: a connection that joins the listen
    queue after the last accept is reset when the port closes. With the SYN filter on, the
    queued connection is still accepted and answered, a new one never joins the queue, and
    once the port is closed its retried SYN is refused."""
    listener = socket.create_server(("127.0.0.1", 0), backlog=8)
    port = listener.getsockname()[1]
    queued = socket.create_connection(("127.0.0.1", port), timeout=5)
    assert lifecycle._drop_new_connections(listener)
    late = []

    def connect_late():
        try:
            socket.create_connection(("127.0.0.1", port), timeout=10).close()
            late.append("connected")
        except OSError as e:
            late.append(type(e).__name__)

    thread = threading.Thread(target=connect_late)
    thread.start()
    time.sleep(0.3)  # its SYN has been sent, and dropped
    listener.setblocking(False)
    conn, _ = listener.accept()
    queued.sendall(b"ping")
    assert conn.recv(4) == b"ping"
    with pytest.raises(BlockingIOError):  # the late client never reached the queue
        listener.accept()
    listener.close()
    thread.join()
    assert late == ["ConnectionRefusedError"]
    conn.close()
    queued.close()
