"""gRPC load for `python -m bench serve`, in a process of its own (the bench process loads
TensorFlow, whose protobuf messages would clash with export/serving/protos'):

    python -m bench.grpc_clients --port P --clients C --requests N [--images K]

C threads, each with its own channel, send N Predict calls in all (K random uint8 images
each, as tensor_content), after a barrier; prints one JSON line: images/s, p50/p99 ms, and
the distinct errors. A reply counts only when its `probabilities` decode to float32 [K, 10]
rows that sum to 1; any other reply is an error, as a failed call is.
"""
import argparse
import contextlib
import json
import sys

import numpy as np

from bench.load import run_clients
from legacy_eager.cli import Parser, checked, positive
from legacy_eager.errors import run_cli


def parser():
    p = Parser(prog="python -m bench.grpc_clients", description=__doc__,
               formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--port", type=checked(int, "a port 1..65535", lambda v: 0 < v < 65536),
                   required=True, help="the server's gRPC port, on 127.0.0.1")
    p.add_argument("--clients", type=positive(int, "integer"), required=True,
                   help="threads, each with its own channel")
    p.add_argument("--requests", type=positive(int, "integer"), required=True,
                   help="Predict calls in all")
    p.add_argument("--images", type=positive(int, "integer"), default=1,
                   help="images per call (default 1)")
    return p


def reply_error(response, images, tensor_pb2):
    """None when the PredictResponse holds probabilities for `images` images, else what is
    wrong with it."""
    if "probabilities" not in response.outputs:
        return "reply without probabilities"
    tensor = response.outputs["probabilities"]
    shape = [d.size for d in tensor.tensor_shape.dim]
    if tensor.dtype != tensor_pb2.DT_FLOAT or shape != [images, 10]:
        return f"probabilities of dtype {tensor.dtype}, shape {shape}; expected DT_FLOAT [{images}, 10]"
    if tensor.tensor_content:
        if len(tensor.tensor_content) != images * 10 * 4:
            return f"{len(tensor.tensor_content)} bytes of probabilities for shape {shape}"
        rows = np.frombuffer(tensor.tensor_content, np.float32).reshape(images, 10)
    elif len(tensor.float_val) == images * 10:
        rows = np.asarray(tensor.float_val, np.float32).reshape(images, 10)
    else:
        return f"{len(tensor.float_val)} probabilities for shape {shape}"
    if not (np.all(rows >= 0) and np.allclose(rows.sum(axis=1), 1, atol=1e-4)):
        return "probabilities that are not distributions"
    return None


def main(argv=None):
    return run_cli(drive, argv)


def drive(argv):
    args = parser().parse_args(argv)
    import grpc

    from export.serving.protos import tf_serving_pb2, tf_serving_pb2_grpc, tf_tensor_pb2


    images = np.random.default_rng(4).integers(0, 256, (args.images, 32, 32, 3), dtype=np.uint8)
    request = tf_serving_pb2.PredictRequest()
    request.model_spec.name = "davidnet"
    tensor = request.inputs["images"]
    tensor.dtype = tf_tensor_pb2.DT_UINT8
    tensor.tensor_shape.dim.extend(tf_tensor_pb2.TensorShapeProto.Dim(size=s) for s in images.shape)
    tensor.tensor_content = images.tobytes()

    @contextlib.contextmanager
    def session():
        with grpc.insecure_channel(f"127.0.0.1:{args.port}") as channel:
            stub = tf_serving_pb2_grpc.PredictionServiceStub(channel)
            stub.Predict(request, timeout=120)  # connected before the clock starts

            def call():
                try:
                    response = stub.Predict(request, timeout=120)
                except grpc.RpcError as e:
                    return e.code().name
                return reply_error(response, args.images, tf_tensor_pb2)
            yield call
    print(json.dumps(run_clients(args.clients, args.requests, session, args.images)))


if __name__ == "__main__":
    sys.exit(main())
