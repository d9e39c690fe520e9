"""Serve an exported DavidNet over HTTP with TensorFlow Serving's REST API, on ONNX Runtime
alone (no TensorFlow in the process).

    python -m export.serve MODEL.onnx|RUN_DIR [--host 127.0.0.1] [--port 8501]
        [--name davidnet] [--max-batch 256] [--batch-window-ms 2] [--threads N]
        [--max-body-mb 16] [--max-instances 1024] [--quiet]
    ./run.sh serve MODEL.onnx|RUN_DIR [FLAGS]

Endpoints, for the model name given (--name):
    GET  /v1/models/NAME            the model status (version 1, state AVAILABLE); readiness
    GET  /v1/models/NAME/metadata   the signature: images uint8 [-1, 32, 32, 3] in; logits,
                                    probabilities float32 [-1, 10] out; the class names
    POST /v1/models/NAME:predict    {"instances": [...]} (row format) or {"inputs": ...}
                                    (columnar); an instance is a 32x32x3 nested list of
                                    0..255 integers or {"b64": "<base64 image file>"};
                                    ?tta=1 or "tta": true adds flip test-time augmentation
    GET  /                          a demo page: pick or drop an image, see the top 5
Errors come as TensorFlow Serving gives them: {"error": "..."} with 400 (bad request),
404 (unknown model) or 413 (body over --max-body-mb, or over --max-instances instances).

Requests that arrive within --batch-window-ms of each other are run as one ONNX Runtime
batch of at most --max-batch images, and each gets its own rows back. SIGTERM or SIGINT
stops accepting connections, lets the requests in flight finish, and exits 0. One line per
request goes to stderr (method, path, status, instances, milliseconds) unless --quiet.
"""
import argparse
import asyncio
import base64
import binascii
import io
import json
import os
import sys
import time

import numpy as np

from export.predict import OnnxClassifier, softmax, to_model_input
from legacy_eager.errors import UsageError

VERSION = "1"
DEMO_PAGE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "demo.html")


class BadRequest(Exception):
    """Answered as {"error": message} with the given HTTP status."""

    def __init__(self, message, status=400):
        super().__init__(message)
        self.status = status


# ---------------------------------------------------------------- request bodies -> images


def _decode_b64(value, where):
    from PIL import Image

    if not isinstance(value, str):
        raise BadRequest(f"{where}: \"b64\" must be a base64 string")
    try:
        raw = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise BadRequest(f"{where}: \"b64\" is not valid base64") from None
    try:
        with Image.open(io.BytesIO(raw)) as img:
            img.load()
            return to_model_input(img)
    except Exception as e:
        raise BadRequest(f"{where}: undecodable image ({type(e).__name__})") from None


def _pixels(value, where):
    if isinstance(value, dict):
        if "b64" in value:
            return _decode_b64(value["b64"], where)
        if "images" in value:  # {"images": ...}: the input named, as TF Serving allows
            return _pixels(value["images"], where)
        raise BadRequest(f"{where}: expected a 32x32x3 list of 0..255 integers or "
                         "{\"b64\": ...}")
    try:
        array = np.asarray(value)
    except (ValueError, RecursionError):
        array = None
    if array is None or array.dtype == object or array.shape != (32, 32, 3):
        shape = "ragged" if array is None or array.dtype == object else list(array.shape)
        raise BadRequest(f"{where}: shape {shape}, expected [32, 32, 3] (height, width, RGB)")
    if array.dtype.kind not in "iu":
        if array.dtype.kind == "f" and np.all(np.mod(array, 1) == 0):
            array = array.astype(np.int64)
        else:
            raise BadRequest(f"{where}: values must be integers 0..255, got {array.dtype}")
    low, high = int(array.min()), int(array.max())
    if low < 0 or high > 255:
        bad = low if low < 0 else high
        raise BadRequest(f"{where}: value {bad} outside 0..255")
    return array.astype(np.uint8)


def parse_request(body, max_instances):
    """(uint8 images [N, 32, 32, 3], columnar?, tta?) from a predict request body."""
    try:
        request = json.loads(body)
    except (ValueError, UnicodeDecodeError) as e:
        raise BadRequest(f"request body is not JSON ({e})") from None
    except RecursionError:
        raise BadRequest("request body is nested too deeply") from None
    if not isinstance(request, dict) or ("instances" in request) == ("inputs" in request):
        raise BadRequest("expected a JSON object with \"instances\" (row format) or \"inputs\" "
                         "(columnar format)")
    columnar = "inputs" in request
    items = request["inputs"] if columnar else request["instances"]
    if columnar and isinstance(items, dict):
        if "images" not in items:
            raise BadRequest("\"inputs\": expected the input \"images\"")
        items = items["images"]
    if isinstance(items, dict) and "b64" in items:
        items = [items]
    if not isinstance(items, list) or not items:
        raise BadRequest(f"\"{'inputs' if columnar else 'instances'}\" must be a non-empty list")
    if len(items) > max_instances:
        raise BadRequest(f"{len(items)} instances; at most {max_instances} per request "
                         "(--max-instances)", status=413)
    key = "inputs" if columnar else "instances"
    images = np.stack([_pixels(item, f"{key}[{i}]") for i, item in enumerate(items)])
    tta = request.get("tta", False)
    if not isinstance(tta, bool):
        raise BadRequest("\"tta\" must be true or false")
    return images, columnar, tta


def format_response(logits, probs, class_names, columnar):
    classes = [class_names[i] for i in np.argmax(logits, axis=1)]
    if columnar:
        return {"outputs": {"logits": logits.tolist(), "probabilities": probs.tolist(),
                            "class": classes}}
    return {"predictions": [{"logits": lg.tolist(), "probabilities": p.tolist(), "class": c}
                            for lg, p, c in zip(logits, probs, classes)]}


# ---------------------------------------------------------------- micro-batching


class Batcher:
    """Collects the images of requests arriving within `window` seconds of the first one
    (up to `max_batch` images), runs them as one ONNX Runtime call in a worker thread, and
    hands each request its own rows. A TTA request adds its mirror images to the batch."""

    def __init__(self, classifier, max_batch, window):
        self.classifier, self.max_batch, self.window = classifier, max_batch, window
        self.queue = asyncio.Queue()
        self.task = None

    def start(self):
        # One batch at a time: ONNX Runtime already uses every core for it (two batches in
        # flight were measured slower on 2 cores; README, Serving over HTTP).
        self.task = asyncio.get_running_loop().create_task(self._work())

    async def stop(self):
        if self.task:
            self.task.cancel()

    async def predict(self, images, tta):
        future = asyncio.get_running_loop().create_future()
        await self.queue.put((images, tta, future))
        return await future

    async def _work(self):
        loop = asyncio.get_running_loop()
        while True:
            jobs = [await self.queue.get()]
            size = self._rows(jobs[0])
            deadline = loop.time() + self.window
            while size < self.max_batch:
                timeout = deadline - loop.time()
                if timeout <= 0:
                    break
                try:
                    job = await asyncio.wait_for(self.queue.get(), timeout)
                except asyncio.TimeoutError:
                    break
                jobs.append(job)
                size += self._rows(job)
            try:
                results = await loop.run_in_executor(None, self._run, jobs)
                for (_, _, future), result in zip(jobs, results):
                    if not future.done():
                        future.set_result(result)
            except Exception as e:  # a failed batch fails its requests, not the server
                for _, _, future in jobs:
                    if not future.done():
                        future.set_exception(e)

    @staticmethod
    def _rows(job):
        images, tta, _ = job
        return len(images) * (2 if tta else 1)

    def _run(self, jobs):
        parts = []
        for images, tta, _ in jobs:
            parts.append(images)
            if tta:
                parts.append(np.ascontiguousarray(images[:, :, ::-1]))
        logits, probs = self.classifier.run(np.concatenate(parts), batch_size=self.max_batch)
        results, at = [], 0
        for images, tta, _ in jobs:
            n = len(images)
            lg, pr = logits[at:at + n], probs[at:at + n]
            at += n
            if tta:
                lg = (lg + logits[at:at + n]) / 2
                pr = softmax(lg)
                at += n
            results.append((lg, pr))
        return results


# ---------------------------------------------------------------- the app


def status_document():
    return {"model_version_status": [{"version": VERSION, "state": "AVAILABLE",
                                      "status": {"error_code": "OK", "error_message": ""}}]}


def metadata_document(name, class_names):
    def tensor(dtype, dims, tensor_name):
        return {"dtype": dtype, "tensor_shape": {"dim": [{"size": str(d), "name": ""} for d in dims],
                                                 "unknown_rank": False}, "name": tensor_name}
    signature = {
        "inputs": {"images": tensor("DT_UINT8", [-1, 32, 32, 3], "images:0")},
        "outputs": {"logits": tensor("DT_FLOAT", [-1, 10], "logits:0"),
                    "probabilities": tensor("DT_FLOAT", [-1, 10], "probabilities:0")},
        "method_name": "tensorflow/serving/predict",
    }
    return {"model_spec": {"name": name, "signature_name": "", "version": VERSION},
            "metadata": {"signature_def": {"signature_def": {"serving_default": signature}}},
            "class_names": list(class_names)}


def make_app(classifier, name="davidnet", max_batch=256, window_ms=2.0, max_body_mb=16.0,
             max_instances=1024, log=None):
    from starlette.applications import Starlette
    from starlette.requests import ClientDisconnect
    from starlette.responses import HTMLResponse, JSONResponse
    from starlette.routing import Route

    batcher = Batcher(classifier, max_batch, window_ms / 1000)
    max_body = int(max_body_mb * 2 ** 20)
    with open(DEMO_PAGE, encoding="utf-8") as f:
        page = f.read().replace("{{NAME}}", name)

    def error(message, status):
        return JSONResponse({"error": message}, status_code=status)

    async def read_body(request):
        declared = request.headers.get("content-length")
        if declared and declared.isdigit() and int(declared) > max_body:
            raise BadRequest(f"request body of {int(declared)} bytes; at most {max_body} "
                             "(--max-body-mb)", status=413)
        chunks, size = [], 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > max_body:
                raise BadRequest(f"request body over {max_body} bytes (--max-body-mb)", status=413)
            chunks.append(chunk)
        return b"".join(chunks)

    async def models(request):
        rest = request.path_params["rest"]
        method = request.method
        model, _, verb = rest.partition(":")
        model, _, tail = model.partition("/")
        request.state.instances = 0
        if model != name:
            return error(f"Servable not found for request: Latest({model})", 404)
        if method == "GET" and not verb and tail == "":
            return JSONResponse(status_document())
        if method == "GET" and not verb and tail == "metadata":
            return JSONResponse(metadata_document(name, classifier.class_names))
        if method == "POST" and verb == "predict" and tail == "":
            try:
                images, columnar, tta = parse_request(await read_body(request), max_instances)
            except BadRequest as e:
                return error(str(e), e.status)
            except ClientDisconnect:
                return error("client disconnected", 400)
            request.state.instances = len(images)
            tta = tta or request.query_params.get("tta", "").lower() in ("1", "true", "yes")
            logits, probs = await batcher.predict(images, tta)
            return JSONResponse(format_response(logits, probs, classifier.class_names, columnar))
        return error(f"no such endpoint: {method} /v1/models/{rest}", 404)

    async def demo(request):
        return HTMLResponse(page)

    class RequestLog:
        """One stderr line per request: method, path, status, instances, milliseconds."""

        def __init__(self, app):
            self.app = app

        async def __call__(self, scope, receive, send):
            if scope["type"] != "http" or log is None:
                return await self.app(scope, receive, send)
            start, status = time.perf_counter(), [0]

            async def send_status(message):
                if message["type"] == "http.response.start":
                    status[0] = message["status"]
                await send(message)
            scope.setdefault("state", {})
            try:
                await self.app(scope, receive, send_status)
            finally:
                instances = scope["state"].get("instances", 0)
                log(f"{scope['method']} {scope['path']} {status[0]} {instances} "
                    f"{(time.perf_counter() - start) * 1000:.1f}ms")

    from contextlib import asynccontextmanager

    @asynccontextmanager
    async def lifespan(app):
        batcher.start()
        yield
        await batcher.stop()

    app = Starlette(routes=[Route("/", demo), Route("/v1/models/{rest:path}", models,
                                                    methods=["GET", "POST"])],
                    lifespan=lifespan)
    return RequestLog(app)


# ---------------------------------------------------------------- command line


def model_path(target):
    """MODEL.onnx itself, or RUN_DIR/model.onnx."""
    path = os.path.join(target, "model.onnx") if os.path.isdir(target) else target
    if not os.path.isfile(path):
        raise UsageError(f"{target}: no such ONNX model (expected MODEL.onnx or a run folder "
                         "with model.onnx)")
    return path


def _parser():
    p = argparse.ArgumentParser(prog="python -m export.serve", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("model", metavar="MODEL.onnx|RUN_DIR")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8501)
    p.add_argument("--name", default="davidnet", help="the model name in the URLs (default davidnet)")
    p.add_argument("--max-batch", type=int, default=256, help="images per ONNX Runtime call")
    p.add_argument("--batch-window-ms", type=float, default=2.0,
                   help="how long a request waits for others to share its batch (default 2)")
    p.add_argument("--threads", type=int, default=0, help="ONNX Runtime threads (0: all cores)")
    p.add_argument("--max-body-mb", type=float, default=16.0, help="largest request body (default 16)")
    p.add_argument("--max-instances", type=int, default=1024,
                   help="most images in one request (default 1024)")
    p.add_argument("--quiet", action="store_true", help="no line per request")
    return p


def main(argv=None):
    args = _parser().parse_args(argv)
    for flag, value, ok in (("--max-batch", args.max_batch, args.max_batch >= 1),
                            ("--batch-window-ms", args.batch_window_ms, args.batch_window_ms >= 0),
                            ("--threads", args.threads, args.threads >= 0),
                            ("--max-body-mb", args.max_body_mb, args.max_body_mb > 0),
                            ("--max-instances", args.max_instances, args.max_instances >= 1),
                            ("--port", args.port, 0 <= args.port < 65536)):
        if not ok:
            print(f"error: {flag} {value}: out of range", file=sys.stderr)
            return 2
    try:
        path = model_path(args.model)
        classifier = OnnxClassifier(path, threads=args.threads)
    except UsageError as e:
        print(f"error: {e}", file=sys.stderr)
        return e.exit_code
    except Exception as e:
        print(f"error: {args.model}: cannot load ONNX model ({type(e).__name__})", file=sys.stderr)
        return 2
    import uvicorn

    log = None if args.quiet else (lambda line: print(line, file=sys.stderr, flush=True))
    app = make_app(classifier, args.name, args.max_batch, args.batch_window_ms, args.max_body_mb,
                   args.max_instances, log)
    print(f"serving {path} as {args.name} on http://{args.host}:{args.port}/ "
          f"(REST: /v1/models/{args.name}:predict)", file=sys.stderr, flush=True)
    config = uvicorn.Config(app, host=args.host, port=args.port, log_level="warning",
                            access_log=False, timeout_graceful_shutdown=30)
    try:
        _Server(config).run()
    except SystemExit as e:  # uvicorn exits 1 when it cannot bind the port
        return e.code if isinstance(e.code, int) else 1
    return 0


def _uvicorn_server_class():
    import contextlib
    import signal

    import uvicorn

    class Server(uvicorn.Server):
        """uvicorn's graceful shutdown on SIGTERM/SIGINT (stop accepting, finish what is in
        flight), without re-raising the signal afterwards: the process then exits 0."""

        @contextlib.contextmanager
        def capture_signals(self):
            signals = (signal.SIGINT, signal.SIGTERM)
            previous = {sig: signal.signal(sig, self.handle_exit) for sig in signals}
            try:
                yield
            finally:
                for sig, handler in previous.items():
                    signal.signal(sig, handler)
    return Server


def _Server(config):
    return _uvicorn_server_class()(config)


if __name__ == "__main__":
    sys.exit(main())
