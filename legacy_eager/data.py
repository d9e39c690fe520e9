"""CIFAR-10 from the sources users have, decoded once to uint8 arrays and cached.

Accepted `--data` layouts (a folder, or a .tar/.tar.gz holding one):
- the official python version: cifar-10-python.tar.gz or cifar-10-batches-py/
  (read with an unpickler that admits only what a CIFAR batch holds);
- the official binary version: cifar-10-binary.tar.gz or cifar-10-batches-bin/;
- an image-folder tree: train/<class>/* and test/<class>/*, class folders named as
  in CLASSES (label = position in CLASSES), 32x32 images in any format Pillow reads;
- a TensorFlow Datasets folder, ~/tensorflow_datasets/cifar10/<version>/ (or its parent):
  the TFRecord shards and dataset_info.json that `tfds` writes, read without the
  tensorflow-datasets package.

Framework-free (numpy and Pillow) except for the TFDS layout, whose records TensorFlow
reads: it runs before TensorFlow is imported, so a bad path fails in well under a second.
"""
import hashlib
import io
import os
import pickle
import re
import sys
import tarfile
from dataclasses import dataclass

import numpy as np

from legacy_eager.atomic import staged_path
from legacy_eager.errors import UsageError

CLASSES = ("airplane", "automobile", "bird", "cat", "deer",
           "dog", "frog", "horse", "ship", "truck")
IMAGE_SHAPE = (32, 32, 3)
TRAIN_BATCHES = tuple(f"data_batch_{i}" for i in range(1, 6))
TEST_BATCH = "test_batch"
LAYOUTS = ("cifar-10-python.tar.gz or cifar-10-batches-py/, "
           "cifar-10-binary.tar.gz or cifar-10-batches-bin/, "
           "a folder/.tar/.tar.gz with train/<class>/ and test/<class>/ image folders, "
           "or a TensorFlow Datasets folder (tensorflow_datasets/cifar10/<version>/)")
CACHE_VERSION = 2
# Nothing larger is read into memory: an official batch is 30.7 MB (10000 images), a
# 32x32 image file a few KB.
MAX_BATCH_BYTES = 64 * 2 ** 20
MAX_IMAGE_BYTES = 2 ** 20
# How deep below --data a layout's files may sit (e.g. root/cifar10/train/cat/1.jpg).
MAX_DEPTH = 4


@dataclass
class Cifar10:
    x_train: np.ndarray  # uint8 [N, 32, 32, 3], RGB
    y_train: np.ndarray  # int64 [N], index into CLASSES
    x_test: np.ndarray
    y_test: np.ndarray
    layout: str   # which of the accepted layouts it was read from
    path: str = ""

    @property
    def source(self):
        return f"{self.path} ({self.layout})" if self.path else self.layout


class DataError(UsageError):
    pass


# ---------------------------------------------------------------- safe unpickling

_ALLOWED_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("_codecs", "encode"),  # how a Python 3 protocol-2 pickle spells bytes
}


class _BatchUnpickler(pickle.Unpickler):
    """Admits only numpy arrays (plus dicts, lists, bytes and numbers, which need no
    global). Anything else, e.g. a crafted os.system call, is refused before it runs."""

    def find_class(self, module, name):
        if (module, name) in _ALLOWED_GLOBALS:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to load {module}.{name}")


def _unpickle_batch(raw, where):
    try:
        batch = _BatchUnpickler(io.BytesIO(raw), encoding="bytes").load()
    except pickle.UnpicklingError as e:
        raise DataError(f"{where}: not a CIFAR-10 batch ({e}); a CIFAR batch holds only "
                        "numpy arrays and lists") from None
    except Exception as e:  # truncated or garbage bytes
        raise DataError(f"{where}: cannot read CIFAR-10 batch ({type(e).__name__}: {e})") from None
    if not isinstance(batch, dict):
        raise DataError(f"{where}: not a CIFAR-10 batch (expected a dict)")
    batch = {(k.decode() if isinstance(k, bytes) else k): v for k, v in batch.items()}
    data, labels = batch.get("data"), batch.get("labels")
    if not isinstance(data, np.ndarray) or labels is None:
        raise DataError(f"{where}: not a CIFAR-10 batch (no 'data' array or 'labels')")
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072:
        raise DataError(f"{where}: 'data' is {data.dtype}{list(data.shape)}, expected uint8 [N, 3072]")
    try:
        labels = np.asarray(labels)
    except (ValueError, TypeError):
        labels = np.asarray([], dtype=object)
    if labels.dtype.kind not in "iu":  # float, string, bool or ragged labels are no CIFAR batch
        raise DataError(f"{where}: labels must be {len(data)} integers in 0..9, "
                        f"got {labels.dtype} values")
    return _chw_rows_to_images(data), _check_labels(labels.astype(np.int64), len(data), where)


def _read_binary_batch(raw, where):
    if len(raw) == 0 or len(raw) % 3073:
        raise DataError(f"{where}: {len(raw)} bytes is not a whole number of 3073-byte "
                        "CIFAR-10 binary records")
    rows = np.frombuffer(raw, dtype=np.uint8).reshape(-1, 3073)
    labels = rows[:, 0].astype(np.int64)
    return _chw_rows_to_images(rows[:, 1:]), _check_labels(labels, len(rows), where)


def _chw_rows_to_images(rows):
    return np.ascontiguousarray(rows.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1))


def _check_labels(labels, n, where):
    if labels.shape != (n,) or labels.min(initial=0) < 0 or labels.max(initial=0) > 9:
        raise DataError(f"{where}: labels must be {n} integers in 0..9")
    return labels


def _decode_image(raw, where):
    from PIL import Image  # Pillow: only needed for image-folder trees

    try:
        with Image.open(io.BytesIO(raw)) as img:
            img.load()
            size = img.size
            rgb = np.asarray(img.convert("RGB"), dtype=np.uint8)
    except Exception as e:
        raise DataError(f"{where}: unreadable or corrupt image ({type(e).__name__})") from None
    if size != (32, 32):
        raise DataError(f"{where}: image is {size[0]}x{size[1]}, expected 32x32 (CIFAR-10)")
    return rgb


# ---------------------------------------------------------------- layout detection


def _classify(parts):
    """What a file at relative path `parts` is: ('python'|'binary', batch name),
    ('image', (split, class)) or None (not part of any layout)."""
    name = parts[-1]
    if name.startswith("."):
        return None
    if name in TRAIN_BATCHES or name == TEST_BATCH:
        return "python", name
    m = re.fullmatch(r"(data_batch_[1-5]|test_batch)\.bin", name)
    if m:
        return "binary", m.group(1)
    if len(parts) >= 3 and parts[-3] in ("train", "test"):
        return "image", (parts[-3], parts[-2])
    return None


class _Collector:
    """Gathers the files of every layout seen while walking a folder or archive."""

    def __init__(self, root):
        self.root = root
        self.in_archive = os.path.isfile(root)
        self.batches = {"python": {}, "binary": {}}
        self.images = {"train": [], "test": []}

    def add(self, parts, read, size):
        kind = _classify(parts)
        if kind is None:
            return
        where = (f"{self.root}:{'/'.join(parts)}" if self.in_archive
                 else os.path.join(self.root, *parts))
        cap = MAX_IMAGE_BYTES if kind[0] == "image" else MAX_BATCH_BYTES
        if size > cap:
            what = "32x32 image file" if kind[0] == "image" else "CIFAR-10 batch"
            raise DataError(f"{where}: {size} bytes, more than a {what} can hold "
                            f"({cap} bytes at most); not read")
        if kind[0] == "image":
            split, cls = kind[1]
            if cls not in CLASSES:
                raise DataError(f"{os.path.dirname(where)}: class folder '{cls}' is not one of "
                                f"the ten CIFAR-10 classes ({', '.join(CLASSES)})")
            self.images[split].append((CLASSES.index(cls), where, _decode_image(read(), where)))
        else:
            fmt, batch = kind
            reader = _unpickle_batch if fmt == "python" else _read_binary_batch
            self.batches[fmt][batch] = reader(read(), where)

    def result(self):
        for fmt in ("python", "binary"):
            found = self.batches[fmt]
            if all(b in found for b in TRAIN_BATCHES + (TEST_BATCH,)):
                x_tr, y_tr = zip(*(found[b] for b in TRAIN_BATCHES))
                x_te, y_te = found[TEST_BATCH]
                return Cifar10(np.concatenate(x_tr), np.concatenate(y_tr), x_te, y_te,
                               layout=f"CIFAR-10 {fmt} version", path=self.root)
        if self.images["train"] or self.images["test"]:
            for split in ("train", "test"):
                if not self.images[split]:
                    raise DataError(f"--data {self.root}: found image folders but no "
                                    f"{split}/<class>/ images")
            x_tr, y_tr = self._stack("train")
            x_te, y_te = self._stack("test")
            return Cifar10(x_tr, y_tr, x_te, y_te, layout="image folders", path=self.root)
        raise DataError(f"--data {self.root}: unrecognised layout; expected {LAYOUTS}")

    def _stack(self, split):
        items = sorted(self.images[split], key=lambda t: (t[0], t[1]))
        x = np.stack([img for _, _, img in items])
        y = np.array([label for label, _, _ in items], dtype=np.int64)
        return x, y


def _walk_folder(root):
    """Yield (relative path parts, absolute path) of files at most MAX_DEPTH deep."""
    root = os.path.abspath(root)
    for dirpath, dirnames, filenames in os.walk(root):
        rel = os.path.relpath(dirpath, root)
        parts = () if rel == "." else tuple(rel.split(os.sep))
        if len(parts) >= MAX_DEPTH - 1:
            dirnames[:] = []
        dirnames.sort()
        for name in sorted(filenames):
            yield parts + (name,), os.path.join(dirpath, name)


def _read_folder(root):
    collector = _Collector(root)
    for parts, path in _walk_folder(root):
        def read(path=path):
            with open(path, "rb") as f:
                return f.read()
        collector.add(parts, read, os.path.getsize(path))
    return collector.result()


def _read_archive(path):
    collector = _Collector(path)
    try:
        with tarfile.open(path, "r:*") as tar:
            for member in tar:  # streams: one pass over a .tar.gz
                if not member.isfile():
                    continue
                parts = tuple(p for p in member.name.split("/") if p not in ("", "."))
                if not parts or len(parts) > MAX_DEPTH:
                    continue
                collector.add(parts, lambda m=member: tar.extractfile(m).read(), member.size)
    except (tarfile.TarError, EOFError, OSError, ValueError) as e:
        raise DataError(f"--data {path}: damaged archive ({type(e).__name__}: {e})") from None
    return collector.result()


def read_cifar10(path):
    """Decode CIFAR-10 from `path` (any accepted layout). No caching."""
    if not os.path.exists(path):
        raise DataError(f"--data {path}: no such file or folder")
    if os.path.isdir(path):
        tfds = _tfds_folder(path)
        return _read_tfds(tfds) if tfds else _read_folder(path)
    if tarfile.is_tarfile(path):
        return _read_archive(path)
    raise DataError(f"--data {path}: unrecognised layout; expected {LAYOUTS}")


# ---------------------------------------------------------------- TensorFlow Datasets


def _tfds_folder(path):
    """The folder holding dataset_info.json and TFRecord shards: `path` itself, or its
    newest version subfolder (tensorflow_datasets/cifar10/ holds 3.0.2/ and the like)."""
    def is_tfds(folder):
        return (os.path.isfile(os.path.join(folder, "dataset_info.json"))
                and any(".tfrecord" in name for name in os.listdir(folder)))

    if is_tfds(path):
        return path
    versions = [os.path.join(path, d) for d in os.listdir(path)
                if re.fullmatch(r"\d+(\.\d+)*", d) and os.path.isdir(os.path.join(path, d))]
    versions = [v for v in versions if is_tfds(v)]
    key = lambda v: tuple(int(p) for p in os.path.basename(v).split("."))  # noqa: E731
    return max(versions, key=key) if versions else None


def _read_tfds(folder):
    """Both splits of a tfds cifar10 folder: tf.train.Example records with a PNG `image`
    and an int64 `label` (class order as in CLASSES; label.labels.txt is checked)."""
    import json

    info_path = os.path.join(folder, "dataset_info.json")
    try:
        with open(info_path, encoding="utf-8") as f:
            info = json.load(f)
    except ValueError as e:
        raise DataError(f"{info_path}: not JSON ({e})") from None
    if info.get("name") not in (None, "cifar10"):
        raise DataError(f"--data {folder}: a TensorFlow Datasets folder of {info.get('name')!r}, "
                        "expected cifar10")
    labels_txt = os.path.join(folder, "label.labels.txt")
    if os.path.isfile(labels_txt):
        with open(labels_txt, encoding="utf-8") as f:
            names = tuple(line.strip() for line in f if line.strip())
        if names != CLASSES:
            raise DataError(f"{labels_txt}: classes {', '.join(names)}; expected {', '.join(CLASSES)}")
    splits = []
    for split in ("train", "test"):
        shards = sorted(os.path.join(folder, n) for n in os.listdir(folder)
                        if re.search(rf"-{split}\.tfrecord-\d+-of-\d+$", n))
        if not shards:
            raise DataError(f"--data {folder}: a TensorFlow Datasets folder without "
                            f"{split} shards (*-{split}.tfrecord-*)")
        splits.append(_read_tfrecords(shards))
    (x_tr, y_tr), (x_te, y_te) = splits
    return Cifar10(x_tr, y_tr, x_te, y_te, layout="TensorFlow Datasets", path=folder)


def _read_tfrecords(shards):
    import tensorflow as tf

    spec = {"image": tf.io.FixedLenFeature([], tf.string),
            "label": tf.io.FixedLenFeature([], tf.int64)}

    def decode(record):
        example = tf.io.parse_single_example(record, spec)
        image = tf.ensure_shape(tf.io.decode_png(example["image"], channels=3), IMAGE_SHAPE)
        return image, example["label"]

    images, labels = [], []
    for shard in shards:
        try:
            for x, y in tf.data.TFRecordDataset(shard).map(decode).batch(4096):
                images.append(x.numpy())
                labels.append(y.numpy())
        except (tf.errors.OpError, ValueError) as e:
            first = (getattr(e, "message", None) or str(e)).strip().splitlines()[0][:200]
            raise DataError(f"{shard}: not CIFAR-10 TFRecords of 32x32 PNG images "
                            f"({type(e).__name__}: {first})") from None
    x = np.concatenate(images) if images else np.zeros((0,) + IMAGE_SHAPE, np.uint8)
    y = np.concatenate(labels).astype(np.int64) if labels else np.zeros(0, np.int64)
    return x.astype(np.uint8), _check_labels(y, len(y), shards[0])


# ---------------------------------------------------------------- cache


def default_cache_dir():
    if os.environ.get("CIFAR10_CACHE"):
        return os.environ["CIFAR10_CACHE"]
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "davidnet-tf")


def _fingerprint(path):
    """Changes whenever any file the layout could use changes (path, size, mtime)."""
    h = hashlib.sha256(f"v{CACHE_VERSION}|{os.path.abspath(path)}".encode())
    if os.path.isdir(path):
        entries = ((parts, os.stat(p)) for parts, p in _walk_folder(path))
    else:
        entries = [((), os.stat(path))]
    for parts, st in entries:
        h.update(f"|{'/'.join(parts)}:{st.st_size}:{st.st_mtime_ns}".encode())
    return h.hexdigest()[:20]


def load_cifar10(path, cache_dir=None):
    """Decode `path`, or reuse the arrays decoded from the same unchanged files before."""
    if not os.path.exists(path):
        raise DataError(f"--data {path}: no such file or folder")
    cache_dir = cache_dir or default_cache_dir()
    cache_file = os.path.join(cache_dir, f"cifar10-{_fingerprint(path)}.npz")
    if os.path.exists(cache_file):
        try:
            with np.load(cache_file, allow_pickle=False) as z:
                return Cifar10(z["x_train"], z["y_train"], z["x_test"], z["y_test"],
                               layout=str(z["layout"]), path=path)
        except Exception:
            pass  # a damaged cache entry is rebuilt below
    data = read_cifar10(path)
    try:
        os.makedirs(cache_dir, exist_ok=True)
        with staged_path(cache_file, is_dir=False) as staged:
            np.savez(staged, x_train=data.x_train, y_train=data.y_train, x_test=data.x_test,
                     y_test=data.y_test, layout=np.array(data.layout))
    except OSError as e:  # an unwritable cache only costs the next run the decode time
        print(f"warning: cannot write the decode cache {cache_file} ({e.strerror or e}); "
              "the next run decodes the images again (set CIFAR10_CACHE to another folder)",
              file=sys.stderr)
    return data


def download_cifar10():
    """The seed's source: tf.keras.datasets (needs the internet)."""
    try:
        import tf_keras

        (x_train, y_train), (x_test, y_test) = tf_keras.datasets.cifar10.load_data()
    except Exception as e:
        raise DataError("no --data given, CIFAR10_DATA is not set, and downloading CIFAR-10 "
                        f"failed ({type(e).__name__}); pass --data PATH or set CIFAR10_DATA "
                        f"to one of: {LAYOUTS}") from None
    return Cifar10(x_train, y_train.astype("int64").reshape(-1), x_test,
                   y_test.astype("int64").reshape(-1), layout="tf.keras.datasets.cifar10")


def data_source(data_flag):
    """Where a run's data is: --data, else $CIFAR10_DATA, else None (the seed's download).
    The one place that reads CIFAR10_DATA."""
    return data_flag or os.environ.get("CIFAR10_DATA") or None


def data_path(data_flag):
    """data_source as an absolute path (None: the download), so that export can re-read
    the same test images from any working folder."""
    path = data_source(data_flag)
    return os.path.abspath(path) if path else None


def resolve(data_flag, cache_dir=None):
    """--data, else $CIFAR10_DATA, else the seed's download."""
    path = data_source(data_flag)
    if path:
        return load_cifar10(path, cache_dir)
    return download_cifar10()


def load_data(config):
    """Decoded CIFAR-10 cut to the run's subsets, drawn with its --seed:
    (source, (x_train, y_train), (x_test, y_test))."""
    dataset = resolve(config.data)
    rng = np.random.default_rng(config.seed)
    x_train, y_train = random_subset(dataset.x_train, dataset.y_train,
                                     config.train_subset, rng, "--train-subset")
    x_test, y_test = random_subset(dataset.x_test, dataset.y_test,
                                   config.test_subset, rng, "--test-subset")
    return dataset.source, (x_train, y_train), (x_test, y_test)


def random_subset(x, y, n, rng, flag):
    """`n` examples drawn without replacement (order kept), or all of them if n is None."""
    if n is None:
        return x, y
    if n > len(x):
        raise DataError(f"{flag} {n}: larger than the {len(x)} images available")
    idx = np.sort(rng.choice(len(x), size=n, replace=False))
    return x[idx], y[idx]
