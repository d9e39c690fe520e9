"""Publish a model to a serving base path as its next version, atomically.

    python -m export.publish RUN_DIR|MODEL.onnx BASE_DIR [--version N]

The model is checked as the server checks it (loads in ONNX Runtime, input `images` uint8
[-1, 32, 32, 3], outputs `logits` and `probabilities` float32 [-1, 10], class names), copied
into a hidden scratch folder inside BASE_DIR, and only then renamed to BASE_DIR/N (the
highest version there plus one, or --version N): a server polling BASE_DIR never sees a
half-written version. An existing version is never replaced.
"""
import sys

from export.serving.publishing import publish
from legacy_eager.cli import Parser, positive
from legacy_eager.errors import run_cli


def parser():
    p = Parser(prog="python -m export.publish", description=__doc__.split("\n\n")[0])
    p.add_argument("model", metavar="RUN_DIR|MODEL.onnx", help="a run folder with model.onnx, "
                   "or an ONNX file")
    p.add_argument("base", metavar="BASE_DIR", help="the serving base path (created if missing)")
    p.add_argument("--version", type=positive(int, "integer"), default=None,
                   help="the version number (default: the highest in BASE_DIR plus one)")
    return p


def main(argv=None):
    def run(argv):
        args = parser().parse_args(argv)
        publish(args.model, args.base, args.version)
    return run_cli(run, argv)


if __name__ == "__main__":
    sys.exit(main())
