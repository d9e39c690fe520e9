"""This project against its peers, in one run on this machine: `python -m bench peers
[--quick]` (`./run.sh bench peers`).

1. the width-64 train step (forward, summed cross-entropy, backward, Nesterov SGD with
   weight decay; the default recipe's dropout, or --dropout) at batch 256 and 512, fp32
   and bf16: the port (function mode; bf16 is --precision mixed_bfloat16) against PyTorch
   (channels_last; bf16 by torch.autocast; --torch-compile adds torch.compile), as
   images/s, port / PyTorch, and each as a fraction of its precision's matmul peak
   (measured in the port's processes);
2. inference of a width-64 export, fp32 and INT8: ONNX Runtime with the server's session
   against OpenVINO (float32 inference precision; and OpenVINO's default, bf16 on a CPU
   with avx512_bf16, as a row of its own), batch 256 images/s and batch 1 p50 ms, and
   the largest difference of their probabilities on the same 256 images;
3. serving one-image v2 REST requests from 1, 8 and 32 closed-loop clients: this server
   (export.serve) against MLServer 1.7.1 serving the same ONNX file through a small
   custom runtime (bench/peers/mlserver_runtime.py), images/s, p50 and p99.
Every measurement runs in a process of its own, the two sides alternated (A B A B) so
that both see the same noise, with the same thread count and warm-up; the ratios are the
median of the per-alternation ratios. The peers (PyTorch, OpenVINO, MLServer) run in a
virtualenv of their own, made on first use from bench/peers/requirements.txt (see
bench/peers/venv.py for where). Prints a table and one JSON line.
"""
import argparse
import contextlib
import http.client
import json
import os
import subprocess
import sys
import tempfile
import time
from importlib.metadata import version

import numpy as np

from bench.load import run_clients
from bench.peers import report, venv
from legacy_eager.cli import Parser, fraction, positive
from legacy_eager.config import Config
from legacy_eager.errors import UserFacingError

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CLIENTS = (1, 8, 32)
SETTINGS = {  # quick / full: timed steps, inference repetitions, requests per client count
    True: {"steps": 1, "reps": 2, "reps_one": 30, "requests": {1: 30, 8: 64, 32: 96}},
    False: {"steps": 4, "reps": 8, "reps_one": 200, "requests": {1: 150, 8: 400, 32: 640}},
}


def _child(python, module, *args, timeout=3600):
    """Run `python -m module args` from the repository; its last stdout line, as JSON."""
    done = subprocess.run([python, "-m", module, *map(str, args)], cwd=ROOT,
                          env=dict(os.environ, PYTHONPATH=ROOT), capture_output=True,
                          text=True, timeout=timeout)
    if done.returncode != 0:
        tail = " | ".join(done.stderr.strip().splitlines()[-3:])[-600:]
        raise UserFacingError(f"{module} ({os.path.basename(os.path.dirname(os.path.dirname(python)))}) "
                              f"failed: {tail}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def train_steps(peers_python, rounds, settings, threads, batch_sizes, torch_compile, dropout, log):
    runs = {p: {"port": [], "torch": []} for p in ("fp32", "bf16")}
    common = ["--batch-sizes", ",".join(map(str, batch_sizes)), "--warmup", 2,
              "--steps", settings["steps"], "--threads", threads, "--dropout", dropout]
    for i in range(rounds):
        for precision in ("fp32", "bf16"):
            port = _child(sys.executable, "bench.peers.port_step", "--precision", precision, *common)
            theirs = _child(peers_python, "bench.peers.torch_step", "--precision", precision,
                            *common, *(["--compile"] if torch_compile else []))
            runs[precision]["port"].append(port)
            runs[precision]["torch"].append(theirs)
            log(f"  train {precision} alternation {i + 1}/{rounds}: port "
                f"{_rates(port)}, PyTorch {_rates(theirs)} images/s")
    return runs


def _rates(r):
    return ", ".join(f"{v:.1f}" for v in r["images_per_s"].values())


def inference(peers_python, folder, fp32, int8, rounds, settings, threads, log):
    from bench.exports import synthetic

    images = os.path.join(folder, "images.npy")
    np.save(images, synthetic(256, seed=2)[0])
    engines = (("onnxruntime", sys.executable), ("openvino", peers_python),
               ("openvino-default", peers_python))
    runs = {}
    for model, path in (("fp32", fp32), ("int8", int8)):
        runs[model] = {name: [] for name, _ in engines}
        for i in range(rounds):
            for name, python in engines:
                probs = os.path.join(folder, f"{model}-{name}.npy")
                runs[model][name].append(_child(
                    python, "bench.peers.infer", path, "--engine", name, "--images", images,
                    "--probabilities", probs, "--threads", threads, "--reps", settings["reps"],
                    "--reps-one", settings["reps_one"]))
            log(f"  inference {model} alternation {i + 1}/{rounds}: " + ", ".join(
                f"{n} {r[-1]['batch1_p50_ms']:.2f} ms" for n, r in runs[model].items()))
        reference = np.load(os.path.join(folder, f"{model}-onnxruntime.npy"))
        runs[model]["max_abs_diff"] = {
            name: float(np.abs(np.load(os.path.join(folder, f"{model}-{name}.npy")) - reference).max())
            for name, _ in engines if name != "onnxruntime"}
    return runs


def _get(port, path):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        response.read()
        return response.status
    finally:
        conn.close()


@contextlib.contextmanager
def _server(command, port, cwd, what, timeout=120):
    """Start a server, wait until /v2/models/davidnet/ready answers 200, stop it after."""
    log = tempfile.TemporaryFile("w+")
    proc = subprocess.Popen(command, cwd=cwd, env=dict(os.environ, PYTHONPATH=ROOT),
                            stdout=log, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.time() + timeout
        while True:
            try:
                if _get(port, "/v2/models/davidnet/ready") == 200:
                    break
            except OSError:
                pass
            if proc.poll() is not None or time.time() > deadline:
                log.seek(0)
                tail = " | ".join(log.read().strip().splitlines()[-3:])[-500:]
                raise UserFacingError(f"{what} did not start: {tail}")
            time.sleep(0.2)
        yield proc
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


def v2_body(image):
    """The one-image v2 JSON body both servers get."""
    return json.dumps({"inputs": [{"name": "images", "datatype": "UINT8", "shape": [1, 32, 32, 3],
                                   "data": image.reshape(-1).tolist()}]})


def drive_v2(port, body, clients, requests):
    """`requests` POSTs of `body` to /v2/models/davidnet/infer from `clients` threads, each
    on one keep-alive connection (bench/load.py)."""
    @contextlib.contextmanager
    def session():
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
        conn.connect()

        def call():
            conn.request("POST", "/v2/models/davidnet/infer", body,
                         {"Content-Type": "application/json"})
            response = conn.getresponse()
            answer = response.read()
            if response.status != 200:
                return response.status
            names = [o["name"] for o in json.loads(answer)["outputs"]]
            return None if sorted(names) == ["logits", "probabilities"] else f"outputs {names}"
        try:
            yield call
        finally:
            conn.close()
    result = run_clients(clients, requests, session)
    if result["errors"]:
        raise UserFacingError(f"port {port}: some requests failed: {result['errors']}")
    return result


def serving(peers_python, model, folder, rounds, settings, threads, log):
    from bench.exports import synthetic
    from bench.peers.mlserver_runtime import write_repository
    from bench.serve import _free_port

    body = v2_body(synthetic(1, seed=3)[0][0])
    runs = {"server": [], "mlserver": []}
    for i in range(rounds):
        for side in ("server", "mlserver"):
            port = _free_port()
            if side == "server":
                command = [sys.executable, "-m", "export.serve", model, "--port", port,
                           "--grpc-port", 0, "--threads", threads, "--quiet"]
                cwd, what = ROOT, "export.serve"
            else:
                repo = tempfile.mkdtemp(dir=folder)
                write_repository(repo, model, threads, port, _free_port(), _free_port())
                command = [os.path.join(os.path.dirname(peers_python), "mlserver"), "start", repo]
                cwd, what = repo, "MLServer"
            with _server(list(map(str, command)), port, cwd, what):
                drive_v2(port, body, 4, 20)  # warm-up
                runs[side].append({str(c): drive_v2(port, body, c, max(settings["requests"][c], c))
                                   for c in CLIENTS})
        log(f"  serving alternation {i + 1}/{rounds}: images/s " + "; ".join(
            f"{side} " + ", ".join(f"{r['images_per_s']:.0f}" for r in runs[side][-1].values())
            for side in runs))
    return runs


def versions(peers_python):
    ours = {name: version(name) for name in ("tensorflow", "onnxruntime")}
    done = subprocess.run([peers_python, "-c", "import json; from importlib.metadata import version; "
                           "print(json.dumps({n: version(n) for n in ('torch', 'openvino', 'mlserver')}))"],
                          capture_output=True, text=True, check=True)
    return {**ours, **json.loads(done.stdout)}


def parser():
    p = Parser(prog="python -m bench peers", description=__doc__,
               formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true",
                   help="every row, fewer steps and requests (training: 1 timed step a process)")
    p.add_argument("--rounds", type=positive(int, "integer"), default=3,
                   help="alternations of each pair; verdicts take their median (default 3)")
    p.add_argument("--threads", type=positive(int, "integer"), default=os.cpu_count(),
                   help="threads for each side (default: the CPUs, %(default)s)")
    p.add_argument("--peers-venv", metavar="DIR", default=venv.default_location(),
                   help=f"the peers' virtualenv (default ${venv.ENV_VARIABLE}, else %(default)s)")
    p.add_argument("--torch-compile", action="store_true",
                   help="PyTorch's step through torch.compile (Inductor; needs a C++ compiler)")
    p.add_argument("--dropout", type=fraction, default=Config.dropout, metavar="P",
                   help="the train step's dropout rate on both sides (default %(default)s, the "
                        "port's default recipe; 0 is Page's DAWNBench recipe, --recipe dawnbench)")
    p.add_argument("--only", choices=("train", "inference", "serving"), action="append",
                   help="measure only this part (repeatable); the verdicts need all three")
    return p


def main(argv=None):
    args = parser().parse_args(argv)
    settings = SETTINGS[args.quick]

    def log(line):
        print(line, file=sys.stderr, flush=True)

    peers_python = venv.ensure(args.peers_venv, log)
    with open("/proc/cpuinfo") as f:
        machine = report.machine(f.read(), os.cpu_count())
    raw = {"machine": machine, "versions": versions(peers_python), "quick": args.quick,
           "rounds": args.rounds, "threads": args.threads, "torch_compile": args.torch_compile,
           "dropout": args.dropout}
    parts = set(args.only or ("train", "inference", "serving"))
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as folder:
        if "train" in parts:
            raw["train"] = train_steps(peers_python, args.rounds, settings, args.threads,
                                       (256, 512), args.torch_compile, args.dropout, log)
        if parts & {"inference", "serving"}:
            from bench.exports import make_export

            _, fp32, int8 = make_export(folder)
        if "inference" in parts:
            raw["inference"] = inference(peers_python, folder, fp32, int8, args.rounds,
                                         settings, args.threads, log)
        if "serving" in parts:
            raw["serving"] = serving(peers_python, fp32, folder, args.rounds, settings,
                                     args.threads, log)
    raw["seconds"] = time.perf_counter() - start
    summary = report.summarize(raw)
    print(report.table(raw, summary))
    print(json.dumps({"peers": {**raw, "summary": summary}}))
    return 0
