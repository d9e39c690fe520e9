"""The Starlette app: TensorFlow Serving's REST API for one model, Prometheus metrics and
the demo page, one handler per endpoint.

    GET  /v1/models/NAME[/versions/N|/labels/L]             status (503 while draining)
    GET  /v1/models/NAME[/versions/N|/labels/L]/metadata    signature and class names
    POST /v1/models/NAME[/versions/N|/labels/L]:predict     classify
    GET  /monitoring/prometheus/metrics                     Prometheus text format
    GET  /                                                  the demo page
    /v2/...                                                 the Open Inference Protocol (v2.py)

A request body is read up to --max-body-mb; a larger one is read and thrown away up to
DISCARD_FACTOR times that (so that every client, urllib included, reads the 413), and past
it the 413 goes out with `Connection: close`. Parsing and decoding run in a thread pool, one
task per request, so a request of many large images never holds up a one-image request.
"""
import asyncio
import os
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from dataclasses import dataclass

from export.serving import v2
from export.serving.batcher import Stopped
from export.serving.bodies import (DEFAULT_MAX_IMAGE_PIXELS, BadRequest, dumps, format_response,
                                   parse_request)

DEMO_PAGE = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "demo.html")
DECODE_THREADS = 4   # request bodies parsed and decoded at once (Pillow and orjson release the GIL)
DISCARD_FACTOR = 4   # an oversized body is read and dropped up to this many times the limit


@dataclass(frozen=True)
class Limits:
    max_body: int = 16 * 2 ** 20               # bytes (--max-body-mb)
    max_instances: int = 1024                  # images per request (--max-instances)
    max_image_pixels: int = DEFAULT_MAX_IMAGE_PIXELS  # width x height of a b64 image


class Phase:
    """Where the server is in its life: serving, draining (status endpoints answer 503,
    predictions go on) or closing (every new request gets 503 and Connection: close)."""

    def __init__(self):
        self.name = "serving"
        self.on_close = []  # coroutine functions run when closing starts (the gRPC server's stop)


def _json(document, status=200, close=False):
    from starlette.responses import Response

    headers = {"connection": "close"} if close else None
    return Response(dumps(document), status_code=status, media_type="application/json",
                    headers=headers)


def _error(message, status, close=False):
    return _json({"error": message}, status, close)


def _spec(request):
    """(name, version or None, label or None) from the path."""
    params = request.path_params
    version = params.get("version")
    if version is not None:
        if not version.isdigit():
            raise BadRequest(f"version {version!r}: expected a version number", 400)
        version = int(version)
    return params["name"], version, params.get("label")


async def read_body(request, max_body):
    bound = max_body * DISCARD_FACTOR
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > bound:
        raise BadRequest(f"request body of {int(declared)} bytes; at most {max_body} "
                         "(--max-body-mb)", 413, close=True)
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size <= max_body:
            chunks.append(chunk)
        elif size > bound:
            raise BadRequest(f"request body over {bound} bytes; at most {max_body} "
                             "(--max-body-mb)", 413, close=True)
    if size > max_body:
        raise BadRequest(f"request body of {size} bytes; at most {max_body} (--max-body-mb)", 413)
    return b"".join(chunks)


def metadata_document(name, version, class_names):
    def tensor(dtype, dims, tensor_name):
        return {"dtype": dtype, "tensor_shape": {"dim": [{"size": str(d), "name": ""} for d in dims],
                                                 "unknown_rank": False}, "name": tensor_name}
    signature = {
        "inputs": {"images": tensor("DT_UINT8", [-1, 32, 32, 3], "images:0")},
        "outputs": {"logits": tensor("DT_FLOAT", [-1, 10], "logits:0"),
                    "probabilities": tensor("DT_FLOAT", [-1, 10], "probabilities:0")},
        "method_name": "tensorflow/serving/predict",
    }
    return {"model_spec": {"name": name, "signature_name": "", "version": str(version)},
            "metadata": {"signature_def": {"signature_def": {"serving_default": signature}}},
            "class_names": list(class_names)}


def make_app(versions, limits=Limits(), metrics=None, phase=None, log=None, grpc_address=None):
    """`versions`: a versions.ModelVersions; `metrics`: a metrics.Metrics or None; `phase`:
    the Phase the server's lifecycle moves (a new one if None); `log(line)`: one line per
    request (method, path, status, images, milliseconds), or None; `grpc_address`: (host,
    port) for TensorFlow Serving's gRPC API beside REST, or None."""
    from starlette.applications import Starlette
    from starlette.requests import ClientDisconnect
    from starlette.responses import HTMLResponse, Response
    from starlette.routing import Route

    phase = phase or Phase()
    decode_pool = ThreadPoolExecutor(DECODE_THREADS, thread_name_prefix="decode")
    with open(DEMO_PAGE, encoding="utf-8") as f:
        page = f.read().replace("{{NAME}}", versions.name)

    def handler(endpoint):
        """Names the endpoint for the metrics and turns errors into TF Serving's answers."""
        def wrap(fn):
            async def handle(request):
                request.state.endpoint = endpoint
                if metrics:
                    metrics.in_flight.labels(endpoint).inc()
                try:
                    return await fn(request)
                except BadRequest as e:
                    return _error(str(e), e.status, e.close)
                except ClientDisconnect:
                    return _error("client disconnected", 400)
                except Stopped as e:
                    return _error(f"{e}; try again", 503)
                finally:
                    if metrics:
                        metrics.in_flight.labels(endpoint).dec()
            return handle
        return wrap

    @handler("status")
    async def status(request):
        if phase.name != "serving":
            return _error("the server is shutting down", 503)
        return _json(versions.status_document(*_spec(request)))

    @handler("metadata")
    async def metadata(request):
        served = versions.resolve(*_spec(request))
        request.state.version = str(served.version)
        return _json(metadata_document(versions.name, served.version,
                                       served.classifier.class_names))

    @handler("predict")
    async def predict(request):
        name, version, label = _spec(request)
        versions.resolve(name, version, label)  # an unknown model is refused before the body is read
        body = await read_body(request, limits.max_body)
        loop = asyncio.get_running_loop()
        images, columnar, tta = await loop.run_in_executor(
            decode_pool, parse_request, body, limits.max_instances, limits.max_image_pixels)
        tta = tta or request.query_params.get("tta", "").lower() in ("1", "true", "yes")
        request.state.instances = len(images)
        served = versions.resolve(name, version, label)  # now: a newer version may have come in
        request.state.version = str(served.version)
        with versions.using(served):
            logits, probs = await served.batcher.predict(images, tta)
        if metrics:
            metrics.images.labels(str(served.version)).inc(len(images))
        return Response(format_response(logits, probs, served.classifier.class_names, columnar),
                        media_type="application/json")

    @handler("metrics")
    async def prometheus(request):
        return Response(metrics.exposition() if metrics else b"", media_type=
                        metrics.content_type if metrics else "text/plain")

    @handler("demo")
    async def demo(request):
        return HTMLResponse(page)

    async def not_found(request, exc):
        return _error(f"no such endpoint: {request.method} {request.url.path}",
                      getattr(exc, "status_code", 404))

    routes = []
    for prefix in ("/v1/models/{name}", "/v1/models/{name}/versions/{version}",
                   "/v1/models/{name}/labels/{label}"):
        routes += [Route(prefix + ":predict", predict, methods=["POST"]),
                   Route(prefix + "/metadata", metadata, methods=["GET"]),
                   Route(prefix, status, methods=["GET"])]
    routes += [Route("/monitoring/prometheus/metrics", prometheus, methods=["GET"]),
               Route("/", demo, methods=["GET"])]
    routes += v2.routes(versions, limits, metrics, phase, decode_pool, handler, read_body, _json)

    @asynccontextmanager
    async def lifespan(app):
        await versions.start()
        grpc_api = None
        if grpc_address:
            from export.serving.grpc_api import GrpcApi

            grpc_api = GrpcApi(versions, limits.max_instances, limits.max_body, metrics)
            await grpc_api.start(*grpc_address)
            phase.on_close.append(grpc_api.stop)
        try:
            yield
        finally:
            if grpc_api:
                await grpc_api.stop(0)
            await versions.stop()
            decode_pool.shutdown(wait=False, cancel_futures=True)

    app = Starlette(routes=routes, lifespan=lifespan,
                    exception_handlers={404: not_found, 405: not_found})
    return Observed(app, metrics, phase, log)


class Observed:
    """ASGI middleware around the app: counts and times every request for the metrics,
    writes its log line, and in the closing phase answers every new request with 503 and
    Connection: close (after reading its body, so that the client reads the answer)."""

    def __init__(self, app, metrics, phase, log):
        self.app, self.metrics, self.phase, self.log = app, metrics, phase, log

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        start, status = time.perf_counter(), [0]
        state = scope.setdefault("state", {})

        async def send_status(message):
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            await send(message)
        try:
            if self.phase.name == "closing":
                state["endpoint"] = "shutdown"
                await _refuse_closing(receive, send_status)
            else:
                await self.app(scope, receive, send_status)
        finally:
            endpoint = state.get("endpoint", "other")
            if self.metrics:
                self.metrics.requests.labels(endpoint, state.get("version", ""),
                                             str(status[0])).inc()
                self.metrics.latency.labels(endpoint).observe(time.perf_counter() - start)
            if self.log:
                self.log(f"{scope['method']} {scope['path']} {status[0]} "
                         f"{state.get('instances', 0)} {(time.perf_counter() - start) * 1000:.1f}ms")


async def _refuse_closing(receive, send, bound=64 * 2 ** 20):
    size = 0
    while size <= bound:
        message = await receive()
        if message["type"] != "http.request":
            break
        size += len(message.get("body", b""))
        if not message.get("more_body"):
            break
    response = _error("the server is shutting down", 503, close=True)
    await send({"type": "http.response.start", "status": 503,
                "headers": [(k.encode(), v.encode()) for k, v in response.headers.items()]})
    await send({"type": "http.response.body", "body": response.body})
