"""MultiWorkerMirroredStrategy: two worker processes on 127.0.0.1 train one model."""
import pytest
import json
import os
import re
import socket
import subprocess
import sys

from tests import synthetic

pytestmark = pytest.mark.slow  # trains or starts servers; ./run.sh test --fast leaves it out

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _free_ports(n):
    socks = [socket.socket() for _ in range(n)]
    for s in socks:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


def test_two_loopback_workers_end_with_identical_weights(tmp_path):
    (xt, yt), (xs, ys) = synthetic.make_arrays(96, 1), synthetic.make_arrays(32, 2)
    tree = synthetic.write_image_tree(str(tmp_path / "data"), xt, yt, xs, ys)
    cluster = {"worker": [f"127.0.0.1:{p}" for p in _free_ports(2)]}  # loopback only
    out = tmp_path / "run"
    procs = []
    for index in range(2):
        env = dict(os.environ, PYTHONPATH=ROOT,
                   TF_CONFIG=json.dumps({"cluster": cluster, "task": {"type": "worker", "index": index}}))
        procs.append(subprocess.Popen(
            [sys.executable, "-m", "legacy_eager.train", "--data", tree, "--width", "4",
             "--batch-size", "16", "--epochs", "2", "--out", str(out)],
            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    results = []
    for p in procs:
        try:
            stdout, stderr = p.communicate(timeout=300)
        finally:
            p.kill()
        assert p.returncode == 0, stderr[-2000:]
        results.append(stdout)
    fingerprints = [re.search(r"weights sha256 ([0-9a-f]{16})", o).group(1) for o in results]
    assert fingerprints[0] == fingerprints[1]
    # The chief (worker 0) keeps the run; the other worker leaves nothing behind.
    summary = json.load(open(out / "summary.json"))
    assert summary["weights_sha256"].startswith(fingerprints[0])
    assert summary["final"]["global_step"] == 2 * 6  # 96 images, global batches of 16
    assert "worker 1 (the chief keeps the run)" in results[1]
    assert [json.loads(line)["epoch"] for line in open(out / "metrics.jsonl")] == [1, 2]
