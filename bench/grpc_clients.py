"""gRPC load for `python -m bench serve`, in a process of its own (the bench process loads
TensorFlow, whose protobuf messages would clash with export/serving/protos'):

    python -m bench.grpc_clients --port P --clients C --requests N [--images K]

C threads, each with its own channel, send N Predict calls in all (K random uint8 images
each, as tensor_content), after a barrier; prints one JSON line: images/s, p50/p99 ms.
"""
import argparse
import contextlib
import json

import numpy as np

from bench.load import run_clients


def main(argv=None):
    import grpc

    from export.serving.protos import tf_serving_pb2, tf_serving_pb2_grpc, tf_tensor_pb2

    p = argparse.ArgumentParser(prog="python -m bench.grpc_clients")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--clients", type=int, required=True)
    p.add_argument("--requests", type=int, required=True)
    p.add_argument("--images", type=int, default=1)
    args = p.parse_args(argv)

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
                    stub.Predict(request, timeout=120)
                except grpc.RpcError as e:
                    return e.code().name
            yield call
    print(json.dumps(run_clients(args.clients, args.requests, session, args.images)))

if __name__ == "__main__":
    main()
