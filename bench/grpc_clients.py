"""gRPC load for `python -m bench serve`, in a process of its own (the bench process loads
TensorFlow, whose protobuf messages would clash with export/serving/protos'):

    python -m bench.grpc_clients --port P --clients C --requests N [--images K]

C threads, each with its own channel, send N Predict calls in all (K random uint8 images
each, as tensor_content), after a barrier; prints one JSON line: images/s, p50/p99 ms.
"""
import argparse
import json
import threading
import time

import numpy as np


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

    latencies, errors = [], []
    per_client = [args.requests // args.clients + (i < args.requests % args.clients)
                  for i in range(args.clients)]
    start_line = threading.Barrier(args.clients + 1)

    def client(n):
        with grpc.insecure_channel(f"127.0.0.1:{args.port}") as channel:
            stub = tf_serving_pb2_grpc.PredictionServiceStub(channel)
            stub.Predict(request, timeout=120)  # connected before the clock starts
            start_line.wait()
            for _ in range(n):
                t = time.perf_counter()
                try:
                    stub.Predict(request, timeout=120)
                except grpc.RpcError as e:
                    errors.append(e.code().name)
                latencies.append((time.perf_counter() - t) * 1000)
    threads = [threading.Thread(target=client, args=(n,)) for n in per_client]
    for t in threads:
        t.start()
    start_line.wait()
    t0 = time.perf_counter()
    for t in threads:
        t.join()
    seconds = time.perf_counter() - t0
    print(json.dumps({"clients": args.clients, "requests": args.requests,
                      "images_per_request": args.images, "errors": sorted(set(errors)),
                      "images_per_s": args.requests * args.images / seconds,
                      "p50_ms": float(np.percentile(latencies, 50)),
                      "p99_ms": float(np.percentile(latencies, 99))}))


if __name__ == "__main__":
    main()
