"""Versions as TensorFlow Serving serves them: a polled base path, new versions rolled in
under load with no failed request, a broken version refused while the serving one stays,
policies and labels, the status document and the Prometheus metrics; export.publish."""
import json
import os
import threading

import pytest
from prometheus_client.parser import text_string_to_metric_families

from export import publish
from tests import onnx_models
from tests.serving import Server, wait_for

PIXELS = [[[10, 20, 30]] * 32] * 32
PREDICT = "/v1/models/davidnet:predict"


def _class(answer):
    return answer["predictions"][0]["class"]


def _states(server, path="/v1/models/davidnet"):
    status, doc = server.json("GET", path)
    assert status == 200, doc
    return {int(v["version"]): (v["state"], v["status"]["error_code"], v["status"]["error_message"])
            for v in doc["model_version_status"]}


def _metrics(server):
    status, body = server.request("GET", "/monitoring/prometheus/metrics")
    assert status == 200
    samples = {}
    for family in text_string_to_metric_families(body.decode()):
        for s in family.samples:
            samples[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return samples


def _sample(samples, name, **labels):
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


@pytest.mark.slow
def test_new_versions_roll_in_under_load_with_no_failed_request(tmp_path):
    """8 clients send all the time while versions 2 and 3 are published and a broken
    version 4 (another input shape) appears: every request is answered 200, the answers
    switch to each new version's predictions, and the status document and the metrics show
    the loads, the unloads and the refusal."""
    base = tmp_path / "models"
    base.mkdir()
    onnx_models.publish(base, 1, favourite=1)
    server = Server("--model-base-path", str(base), "--poll-seconds", "0.1", "--quiet")
    answers, failures, stop = [], [], threading.Event()
    per_client = [[] for _ in range(8)]

    def client(mine):
        while not stop.is_set():
            try:
                status, answer = server.predict({"instances": [PIXELS]})
            except OSError as e:
                failures.append(repr(e))
                continue
            if status == 200:
                answers.append(_class(answer))
                mine.append(_class(answer))
            else:
                failures.append((status, answer))
    threads = [threading.Thread(target=client, args=(mine,)) for mine in per_client]
    for t in threads:
        t.start()
    try:
        wait_for(lambda: len(answers) > 20)
        onnx_models.publish(base, 2, favourite=2)
        wait_for(lambda: answers[-1] == "bird")
        onnx_models.publish(base, 3, favourite=3)
        wait_for(lambda: answers[-1] == "cat")
        onnx_models.publish(base, 4, favourite=4, image_size=64)
        wait_for(lambda: _states(server).get(4, ("",))[0] == "END")
        seen = len(answers)
        wait_for(lambda: len(answers) > seen + 20)
    finally:
        stop.set()
        for t in threads:
            t.join()
    code, err = server.stop()
    assert failures == [] and code == 0, (failures[:5], err[-2000:])
    # Each client, sending one request after another, got version 1's answers, then 2's,
    # then 3's: never an older version once it had seen a newer one; 4 never answered.
    rank = {"automobile": 1, "bird": 2, "cat": 3}
    for mine in per_client:
        assert [rank[c] for c in mine] == sorted(rank[c] for c in mine)
        assert mine[0] == "automobile" and mine[-1] == "cat"
    assert "refused" in err and "version 4" in err


@pytest.mark.slow
def test_status_document_and_metrics_tell_the_story(tmp_path):
    base = tmp_path / "models"
    base.mkdir()
    onnx_models.publish(base, 1, favourite=1)
    with Server("--model-base-path", str(base), "--poll-seconds", "0.1", "--quiet") as server:
        onnx_models.publish(base, 2, favourite=2)
        onnx_models.publish(base, 4, favourite=4, image_size=64)
        wait_for(lambda: _states(server).get(1, ("",))[0] == "END")
        states = _states(server)
        assert states[2] == ("AVAILABLE", "OK", "")
        assert states[1] == ("END", "OK", "")
        state, code, message = states[4]
        assert (state, code) == ("END", "INVALID_ARGUMENT")
        assert message.endswith("input 'images' is tensor(uint8) [-1, 64, 64, 3], expected "
                                "tensor(uint8) [-1, 32, 32, 3]")
        assert _states(server, "/v1/models/davidnet/versions/2") == {2: ("AVAILABLE", "OK", "")}
        assert server.json("GET", "/v1/models/davidnet/versions/7") == (
            404, {"error": "Could not find version 7 of model davidnet"})
        m = _metrics(server)
        assert [_sample(m, "davidnet_model_loads_total", version=v) for v in "124"] == [1, 1, 0]
        assert _sample(m, "davidnet_model_load_failures_total", version="4") == 1
        assert _sample(m, "davidnet_model_version_state", version="2", state="AVAILABLE") == 1
        assert _sample(m, "davidnet_model_version_state", version="1", state="END") == 1
        assert _sample(m, "davidnet_model_version_state", version="1", state="AVAILABLE") == 0


@pytest.mark.slow
def test_metric_counters_move_by_exactly_the_requests_sent(tmp_path):
    model = onnx_models.save(tmp_path / "m.onnx", favourite=6)
    with Server(model, "--quiet") as server:
        before = _metrics(server)
        for _ in range(5):
            assert server.predict({"instances": [PIXELS, PIXELS, PIXELS]})[0] == 200
        for _ in range(2):
            assert server.predict({"instances": [[[0]]]})[0] == 400
        assert server.predict({"instances": [PIXELS]}, "/v1/models/other:predict")[0] == 404
        for _ in range(3):
            assert server.request("GET", "/v1/models/davidnet")[0] == 200
        after = _metrics(server)

    def moved(name, **labels):
        return _sample(after, name, **labels) - _sample(before, name, **labels)
    assert moved("davidnet_requests_total", endpoint="predict", version="1", code="200") == 5
    assert moved("davidnet_requests_total", endpoint="predict", version="", code="400") == 2
    assert moved("davidnet_requests_total", endpoint="predict", version="", code="404") == 1
    assert moved("davidnet_requests_total", endpoint="status", version="", code="200") == 3
    assert moved("davidnet_images_total", version="1") == 15
    assert moved("davidnet_request_latency_seconds_count", endpoint="predict") == 8
    assert moved("davidnet_batch_images_sum") == 15
    assert moved("davidnet_queue_wait_seconds_count") == 5


@pytest.mark.slow
def test_policies_and_labels(tmp_path):
    base = tmp_path / "models"
    base.mkdir()
    for version in (1, 2, 3):
        onnx_models.publish(base, version, favourite=version)
    flags = ["--model-base-path", str(base), "--poll-seconds", "0", "--quiet"]
    with Server(*flags, "--version-policy", "all", "--version-labels", "stable=1,canary=2") as s:
        assert {v: st[0] for v, st in _states(s).items()} == {1: "AVAILABLE", 2: "AVAILABLE",
                                                                3: "AVAILABLE"}
        assert _class(s.predict({"instances": [PIXELS]})[1]) == "cat"  # latest: 3
        for path, expected in (("/versions/1", "automobile"), ("/versions/2", "bird"),
                               ("/labels/stable", "automobile"), ("/labels/canary", "bird")):
            status, answer = s.predict({"instances": [PIXELS]}, f"/v1/models/davidnet{path}:predict")
            assert (status, _class(answer)) == (200, expected), path
        status, meta = s.json("GET", "/v1/models/davidnet/labels/canary/metadata")
        assert status == 200 and meta["model_spec"]["version"] == "2"
        assert s.predict({"instances": [PIXELS]}, "/v1/models/davidnet/labels/beta:predict") == (
            400, {"error": "Unrecognized servable version label: beta"})
        assert s.predict({"instances": [PIXELS]}, "/v1/models/davidnet/versions/9:predict") == (
            404, {"error": "Servable not found for request: Specific(davidnet, 9)"})
    with Server(*flags, "--version-policy", "specific:1,2") as s:
        assert {v for v, st in _states(s).items() if st[0] == "AVAILABLE"} == {1, 2}
        assert _class(s.predict({"instances": [PIXELS]})[1]) == "bird"


@pytest.mark.slow
def test_a_version_refused_while_half_copied_is_served_once_whole(tmp_path):
    """A version folder copied in slowly (not renamed into place) may be seen half written:
    it is refused, then tried again when its folder changes, and served once whole."""
    base = tmp_path / "models"
    base.mkdir()
    onnx_models.publish(base, 1, favourite=1)
    whole = onnx_models.build(favourite=5).SerializeToString()
    with Server("--model-base-path", str(base), "--poll-seconds", "0.1", "--quiet") as server:
        (base / "2").mkdir()
        (base / "2" / "model.onnx").write_bytes(whole[: len(whole) // 2])
        wait_for(lambda: _states(server).get(2, ("",))[0] == "END")
        assert _states(server)[1][0] == "AVAILABLE"
        assert _class(server.predict({"instances": [PIXELS]})[1]) == "automobile"
        with open(base / "2" / "model.onnx", "ab") as f:
            f.write(whole[len(whole) // 2:])
        wait_for(lambda: _states(server)[2][0] == "AVAILABLE")
        assert _class(server.predict({"instances": [PIXELS]})[1]) == "dog"


# ---------------------------------------------------------------- export.publish


def test_publish_adds_the_next_version_atomically_and_never_replaces_one(tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    onnx_models.save(run / "model.onnx", favourite=2)
    base = tmp_path / "models"
    assert publish.main([str(run), str(base)]) == 0
    assert publish.main([str(run / "model.onnx"), str(base)]) == 0
    assert sorted(os.listdir(base)) == ["1", "2"]  # no scratch folder left behind
    assert (base / "2" / "model.onnx").read_bytes() == (run / "model.onnx").read_bytes()
    assert "as version 2" in capsys.readouterr().out
    assert publish.main([str(run), str(base), "--version", "1"]) == 2
    assert capsys.readouterr().err.strip() == (
        f"error: --version 1: {base}/1 exists; a published version is never replaced")


@pytest.mark.parametrize("make,message", [
    (lambda d: (d / "model.onnx").write_bytes(b"junk"), "a server would refuse it"),
    (lambda d: onnx_models.save(d / "model.onnx", image_size=64), "[-1, 64, 64, 3]"),
    (lambda d: None, "no such ONNX model"),
])
def test_publish_refuses_what_a_server_would_refuse(tmp_path, capsys, make, message):
    run = tmp_path / "run"
    run.mkdir()
    make(run)
    assert publish.main([str(run), str(tmp_path / "models")]) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "models" / "1").exists()


@pytest.mark.parametrize("argv,message", [
    (["--version-policy", "newest"], "argument --version-policy: expected latest, all or specific"),
    (["--version-labels", "stable:1"], "argument --version-labels: expected LABEL=N"),
    (["--poll-seconds", "-1"], "argument --poll-seconds: expected a number >= 0"),
    (["--max-image-pixels", "0"], "argument --max-image-pixels: expected a positive integer"),
    ([], "give one of MODEL.onnx|RUN_DIR or --model-base-path DIR"),
    (["--model-base-path", "/nonexistent"], "--model-base-path /nonexistent: no such folder"),
])
def test_serve_flags_fail_in_one_line(capsys, argv, message):
    from export import serve

    assert serve.main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and message in err and "\n" not in err, err


def test_labels_parse_into_a_mapping():
    from export.serving.versions import VersionPolicy, parse_labels

    assert parse_labels("stable=1, canary=12") == {"stable": 1, "canary": 12}
    assert VersionPolicy.parse("specific:3,1,3").versions == (1, 3)
    assert VersionPolicy.parse("latest").select({4, 9, 2}) == {9}
    assert VersionPolicy.parse("specific:2,5").select({1, 2, 3}) == {2}
    assert json.dumps(str(VersionPolicy.parse("specific:2,5"))) == '"specific:2,5"'
