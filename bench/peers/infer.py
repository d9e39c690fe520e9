"""Inference of an ONNX export by one engine, for `python -m bench peers`; prints one JSON
line and saves the batch's probabilities for the comparison.

    python -m bench.peers.infer --engine onnxruntime|openvino|openvino-default MODEL.onnx
        --images IMAGES.npy --probabilities OUT.npy --threads 2 --reps 8 --reps-one 200

onnxruntime runs in the project's environment with the server's session
(export.serving.models.load_file: its options, its thread count); openvino runs in the
peers' virtualenv: the ONNX file read as it is, compiled for the CPU with the same thread
count, the latency hint, and float32 inference precision (OpenVINO's default on a CPU with
avx512_bf16 or AMX is bf16, which is not the same work: `openvino-default` keeps that
default, as a row of its own). Both run the uint8 images the server takes; the timing is
batch 256 throughput (images/s) after two untimed calls, then batch 1 latencies (p50 ms).
"""
import argparse
import json
import sys

import numpy as np

from bench.timing import time_runner


def onnxruntime_runner(path, threads):
    import onnxruntime

    from export.serving.models import load_file

    session = load_file(path, threads=threads).session
    return (lambda images: session.run(["probabilities"], {"images": images})[0],
            {"engine": "onnxruntime", "version": onnxruntime.__version__})


def openvino_runner(path, threads, precision_hint="f32"):
    import openvino as ov

    core = ov.Core()
    config = {"INFERENCE_NUM_THREADS": threads, "PERFORMANCE_HINT": "LATENCY"}
    if precision_hint:
        config["INFERENCE_PRECISION_HINT"] = precision_hint
    compiled = core.compile_model(core.read_model(path), "CPU", config)
    request = compiled.create_infer_request()
    output = compiled.output("probabilities")

    def run(images):
        return request.infer({"images": images})[output]
    return run, {"engine": "openvino", "version": ov.__version__.split("-")[0],
                 "inference_precision": compiled.get_property("INFERENCE_PRECISION_HINT").to_string()}


def main(argv=None):
    p = argparse.ArgumentParser(prog="python -m bench.peers.infer")
    p.add_argument("model")
    p.add_argument("--engine", choices=("onnxruntime", "openvino", "openvino-default"), required=True)
    p.add_argument("--images", required=True)
    p.add_argument("--probabilities", required=True)
    p.add_argument("--threads", type=int, required=True)
    p.add_argument("--reps", type=int, default=8)
    p.add_argument("--reps-one", type=int, default=200)
    args = p.parse_args(argv)
    images = np.load(args.images)
    if args.engine == "onnxruntime":
        run, about = onnxruntime_runner(args.model, args.threads)
    else:
        run, about = openvino_runner(args.model, args.threads,
                                     "f32" if args.engine == "openvino" else None)
    np.save(args.probabilities, run(images))
    print(json.dumps({**about, "threads": args.threads,
                      **time_runner(run, images, args.reps, args.reps_one, warmups=2)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
