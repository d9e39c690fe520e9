"""The Open Inference Protocol ("v2": KServe, Triton, MLServer) over REST, with the binary
tensor data extension, on the same versions, batchers and metrics as TensorFlow Serving's API.

    GET  /v2                                            server metadata
    GET  /v2/health/live, /v2/health/ready              200, or 503 while draining / 400 not ready
    GET  /v2/models/NAME[/versions/N]                   model metadata
    GET  /v2/models/NAME[/versions/N]/ready             200 or 400
    POST /v2/models/NAME[/versions/N]/infer             inference

An infer request has the input `images`, UINT8 [N, 32, 32, 3], as JSON `data` (flat or
nested) or as binary data after the JSON (its `parameters.binary_data_size`, the JSON's
length in the `Inference-Header-Content-Length` header); outputs `logits` and
`probabilities` come back FP32 [N, 10], as JSON or, when asked for (`binary_data` on an
output, `binary_data_output` on the request), as binary data after the JSON. The request's
`parameters.tta: true` adds flip test-time augmentation. Errors: {"error": "..."}.
"""
import asyncio
from typing import NamedTuple

import numpy as np
import orjson

from export.serving.bodies import BadRequest, dumps

SERVER = {"name": "davidnet-serve", "version": "0.1.0", "extensions": ["binary_tensor_data"]}
OUTPUTS = ("logits", "probabilities")
HEADER = "inference-header-content-length"


class InferRequest(NamedTuple):
    images: np.ndarray
    outputs: list       # [(name, binary?)] in the order asked for
    tta: bool
    id: str | None


def _parameter(obj, name, kind, default):
    params = obj.get("parameters") or {}
    if not isinstance(params, dict):
        raise BadRequest("\"parameters\" must be an object")
    value = params.get(name, default)
    if not isinstance(value, kind) or isinstance(value, bool) and kind is int:
        raise BadRequest(f"parameter {name!r} must be {kind.__name__}")
    return value


def parse_infer(body, header_length, max_instances):
    """An infer request body (JSON, then binary tensor data when header_length is given)."""
    if header_length is not None:
        if not header_length.isdigit() or int(header_length) > len(body):
            raise BadRequest(f"Inference-Header-Content-Length {header_length!r}: expected the "
                             f"JSON's length, at most the body's {len(body)} bytes")
        json_part, binary = body[:int(header_length)], body[int(header_length):]
    else:
        json_part, binary = body, b""
    try:
        request = orjson.loads(json_part)
    except orjson.JSONDecodeError as e:
        raise BadRequest(f"request body is not JSON ({e})") from None
    if not isinstance(request, dict) or not isinstance(request.get("inputs"), list):
        raise BadRequest("expected a JSON object with \"inputs\": a list of tensors")
    inputs = request["inputs"]
    if len(inputs) != 1 or not isinstance(inputs[0], dict) or inputs[0].get("name") != "images":
        raise BadRequest("expected one input, \"images\" (UINT8 [N, 32, 32, 3])")
    tensor = inputs[0]
    if tensor.get("datatype") != "UINT8":
        raise BadRequest(f"input images: datatype {tensor.get('datatype')!r}, expected \"UINT8\"")
    shape = tensor.get("shape")
    if (not isinstance(shape, list) or len(shape) != 4 or shape[1:] != [32, 32, 3]
            or not isinstance(shape[0], int) or shape[0] < 1):
        raise BadRequest(f"input images: shape {shape}, expected [N, 32, 32, 3] (N >= 1)")
    if shape[0] > max_instances:
        raise BadRequest(f"{shape[0]} images; at most {max_instances} per request "
                         "(--max-instances)", status=413)
    count = shape[0] * 32 * 32 * 3
    size = _parameter(tensor, "binary_data_size", int, None) if "parameters" in tensor else None
    if size is not None:
        if size != count or len(binary) != size:
            raise BadRequest(f"input images: binary_data_size {size} with {len(binary)} bytes of "
                             f"binary data, expected {count} for shape {shape}")
        images = np.frombuffer(binary, np.uint8).reshape(shape)
    else:
        if binary:
            raise BadRequest(f"{len(binary)} bytes of binary data that no input claims")
        try:
            data = np.asarray(tensor.get("data"))
        except ValueError:
            data = None
        if data is None or data.dtype.kind not in "iu" or data.size != count:
            raise BadRequest(f"input images: \"data\" must hold {count} integers 0..255 "
                             f"for shape {shape}")
        if data.min() < 0 or data.max() > 255:
            raise BadRequest("input images: values outside 0..255")
        images = data.astype(np.uint8).reshape(shape)
    binary_default = _parameter(request, "binary_data_output", bool, False)
    wanted = request.get("outputs")
    if wanted is None:
        outputs = [(name, binary_default) for name in OUTPUTS]
    else:
        if not isinstance(wanted, list) or not all(isinstance(o, dict) for o in wanted):
            raise BadRequest("\"outputs\" must be a list of objects")
        outputs = []
        for o in wanted:
            if o.get("name") not in OUTPUTS:
                raise BadRequest(f"output {o.get('name')!r}: expected logits or probabilities")
            outputs.append((o["name"], _parameter(o, "binary_data", bool, binary_default)))
    request_id = request.get("id")
    return InferRequest(images, outputs, _parameter(request, "tta", bool, False),
                        request_id if isinstance(request_id, str) else None)


def format_infer(name, version, request, logits, probs):
    """(body, JSON length or None): the JSON response, then the binary outputs."""
    arrays = {"logits": np.ascontiguousarray(logits, np.float32),
              "probabilities": np.ascontiguousarray(probs, np.float32)}
    outputs, binary = [], []
    for output, as_binary in request.outputs:
        entry = {"name": output, "datatype": "FP32", "shape": list(arrays[output].shape)}
        if as_binary:
            raw = arrays[output].tobytes()
            entry["parameters"] = {"binary_data_size": len(raw)}
            binary.append(raw)
        else:
            entry["data"] = arrays[output].ravel()
        outputs.append(entry)
    answer = {"model_name": name, "model_version": str(version), "outputs": outputs}
    if request.id is not None:
        answer["id"] = request.id
    head = dumps(answer)
    return (head + b"".join(binary), len(head)) if binary else (head, None)


def model_metadata(versions, served):
    return {"name": versions.name, "versions": [str(v) for v in sorted(versions.served)],
            "platform": "onnxruntime_onnx",
            "inputs": [{"name": "images", "datatype": "UINT8", "shape": [-1, 32, 32, 3]}],
            "outputs": [{"name": o, "datatype": "FP32", "shape": [-1, 10]} for o in OUTPUTS]}


def routes(versions, limits, metrics, phase, decode_pool, handler, read_body, json_response):
    """The v2 routes; `handler(endpoint)` wraps each as app.py's TF Serving handlers are."""
    from starlette.responses import Response
    from starlette.routing import Route

    def version_of(request):
        version = request.path_params.get("version")
        if version is not None and not version.isdigit():
            raise BadRequest(f"version {version!r}: expected a version number")
        return request.path_params["name"], int(version) if version else None

    @handler("v2_server")
    async def server_metadata(request):
        return json_response(SERVER)

    @handler("v2_health")
    async def live(request):
        return Response(status_code=200)

    @handler("v2_health")
    async def ready(request):
        if phase.name != "serving":
            return json_response({"error": "the server is shutting down"}, 503)
        if not versions.ready():
            return json_response({"error": "no model version is ready"}, 400)
        return Response(status_code=200)

    @handler("v2_metadata")
    async def metadata(request):
        served = versions.resolve(*version_of(request))
        request.state.version = str(served.version)
        return json_response(model_metadata(versions, served))

    @handler("v2_ready")
    async def model_ready(request):
        try:
            served = versions.resolve(*version_of(request))
        except BadRequest as e:
            return json_response({"error": str(e)}, 400)
        request.state.version = str(served.version)
        return Response(status_code=200)

    @handler("v2_infer")
    async def infer(request):
        name, version = version_of(request)
        versions.resolve(name, version)  # an unknown model is refused before the body is read
        body = await read_body(request, limits.max_body)
        parsed = await asyncio.get_running_loop().run_in_executor(
            decode_pool, parse_infer, body, request.headers.get(HEADER), limits.max_instances)
        request.state.instances = len(parsed.images)
        served = versions.resolve(name, version)
        request.state.version = str(served.version)
        with versions.using(served):
            logits, probs = await served.batcher.predict(parsed.images, parsed.tta)
        if metrics:
            metrics.images.labels(str(served.version)).inc(len(parsed.images))
        content, json_length = format_infer(versions.name, served.version, parsed, logits, probs)
        if json_length is None:
            return Response(content, media_type="application/json")
        return Response(content, media_type="application/octet-stream",
                        headers={"Inference-Header-Content-Length": str(json_length)})

    routes = [Route("/v2", server_metadata, methods=["GET"]),
              Route("/v2/health/live", live, methods=["GET"]),
              Route("/v2/health/ready", ready, methods=["GET"])]
    for prefix in ("/v2/models/{name}", "/v2/models/{name}/versions/{version}"):
        routes += [Route(prefix, metadata, methods=["GET"]),
                   Route(prefix + "/ready", model_ready, methods=["GET"]),
                   Route(prefix + "/infer", infer, methods=["POST"])]
    return routes
