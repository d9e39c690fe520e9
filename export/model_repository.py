"""A Triton / KServe model repository from a run's ONNX model.

    python -m export.model_repository RUN_DIR|MODEL.onnx OUT [--name davidnet]
        [--max-batch-size 256] [--max-queue-delay-us 2000]

writes, atomically (the folder appears whole or not at all):

    OUT/davidnet/config.pbtxt     platform onnxruntime_onnx, max_batch_size, dynamic_batching,
                                  input images TYPE_UINT8 [32, 32, 3], outputs logits and
                                  probabilities TYPE_FP32 [10] (dims leave out the batch), the
                                  class names as the outputs' label file
    OUT/davidnet/labels.txt       one class name a line, in the model's order
    OUT/davidnet/1/model.onnx     the model

Triton serves OUT as its --model-repository; KServe's InferenceService takes it as a
storageUri (README); `python -m export.serve --model-base-path OUT/davidnet` serves the same
folder (only the numbered folders are versions).
"""
import os
import shutil
import sys

from legacy_eager.atomic import staged_path
from legacy_eager.cli import Parser, non_negative, positive
from legacy_eager.errors import UsageError, run_cli


def config_pbtxt(name, max_batch_size, max_queue_delay_us):
    """Triton's model configuration in protobuf text format."""
    def tensor(tensor_name, data_type, dims, labels=False):
        label = '\n    label_filename: "labels.txt"' if labels else ""
        return (f'  {{\n    name: "{tensor_name}"\n    data_type: {data_type}\n'
                f'    dims: [ {", ".join(map(str, dims))} ]{label}\n  }}')
    return "\n".join([
        f'name: "{name}"',
        'platform: "onnxruntime_onnx"',
        f"max_batch_size: {max_batch_size}",
        "input [", tensor("images", "TYPE_UINT8", [32, 32, 3]), "]",
        "output [", tensor("logits", "TYPE_FP32", [10], labels=True) + ",",
        tensor("probabilities", "TYPE_FP32", [10], labels=True), "]",
        f"dynamic_batching {{\n  max_queue_delay_microseconds: {max_queue_delay_us}\n}}",
        "version_policy: { latest: { num_versions: 1 } }",
        ""])


def write_repository(model, out, name="davidnet", max_batch_size=256, max_queue_delay_us=2000):
    """OUT/NAME with config.pbtxt, labels.txt and 1/model.onnx; returns OUT/NAME."""
    from export.serving import models

    path = models.model_path(model)
    try:
        classifier = models.load_file(path, threads=1)
    except models.Refused as e:
        raise UsageError(f"{model}: Triton would refuse it as this server does: {e}") from None
    if os.path.exists(out) and not os.path.isdir(out):
        raise UsageError(f"{out}: exists and is not a folder")
    os.makedirs(out, exist_ok=True)
    target = os.path.join(out, name)
    with staged_path(target, is_dir=True) as staged:
        with open(os.path.join(staged, "config.pbtxt"), "w", encoding="utf-8") as f:
            f.write(config_pbtxt(name, max_batch_size, max_queue_delay_us))
        with open(os.path.join(staged, "labels.txt"), "w", encoding="utf-8") as f:
            f.write("".join(c + "\n" for c in classifier.class_names))
        os.makedirs(os.path.join(staged, "1"))
        shutil.copyfile(path, models.model_file(os.path.join(staged, "1")))
    return target


def parser():
    p = Parser(prog="python -m export.model_repository", description=__doc__.split("\n\n")[0])
    p.add_argument("model", metavar="RUN_DIR|MODEL.onnx")
    p.add_argument("out", metavar="OUT", help="the repository folder (created if missing)")
    p.add_argument("--name", default="davidnet", help="the model's name (default davidnet)")
    p.add_argument("--max-batch-size", type=positive(int, "integer"), default=256,
                   help="Triton's max_batch_size: the most images Triton puts in one "
                        "batch (default 256)")
    p.add_argument("--max-queue-delay-us", type=non_negative(int, "integer"), default=2000,
                   metavar="MICROSECONDS",
                   help="how long Triton's dynamic batcher may hold a request, waiting for "
                        "others to share its batch, in microseconds: config.pbtxt's "
                        "max_queue_delay_microseconds (default 2000, that is 2 ms, as "
                        "export.serve's --batch-window-ms)")
    return p


def main(argv=None):
    def run(argv):
        args = parser().parse_args(argv)
        target = write_repository(args.model, args.out, args.name, args.max_batch_size,
                                  args.max_queue_delay_us)
        print(f"wrote {target}: config.pbtxt, labels.txt, 1/model.onnx")
    return run_cli(run, argv)


if __name__ == "__main__":
    sys.exit(main())
