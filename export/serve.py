"""Serve exported DavidNet models with TensorFlow Serving's REST and gRPC APIs and the Open
Inference Protocol (KServe, Triton), on ONNX Runtime alone (no TensorFlow in the process).

    python -m export.serve MODEL.onnx|RUN_DIR [FLAGS]          one model, as version 1
    python -m export.serve --model-base-path DIR [FLAGS]       DIR/1, DIR/2, ...: versions
    ./run.sh serve ...   or, from a serving install, davidnet-serve ...

Endpoints, for the model name given (--name):
    GET  /v1/models/NAME[/versions/N|/labels/L]            status: every version and its state
    GET  /v1/models/NAME[/versions/N|/labels/L]/metadata   the signature and class names
    POST /v1/models/NAME[/versions/N|/labels/L]:predict    {"instances": [...]} or {"inputs": ...};
                                   an instance is a 32x32x3 nested list of 0..255 integers or
                                   {"b64": "<base64 image file>"}; ?tta=1 or "tta": true adds
                                   flip test-time augmentation
    GET  /monitoring/prometheus/metrics                    Prometheus metrics
    GET  /                                                 a demo page
    /v2/health/live|ready, /v2/models/NAME[/versions/N][/ready|/infer]   the v2 protocol
Errors come as TensorFlow Serving gives them: {"error": "..."} with 400, 404, 413 or 503.
gRPC on --grpc-port (8500): tensorflow.serving.PredictionService/Predict and
GetModelMetadata, ModelService/GetModelStatus (signatures serving_default, serving_tta).

With --model-base-path, DIR is polled every --poll-seconds: a new version folder (publish
one with `python -m export.publish RUN_DIR DIR`) is loaded, checked and warmed before it
takes requests, and the version it replaces (--version-policy) finishes its requests and is
unloaded. A broken version is refused with one log line; the serving version stays.

Requests within --batch-window-ms of each other run as one ONNX Runtime batch. SIGTERM or
SIGINT: the status endpoints answer 503 for --drain-seconds while predictions go on, then
new requests get 503 with Connection: close, requests in flight finish, and the process
exits 0. One line per request goes to stderr unless --quiet.
"""
import os
import sys

from legacy_eager.cli import Parser, checked, non_negative, positive
from legacy_eager.errors import UsageError, run_cli


def parser():
    from export.serving.bodies import DEFAULT_MAX_IMAGE_PIXELS
    from export.serving.versions import VersionPolicy, parse_labels

    def flag_type(parse, expected):
        return checked(parse, expected, lambda v: True)

    p = Parser(prog="python -m export.serve", description=__doc__.split("\n\n")[0])
    p.add_argument("model", metavar="MODEL.onnx|RUN_DIR", nargs="?",
                   help="one model, served as version 1")
    p.add_argument("--model-base-path", metavar="DIR",
                   help="a folder of numbered version folders (DIR/1/model.onnx, ...), polled")
    p.add_argument("--version-policy", type=flag_type(VersionPolicy.parse, "latest, all or "
                   "specific:N[,M...]"), default=VersionPolicy(),
                   help="which versions to serve: latest, all or specific:1,3 (default latest)")
    p.add_argument("--version-labels", type=flag_type(parse_labels, "LABEL=N[,LABEL=N...]"),
                   default={}, metavar="L=N,...", help="names for versions, e.g. stable=1,canary=2")
    p.add_argument("--poll-seconds", type=non_negative(float, "number"), default=1.0,
                   help="how often the base path is looked at; 0: only at start (default 1)")
    p.add_argument("--drain-seconds", type=non_negative(float, "number"), default=2.0,
                   help="after SIGTERM, how long the status endpoints answer 503 while "
                        "predictions go on (default 2)")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=checked(int, "a port 0..65535", lambda v: 0 <= v < 65536),
                   default=8501)
    p.add_argument("--grpc-port", type=checked(int, "a port 0..65535", lambda v: 0 <= v < 65536),
                   default=8500, help="TensorFlow Serving's gRPC API on this port; 0: off "
                   "(default 8500)")
    p.add_argument("--name", default="davidnet", help="the model name in the URLs (default davidnet)")
    p.add_argument("--max-batch", type=positive(int, "integer"), default=256,
                   help="images per ONNX Runtime call (default 256)")
    p.add_argument("--batch-window-ms", type=non_negative(float, "number"), default=2.0,
                   help="how long a request waits for others to share its batch (default 2)")
    p.add_argument("--threads", type=non_negative(int, "integer"), default=0,
                   help="ONNX Runtime threads (0: all cores)")
    p.add_argument("--max-body-mb", type=positive(float, "number"), default=16.0,
                   help="largest request body (default 16)")
    p.add_argument("--max-instances", type=positive(int, "integer"), default=1024,
                   help="most images in one request (default 1024)")
    p.add_argument("--max-image-pixels", type=positive(int, "integer"),
                   default=DEFAULT_MAX_IMAGE_PIXELS,
                   help="most pixels (width x height) of one b64 image, read from its header "
                        f"before decoding (default {DEFAULT_MAX_IMAGE_PIXELS} = 4096x4096)")
    p.add_argument("--quiet", action="store_true", help="no line per request")
    return p


def _sources(args):
    """The versions' scan function, and whether to poll."""
    from export.serving import models
    from export.serving.versions import fingerprint, scan_base_path

    if (args.model is None) == (args.model_base_path is None):
        raise UsageError("give one of MODEL.onnx|RUN_DIR or --model-base-path DIR")
    if args.model_base_path is not None:
        base = args.model_base_path
        if not os.path.isdir(base):
            raise UsageError(f"--model-base-path {base}: no such folder")
        return (lambda: scan_base_path(base)), args.poll_seconds or None
    path = models.model_path(args.model)
    try:  # a single model that cannot be served is a usage error, before any port is bound
        models.load_file(path, threads=1)
    except models.Refused as e:
        raise UsageError(f"{args.model}: cannot serve it: {e}") from None
    return (lambda: {1: (path, fingerprint(path))}), None


def serve(argv):
    args = parser().parse_args(argv)
    scan, poll_seconds = _sources(args)

    import uvicorn

    from export.serving.app import Limits, Phase, make_app
    from export.serving.lifecycle import DrainingServer
    from export.serving.metrics import Metrics
    from export.serving.versions import ModelVersions

    def say(line):
        print(line, file=sys.stderr, flush=True)
    versions = ModelVersions(args.name, scan, args.version_policy, args.version_labels,
                             poll_seconds, args.threads, args.max_batch,
                             args.batch_window_ms / 1000, Metrics(), say)
    phase = Phase()
    limits = Limits(int(args.max_body_mb * 2 ** 20), args.max_instances, args.max_image_pixels)
    grpc_address = (args.host, args.grpc_port) if args.grpc_port else None
    app = make_app(versions, limits, versions.metrics, phase, None if args.quiet else say,
                   grpc_address)
    source = args.model or f"{args.model_base_path} ({args.version_policy} of its versions)"
    grpc_line = f"; gRPC: {args.host}:{args.grpc_port}" if grpc_address else ""
    say(f"serving {source} as {args.name} on http://{args.host}:{args.port}/ "
        f"(REST: /v1/models/{args.name}:predict{grpc_line})")
    config = uvicorn.Config(app, host=args.host, port=args.port, log_level="warning",
                            access_log=False, timeout_graceful_shutdown=30, lifespan="on")
    try:
        DrainingServer(config, phase, args.drain_seconds, say).run()
    except SystemExit as e:  # uvicorn exits 1 when it cannot bind the port
        if e.code:
            raise UsageError(f"--port {args.port}: cannot serve there (see the line above)") from None


def main(argv=None):
    return run_cli(serve, argv)


if __name__ == "__main__":
    sys.exit(main())
