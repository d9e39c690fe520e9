"""The HTTP server under load: `python -m bench serve [--quick]` (and a short pass in
`python -m bench --quick`).

Publishes a width-64 export as version 1 of a base path, starts `export.serve
--model-base-path` on a free loopback port, drives it with C concurrent clients (1, 8, 32;
keep-alive connections, request bodies encoded before the clock starts) sending single
images, then batches of 64, for a fixed number of requests, and reports images/s and p50/p99
latency beside export.predict's batch-256 throughput on the same model (fp32 and INT8).
Then a version swap under load: 8 single-image clients keep sending while version 2 is
published, until version 1 has been unloaded; the row gives the requests failed and the
longest request. The server's peak RSS covers the swap, when both versions are loaded.
Goals, on a 2-core CPU: 32 single-image clients reach 80% of the batch-256 images/s; p99 <
100 ms with 8 clients; server RSS < 600 MB with two versions loaded; no failed request in
the swap.
"""
import argparse
import contextlib
import http.client
import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time

import numpy as np

from bench.load import run_clients
from legacy_eager.cli import Parser
from legacy_eager.errors import run_cli

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
GOALS = {"single_32_over_batch256": 0.80, "p99_ms_at_8": 100.0, "server_rss_mb": 600.0,
         "swap_failed": 0, "grpc_single_32_over_batch256": 0.85, "grpc_p99_ms_at_8": 50.0}


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start(base, port, grpc_port):
    proc = subprocess.Popen([sys.executable, "-m", "export.serve", "--model-base-path", base,
                             "--port", str(port), "--grpc-port", str(grpc_port),
                             "--poll-seconds", "0.2", "--quiet"],
                            cwd=ROOT, env=dict(os.environ, PYTHONPATH=ROOT),
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 60
    while time.time() < deadline:
        try:
            if _get(port, "/v1/models/davidnet")[0] == 200:
                return proc
        except OSError:
            time.sleep(0.1)
    proc.kill()
    raise RuntimeError(f"export.serve did not start: {proc.stderr.read()[-500:]}")


def _get(port, path):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def _states(port):
    status, body = _get(port, "/v1/models/davidnet")
    return {v["version"]: v["state"] for v in json.loads(body)["model_version_status"]}


def grpc_clients(port, clients, requests):
    """`requests` gRPC Predict calls of one image from `clients` threads, in a child process
    (bench/grpc_clients.py)."""
    done = subprocess.run([sys.executable, "-m", "bench.grpc_clients", "--port", str(port),
                           "--clients", str(clients), "--requests", str(requests)],
                          cwd=ROOT, env=dict(os.environ, PYTHONPATH=ROOT), capture_output=True,
                          text=True, timeout=600)
    if done.returncode != 0:
        raise RuntimeError(f"bench.grpc_clients failed: {done.stderr[-1000:]}")
    result = json.loads(done.stdout.splitlines()[-1])
    if result["errors"]:
        raise RuntimeError(f"gRPC calls failed: {result['errors']}")
    return result


def swap_under_load(port, body, publish_next, clients=8, timeout=120):
    """`clients` single-image clients send while `publish_next()` adds version 2, until
    version 1 is END; then one more second. Failed requests and the longest request (ms)."""
    latencies, failures, stop = [], [], threading.Event()

    def client():
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
        while not stop.is_set():
            t = time.perf_counter()
            try:
                conn.request("POST", "/v1/models/davidnet:predict", body,
                             {"Content-Type": "application/json"})
                response = conn.getresponse()
                response.read()
                if response.status != 200:
                    failures.append(response.status)
            except (OSError, http.client.HTTPException) as e:
                failures.append(type(e).__name__)
                conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
            latencies.append((time.perf_counter() - t) * 1000)
        conn.close()
    threads = [threading.Thread(target=client) for _ in range(clients)]
    for t in threads:
        t.start()
    time.sleep(1)
    start = time.perf_counter()
    publish_next()
    deadline = time.time() + timeout
    while time.time() < deadline and _states(port).get("1") != "END":
        time.sleep(0.05)
    swap_s = time.perf_counter() - start
    time.sleep(1)
    stop.set()
    for t in threads:
        t.join()
    return {"clients": clients, "requests": len(latencies), "failed": len(failures),
            "failures": sorted(set(map(str, failures))), "max_ms": max(latencies),
            "p99_ms": float(np.percentile(latencies, 99)), "swap_s": swap_s,
            "states": _states(port)}


def _peak_rss_mb(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def drive(port, body, images_per_request, clients, requests):
    """`requests` POSTs of `body` spread over `clients` threads, each on one keep-alive
    connection. Returns images/s and latency percentiles (ms)."""
    @contextlib.contextmanager
    def session():
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
        conn.connect()

        def call():
            conn.request("POST", "/v1/models/davidnet:predict", body,
                         {"Content-Type": "application/json"})
            response = conn.getresponse()
            response.read()
            return None if response.status == 200 else response.status
        try:
            yield call
        finally:
            conn.close()
    result = run_clients(clients, requests, session, images_per_request)
    if result.pop("errors"):
        raise RuntimeError(f"the server answered some requests with an error: {result}")
    return result


def bench_serve(quick=False, folder=None):
    from bench.exports import make_export, synthetic
    from export.predict import OnnxClassifier
    from export.serving.publishing import publish

    with tempfile.TemporaryDirectory() as scratch:
        folder = folder or scratch
        _, fp32, int8 = make_export(folder)
        images, _ = synthetic(256, seed=3)
        predict = {}
        for name, path in (("fp32", fp32), ("int8", int8)):
            clf = OnnxClassifier(path)
            clf.run(images, 256)
            reps = 2 if quick else 6
            t = time.perf_counter()
            for _ in range(reps):
                clf.run(images, 256)
            predict[name] = 256 * reps / (time.perf_counter() - t)
            del clf
        base = os.path.join(folder, "models")
        publish(fp32, base, log=lambda line: None)
        port, grpc_port = _free_port(), _free_port()
        server = _start(base, port, grpc_port)
        try:
            single = json.dumps({"instances": images[:1].tolist()})
            batch64 = json.dumps({"instances": images[:64].tolist()})
            drive(port, single, 1, 4, 20)  # warm-up
            runs = {}
            for clients in ((8, 32) if quick else (1, 8, 32)):
                n = (60 if quick else 400) if clients > 1 else (30 if quick else 150)
                runs[f"single_{clients}"] = drive(port, single, 1, clients, max(n, clients))
                m = 4 if quick else 24
                runs[f"batch64_{clients}"] = drive(port, batch64, 64, clients, max(m, clients))
            grpc_runs = {}
            grpc_clients(grpc_port, 4, 20)  # warm-up
            for clients in (8, 32):
                n = 60 if quick else 400
                grpc_runs[f"single_{clients}"] = grpc_clients(grpc_port, clients, max(n, clients))
            swap = swap_under_load(port, single, lambda: publish(fp32, base, log=lambda line: None))
            rss = _peak_rss_mb(server.pid)
        finally:
            server.terminate()
            server.wait(timeout=60)
    return judge({"width": 64, "quick": quick, "predict_batch256_images_per_s": predict,
                  "clients": runs, "grpc": grpc_runs, "swap": swap, "server_peak_rss_mb": rss})


def judge(result):
    """`result` with the ratios to export.predict's batch-256 images/s and each goal's
    verdict (GOALS: ratios at least, latencies and memory under, failures at most)."""
    batch256 = result["predict_batch256_images_per_s"]["fp32"]
    runs, grpc_runs = result["clients"], result["grpc"]
    result["single_32_over_batch256"] = runs["single_32"]["images_per_s"] / batch256
    result["grpc_single_32_over_batch256"] = grpc_runs["single_32"]["images_per_s"] / batch256
    result["goals"] = {
        "single_32_over_batch256": result["single_32_over_batch256"] >= GOALS["single_32_over_batch256"],
        "p99_ms_at_8": runs["single_8"]["p99_ms"] < GOALS["p99_ms_at_8"],
        "server_rss_mb": result["server_peak_rss_mb"] < GOALS["server_rss_mb"],
        "swap_failed": result["swap"]["failed"] <= GOALS["swap_failed"],
        "grpc_single_32_over_batch256":
            result["grpc_single_32_over_batch256"] >= GOALS["grpc_single_32_over_batch256"],
        "grpc_p99_ms_at_8": grpc_runs["single_8"]["p99_ms"] < GOALS["grpc_p99_ms_at_8"],
    }
    return result


def table(r):
    rows = [f"serving over HTTP (export.serve, width {r['width']}); export.predict batch 256: "
            f"fp32 {r['predict_batch256_images_per_s']['fp32']:.1f}, "
            f"INT8 {r['predict_batch256_images_per_s']['int8']:.1f} images/s",
            "  clients  images/request  requests  images/s   p50 ms   p99 ms"]
    for m in r["clients"].values():
        rows.append(f"  {m['clients']:>7}  {m['images_per_request']:>14}  {m['requests']:>8}  "
                    f"{m['images_per_s']:>8.1f}  {m['p50_ms']:>7.1f}  {m['p99_ms']:>7.1f}")
    for name, m in r["grpc"].items():
        rows.append(f"  {m['clients']:>7}  {m['images_per_request']:>14}  {m['requests']:>8}  "
                    f"{m['images_per_s']:>8.1f}  {m['p50_ms']:>7.1f}  {m['p99_ms']:>7.1f}   gRPC")
    g = r["goals"]
    sw = r["swap"]
    rows.append(f"  version swap under load ({sw['clients']} single-image clients): "
                f"{sw['requests']} requests, {sw['failed']} failed (goal 0: "
                f"{'met' if g['swap_failed'] else 'not met'}), longest {sw['max_ms']:.1f} ms, "
                f"p99 {sw['p99_ms']:.1f} ms, new version serving and old unloaded in "
                f"{sw['swap_s']:.1f} s")
    rows.append(f"  32 single-image clients / batch 256: {100 * r['single_32_over_batch256']:.0f}% "
                f"(goal 80%: {'met' if g['single_32_over_batch256'] else 'not met'}); p99 at 8 "
                f"clients {r['clients']['single_8']['p99_ms']:.1f} ms (goal < 100: "
                f"{'met' if g['p99_ms_at_8'] else 'not met'}); server peak RSS with two versions "
                f"{r['server_peak_rss_mb']:.0f} MB (goal < 600: {'met' if g['server_rss_mb'] else 'not met'})")
    rows.append(f"  gRPC: 32 single-image clients / batch 256: "
                f"{100 * r['grpc_single_32_over_batch256']:.0f}% (goal 85%: "
                f"{'met' if g['grpc_single_32_over_batch256'] else 'not met'}); p99 at 8 clients "
                f"{r['grpc']['single_8']['p99_ms']:.1f} ms (goal < 50: "
                f"{'met' if g['grpc_p99_ms_at_8'] else 'not met'})")
    return "\n".join(rows)


def parser():
    p = Parser(prog="python -m bench serve", description=__doc__,
               formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="fewer requests (about a minute)")
    return p


def run(quick):
    result = bench_serve(quick)
    print(table(result))
    print(json.dumps({"serve": result}))
    return 0


def main(argv=None):
    return run_cli(lambda: run(parser().parse_args(argv).quick))


if __name__ == "__main__":
    sys.exit(main())
