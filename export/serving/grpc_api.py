"""TensorFlow Serving's gRPC API (port 8500 by default), in the server's process and event
loop, on the same versions, labels, batchers and metrics as the REST API:
PredictionService/Predict and GetModelMetadata, ModelService/GetModelStatus.

Predict takes `images` as a uint8 TensorProto [N, 32, 32, 3] (`tensor_content`, as
`tf.make_tensor_proto` writes it, or `int_val`) and answers `logits` and `probabilities` as
float32 TensorProtos; `signature_name` "" or serving_default, or serving_tta for the model's TTA.
Errors are gRPC status codes with a message naming what is wrong. The messages come from
export/serving/protos (imported here, lazily: see its __init__).
"""
import asyncio
import functools
import time

import grpc
import numpy as np

from export.serving.bodies import BadRequest

SETTLE_SECONDS = 0.2  # after the last call in flight, before the server stops
SIGNATURES = {"": False, "serving_default": False, "serving_tta": True}  # name -> the model's TTA
OUTPUTS = ("logits", "probabilities")
HTTP_TO_GRPC = {400: grpc.StatusCode.INVALID_ARGUMENT, 404: grpc.StatusCode.NOT_FOUND,
                413: grpc.StatusCode.RESOURCE_EXHAUSTED, 503: grpc.StatusCode.UNAVAILABLE}


@functools.cache  # imported once, on the first call (never beside TensorFlow: see protos)
def _messages():
    from export.serving.protos import tf_error_codes_pb2, tf_serving_pb2, tf_serving_pb2_grpc
    from export.serving.protos import tf_tensor_pb2
    return tf_serving_pb2, tf_serving_pb2_grpc, tf_tensor_pb2, tf_error_codes_pb2


class Failure(Exception):
    def __init__(self, code, message):
        super().__init__(message)
        self.code = code


def images_from_tensor(tensor, max_instances, tensor_pb2):
    """A uint8 TensorProto [N, 32, 32, 3] as a numpy array; Failure if it is not one."""
    if tensor.dtype != tensor_pb2.DT_UINT8:
        name = tensor_pb2.DataType.Name(tensor.dtype) if tensor.dtype in tensor_pb2.DataType.values() \
            else str(tensor.dtype)
        raise Failure(grpc.StatusCode.INVALID_ARGUMENT,
                      f"input images: dtype {name}, expected DT_UINT8")
    shape = [d.size for d in tensor.tensor_shape.dim]
    if len(shape) != 4 or shape[1:] != [32, 32, 3] or shape[0] < 1:
        raise Failure(grpc.StatusCode.INVALID_ARGUMENT,
                      f"input images: shape {shape}, expected [N, 32, 32, 3] (N >= 1)")
    if shape[0] > max_instances:
        raise Failure(grpc.StatusCode.RESOURCE_EXHAUSTED,
                      f"{shape[0]} images; at most {max_instances} per request (--max-instances)")
    count = int(np.prod(shape))
    if tensor.tensor_content:
        if len(tensor.tensor_content) != count:
            raise Failure(grpc.StatusCode.INVALID_ARGUMENT,
                          f"input images: {len(tensor.tensor_content)} bytes of tensor_content "
                          f"for shape {shape}, expected {count}")
        return np.frombuffer(tensor.tensor_content, np.uint8).reshape(shape)
    values = np.asarray(tensor.int_val, dtype=np.int64)
    if values.size != count:
        raise Failure(grpc.StatusCode.INVALID_ARGUMENT,
                      f"input images: {values.size} int_val values for shape {shape}, expected {count}")
    if values.min() < 0 or values.max() > 255:
        raise Failure(grpc.StatusCode.INVALID_ARGUMENT, "input images: values outside 0..255")
    return values.astype(np.uint8).reshape(shape)


def tensor_from_floats(array, tensor_pb2):
    array = np.ascontiguousarray(array, dtype=np.float32)
    tensor = tensor_pb2.TensorProto(dtype=tensor_pb2.DT_FLOAT, tensor_content=array.tobytes())
    tensor.tensor_shape.dim.extend(tensor_pb2.TensorShapeProto.Dim(size=s) for s in array.shape)
    return tensor


class GrpcApi:
    """The gRPC server: `await start(host, port)` binds it (returns the port), `await
    stop(grace)` refuses new calls and lets those in flight finish."""

    def __init__(self, versions, max_instances, max_message_bytes, metrics=None):
        self.versions, self.max_instances, self.metrics = versions, max_instances, metrics
        self.max_message_bytes = max_message_bytes
        self.server = None
        self.closing, self.in_flight = False, 0

    async def start(self, host, port):
        serving_pb2, serving_grpc, _, _ = _messages()
        options = [("grpc.max_receive_message_length", self.max_message_bytes),
                   ("grpc.so_reuseport", 0)]
        self.server = grpc.aio.server(options=options)
        api = self

        class PredictionService(serving_grpc.PredictionServiceServicer):
            async def Predict(self, request, context):
                return await api._call("grpc_predict", api._predict, request, context)

            async def GetModelMetadata(self, request, context):
                return await api._call("grpc_metadata", api._metadata, request, context)

        class ModelService(serving_grpc.ModelServiceServicer):
            async def GetModelStatus(self, request, context):
                return await api._call("grpc_status", api._status, request, context)

        serving_grpc.add_PredictionServiceServicer_to_server(PredictionService(), self.server)
        serving_grpc.add_ModelServiceServicer_to_server(ModelService(), self.server)
        bound = self.server.add_insecure_port(f"{host}:{port}")
        if not bound:
            raise OSError(f"cannot bind gRPC to {host}:{port}")
        await self.server.start()
        return bound

    async def stop(self, grace=30.0):
        """New calls are answered UNAVAILABLE by the handlers while those in flight finish
        (at most `grace` seconds); then the server stops. (Stopping at once would cancel the
        calls gRPC has accepted but not yet handed to a handler.)"""
        if self.server is None:
            return
        self.closing = True
        deadline = asyncio.get_running_loop().time() + grace
        while self.in_flight and asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(0.01)
        await asyncio.sleep(SETTLE_SECONDS)
        server, self.server = self.server, None
        # every handler has finished: what is left is calls accepted but never started
        await server.stop(SETTLE_SECONDS)

    # -------------------------------------------------------- one call

    async def _call(self, endpoint, method, request, context):
        start, state = time.perf_counter(), {"version": ""}
        failure = None
        if self.metrics:
            self.metrics.in_flight.labels(endpoint).inc()
        self.in_flight += 1
        try:
            if self.closing:
                raise Failure(grpc.StatusCode.UNAVAILABLE, "the server is shutting down")
            return await method(request, state)
        except Failure as e:
            failure = e
        except BadRequest as e:  # NotServed and the body checks: their HTTP status mapped
            failure = Failure(HTTP_TO_GRPC.get(e.status, grpc.StatusCode.INVALID_ARGUMENT), str(e))
        finally:
            self.in_flight -= 1
            if self.metrics:
                code = failure.code if failure else grpc.StatusCode.OK
                self.metrics.in_flight.labels(endpoint).dec()
                self.metrics.requests.labels(endpoint, state["version"], code.name).inc()
                self.metrics.latency.labels(endpoint).observe(time.perf_counter() - start)
        await context.abort(failure.code, str(failure))

    def _spec(self, spec):
        which = spec.WhichOneof("version_choice")
        version = spec.version.value if which == "version" else None
        label = spec.version_label if which == "version_label" else None
        return spec.name, version, label

    def _spec_message(self, served, signature_name=""):
        serving_pb2 = _messages()[0]
        spec = serving_pb2.ModelSpec(name=self.versions.name, signature_name=signature_name)
        spec.version.value = served.version
        return spec

    async def _predict(self, request, state):
        serving_pb2, _, tensor_pb2, _ = _messages()
        signature = request.model_spec.signature_name
        if signature not in SIGNATURES:
            raise Failure(grpc.StatusCode.FAILED_PRECONDITION,
                          f"Serving signature key \"{signature}\" not found (serving_default, "
                          "serving_tta)")
        if set(request.inputs) != {"images"}:
            raise Failure(grpc.StatusCode.INVALID_ARGUMENT,
                          f"inputs {sorted(request.inputs)}, expected exactly [\"images\"]")
        unknown = set(request.output_filter) - set(OUTPUTS)
        if unknown:
            raise Failure(grpc.StatusCode.INVALID_ARGUMENT,
                          f"output_filter {sorted(unknown)}: not an output (logits, probabilities)")
        images = images_from_tensor(request.inputs["images"], self.max_instances, tensor_pb2)
        served = self.versions.resolve(*self._spec(request.model_spec))
        state["version"] = str(served.version)
        with self.versions.using(served):
            logits, probs = await served.batcher.predict(images, SIGNATURES[signature])
        if self.metrics:
            self.metrics.images.labels(str(served.version)).inc(len(images))
        wanted = request.output_filter or OUTPUTS
        response = serving_pb2.PredictResponse(
            model_spec=self._spec_message(served, signature or "serving_default"))
        for name, array in (("logits", logits), ("probabilities", probs)):
            if name in wanted:
                response.outputs[name].CopyFrom(tensor_from_floats(array, tensor_pb2))
        return response

    async def _metadata(self, request, state):
        serving_pb2, _, tensor_pb2, _ = _messages()
        fields = list(request.metadata_field)
        if not fields:
            raise Failure(grpc.StatusCode.INVALID_ARGUMENT,
                          "GetModelMetadataRequest must specify at least one metadata_field")
        if fields != ["signature_def"]:
            raise Failure(grpc.StatusCode.INVALID_ARGUMENT,
                          f"metadata_field {fields}: only signature_def is supported")
        served = self.versions.resolve(*self._spec(request.model_spec))
        state["version"] = str(served.version)

        def info(name, dtype, dims):
            t = tensor_pb2.TensorInfo(name=f"{name}:0", dtype=dtype)
            t.tensor_shape.dim.extend(tensor_pb2.TensorShapeProto.Dim(size=d) for d in dims)
            return t
        signatures = serving_pb2.SignatureDefMap()
        for name in ("serving_default", "serving_tta"):
            sig = signatures.signature_def[name]
            sig.method_name = "tensorflow/serving/predict"
            sig.inputs["images"].CopyFrom(info("images", tensor_pb2.DT_UINT8, [-1, 32, 32, 3]))
            for output in OUTPUTS:
                sig.outputs[output].CopyFrom(info(output, tensor_pb2.DT_FLOAT, [-1, 10]))
        response = serving_pb2.GetModelMetadataResponse(model_spec=self._spec_message(served))
        response.metadata["signature_def"].Pack(signatures)
        return response

    async def _status(self, request, state):
        serving_pb2, _, _, codes_pb2 = _messages()
        document = self.versions.status_document(*self._spec(request.model_spec))
        response = serving_pb2.GetModelStatusResponse()
        for entry in document["model_version_status"]:
            response.model_version_status.add(
                version=int(entry["version"]),
                state=serving_pb2.ModelVersionStatus.State.Value(entry["state"]),
                status=serving_pb2.StatusProto(
                    error_code=codes_pb2.Code.Value(entry["status"]["error_code"]),
                    error_message=entry["status"]["error_message"]))
        return response
