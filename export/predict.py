"""Classify images with an exported DavidNet ONNX model (ONNX Runtime, no TensorFlow).

    python -m export.predict MODEL.onnx PATH... [--top-k K] [--json] [--batch-size N]
    python -m export.predict MODEL.onnx DATA --evaluate [--split test] [--tta] [--plot CM.png]

PATH is an image file (any format Pillow reads), a folder (searched recursively for
image files) or a .tar/.tar.gz archive. Images are converted to RGB (grayscale is
repeated over the channels; an alpha channel is dropped) and, when not 32x32, resized
to 32x32 with Pillow's bilinear filter, aspect ratio not kept.

--evaluate reads labels from each image's parent folder (a CIFAR-10 class name) and
prints overall and per-class accuracy and the 10x10 confusion matrix (--plot draws it);
in trees with train/ and test/ folders only the --split folder counts. --tta applies the
model's own test-time augmentation, the views its metadata lists (`tta_views`), a pass per
view: DavidNet's flip TTA averages each image's logits with its mirror image's; airbench94's
level 2 adds 1-pixel translations (6 views). A model without `tta_views` gets flip TTA. A
file that cannot be read gets one line on stderr; the rest are still classified, and the
exit code is 1 at the end.

What it needs: onnxruntime, numpy and Pillow (never TensorFlow), and from this project
the command-line convention it shares with every command, legacy_eager/cli.py and
legacy_eager/errors.py (standard library only), and the TTA views a model lists,
legacy_eager/tta.py (numpy). So either install the project's serving set (pip install
"REPOSITORY[serve]", which gives davidnet-predict) or copy these six files, keeping their
folders, and run `python -m export.predict` beside them: export/__init__.py,
export/predict.py, legacy_eager/__init__.py, legacy_eager/cli.py, legacy_eager/errors.py,
legacy_eager/tta.py. --plot also needs matplotlib and legacy_eager/plots.py and
legacy_eager/atomic.py.
"""
import argparse
import json
import os
import sys
import tarfile

import numpy as np

from legacy_eager import tta as tta_views
from legacy_eager.cli import Parser, positive
from legacy_eager.errors import UsageError, run_cli

EXIT_UNREADABLE = 1  # some file could not be read; the others were classified


class OnnxClassifier:
    """An ONNX DavidNet export: uint8 [N, 32, 32, 3] images in, logits and probabilities out."""

    def __init__(self, path, threads=0, memory_arena=True):
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = threads  # 0: ONNX Runtime's default (all cores)
        # The arena keeps a session's largest batch allocated for good: a server with two
        # versions loaded holds two. Without it, the same batch-256 speed, 404 MB instead of
        # 996 MB for two width-64 sessions, 2.5 ms more at batch 1 (README, Serving).
        options.enable_cpu_mem_arena = memory_arena
        self.session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
        meta = self.session.get_modelmeta().custom_metadata_map
        names = json.loads(meta["class_names"]) if "class_names" in meta else None
        self.class_names = names or [str(i) for i in range(10)]
        # The model's TTA; flip TTA for exports from before tta_views was written.
        self.tta_views = (tta_views.from_json(meta["tta_views"], f"{path}: tta_views")
                          if "tta_views" in meta else tta_views.FLIP)

    def run(self, images, batch_size=256, tta=False):
        """(logits, probabilities) for uint8 images [N, 32, 32, 3], batch_size at a time.
        tta: the model's test-time augmentation, a pass per view of self.tta_views; the
        logits are the views' weighted sum, the probabilities their softmax (as the
        SavedModel's serving_tta)."""
        if tta:
            logits = tta_views.combine([self.run(tta_views.view_images(images, v), batch_size)[0]
                                        for v in self.tta_views], self.tta_views)
            return logits, softmax(logits)
        outs = [self.session.run(["logits", "probabilities"], {"images": images[i:i + batch_size]})
                for i in range(0, len(images), batch_size)]
        return np.concatenate([o[0] for o in outs]), np.concatenate([o[1] for o in outs])



def softmax(logits):
    e = np.exp(logits - logits.max(axis=1, keepdims=True))
    return (e / e.sum(axis=1, keepdims=True)).astype(np.float32)


def to_model_input(img):
    """A Pillow image as uint8 [32, 32, 3] RGB: converted, and resized when not 32x32."""
    from PIL import Image

    img = img.convert("RGB")
    if img.size != (32, 32):
        img = img.resize((32, 32), Image.BILINEAR)
    return np.asarray(img, dtype=np.uint8)


def _decode(raw_or_path):
    from PIL import Image

    with Image.open(raw_or_path) as img:
        img.load()
        return to_model_input(img)


def _image_extensions():
    from PIL import Image

    return {ext.lower() for ext in Image.registered_extensions()}


def iter_sources(paths):
    """Yield (name, opener) for every image in the given files, folders and archives, in
    order; `opener()` returns something Pillow can open. Missing paths yield a failing opener
    so that they are reported like unreadable files."""
    import io

    extensions = _image_extensions()
    for path in paths:
        if os.path.isdir(path):
            for dirpath, dirnames, filenames in os.walk(path):
                dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
                for name in sorted(filenames):
                    if not name.startswith(".") and os.path.splitext(name)[1].lower() in extensions:
                        full = os.path.join(dirpath, name)
                        yield full, (lambda p=full: p)
        elif os.path.isfile(path) and tarfile.is_tarfile(path):
            try:
                with tarfile.open(path, "r:*") as tar:
                    for member in tar:
                        base = os.path.basename(member.name)
                        if (member.isfile() and not base.startswith(".")
                                and os.path.splitext(base)[1].lower() in extensions):
                            raw = tar.extractfile(member).read()
                            yield f"{path}:{member.name}", (lambda r=raw: io.BytesIO(r))
            except (tarfile.TarError, EOFError, OSError) as e:
                yield path, _fail(f"damaged archive ({type(e).__name__})")
        elif os.path.isfile(path):
            yield path, (lambda p=path: p)
        else:
            yield path, _fail("no such file or folder")


def _fail(reason):
    def opener():
        raise OSError(reason)
    return opener


def decoded(sources, on_error):
    """(name, uint8 image) for each readable source; unreadable ones go to on_error."""
    for name, opener in sources:
        try:
            yield name, _decode(opener())
        except Exception as e:
            on_error(name, e)


def batched(items, size):
    batch = []
    for item in items:
        batch.append(item)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def label_of(name, class_names, split):
    """Class index from the parent folder, or None when the image does not count."""
    parts = name.replace(":", "/").replace(os.sep, "/").split("/")
    if len(parts) < 2 or parts[-2] not in class_names:
        return None
    if len(parts) >= 3 and parts[-3] in ("train", "test") and parts[-3] != split:
        return None
    return class_names.index(parts[-2])


def accuracy_report(predicted, labels, class_names):
    """Overall and per-class accuracy and the confusion matrix (rows: true class,
    columns: predicted class)."""
    predicted, labels = np.asarray(predicted), np.asarray(labels)
    per_class = {}
    for i, name in enumerate(class_names):
        mask = labels == i
        if mask.any():
            per_class[name] = {"images": int(mask.sum()),
                               "accuracy": float(np.mean(predicted[mask] == i))}
    matrix = np.zeros((len(class_names), len(class_names)), np.int64)
    np.add.at(matrix, (labels, predicted), 1)
    return {"images": int(len(labels)), "accuracy": float(np.mean(predicted == labels)),
            "per_class": per_class, "confusion": matrix.tolist()}


def format_confusion(matrix, class_names):
    """The confusion matrix as a fixed-width table: a row per true class, a column per
    predicted class (names cut to 5 letters), then the row's accuracy."""
    short = [n[:5] for n in class_names]
    lines = ["true \\ predicted " + " ".join(f"{n:>5}" for n in short) + "   acc"]
    for i, row in enumerate(matrix):
        total = sum(row)
        acc = row[i] / total if total else float("nan")
        lines.append(f"{class_names[i]:<17} " + " ".join(f"{v:>5d}" for v in row) + f"  {acc:.3f}")
    return "\n".join(lines)


def parser():
    p = Parser(prog="python -m export.predict", description=__doc__,
               formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("model", metavar="MODEL.onnx")
    p.add_argument("paths", nargs="+", metavar="PATH")
    p.add_argument("--top-k", type=positive(int, "integer"), default=3,
                   help="classes shown per image (default 3)")
    p.add_argument("--json", action="store_true", help="one JSON object per line")
    p.add_argument("--batch-size", type=positive(int, "integer"), default=256,
                   help="images per ONNX Runtime call")
    p.add_argument("--evaluate", action="store_true", help="accuracy against folder labels")
    p.add_argument("--split", default="test", choices=("train", "test"),
                   help="with --evaluate, the split counted in train/ + test/ trees (default test)")
    p.add_argument("--tta", action="store_true",
                   help="the model's test-time augmentation (its metadata's tta_views; flip "
                        "TTA for DavidNet, 6 views for airbench94), a pass per view")
    p.add_argument("--plot", metavar="FILE.png",
                   help="with --evaluate, also draw the confusion matrix into FILE.png")
    return p


def main(argv=None):
    return run_cli(predict, argv)


def predict(argv):
    args = parser().parse_args(argv)
    if args.plot and not args.evaluate:
        raise UsageError("--plot draws the confusion matrix of --evaluate; add --evaluate")
    if args.plot:  # checked before any work: only --plot needs matplotlib
        try:
            import matplotlib  # noqa: F401
        except ImportError:
            raise UsageError(f"--plot {args.plot}: needs matplotlib (pip install matplotlib); "
                             "the rest of export.predict runs without it") from None
    if not os.path.isfile(args.model):
        raise UsageError(f"{args.model}: no such ONNX model file")
    try:
        classifier = OnnxClassifier(args.model)
    except Exception as e:
        raise UsageError(f"{args.model}: cannot load ONNX model ({type(e).__name__})") from None
    names = classifier.class_names
    failures = []

    def on_error(name, e):
        failures.append(name)
        print(f"error: {name}: cannot read image ({e})", file=sys.stderr)

    k = min(args.top_k, len(names))
    predicted, labels = [], []
    for batch in batched(decoded(iter_sources(args.paths), on_error), args.batch_size):
        if args.evaluate:
            batch = [(n, img) for n, img in batch if label_of(n, names, args.split) is not None]
            if not batch:
                continue
        _, probs = classifier.run(np.stack([img for _, img in batch]), args.batch_size, args.tta)
        for (name, _), p in zip(batch, probs):
            if args.evaluate:
                predicted.append(int(np.argmax(p)))
                labels.append(label_of(name, names, args.split))
                continue
            top = np.argsort(-p)[:k]
            if args.json:
                print(json.dumps({"path": name, "top_k": [
                    {"class": names[i], "probability": round(float(p[i]), 6)} for i in top]}))
            else:
                print(f"{name}\t" + "  ".join(f"{names[i]} {p[i]:.3f}" for i in top))

    if args.evaluate:
        if not labels:
            raise UsageError(f"no labelled images (<class>/ folders, {args.split}/ split) in "
                             f"{' '.join(args.paths)}")
        report = accuracy_report(predicted, labels, names)
        report["tta"] = args.tta
        if args.json:
            print(json.dumps(report))
        else:
            print(f"accuracy {report['accuracy']:.4f} on {report['images']} images"
                  + (f" ({tta_views.describe(classifier.tta_views)})" if args.tta else ""))
            for cls, r in report["per_class"].items():
                print(f"  {cls:<10} {r['accuracy']:.4f}  ({r['images']} images)")
            print(format_confusion(report["confusion"], names))
        if args.plot:
            from legacy_eager.plots import draw_confusion

            draw_confusion(report["confusion"], names, args.plot,
                           title=f"{os.path.basename(args.model)}: accuracy {report['accuracy']:.4f}"
                                 + (f" ({tta_views.describe(classifier.tta_views)})" if args.tta else ""))
    return EXIT_UNREADABLE if failures else 0


if __name__ == "__main__":
    sys.exit(main())
