"""Which layout `--data` is, and reading it: the files of a folder or a .tar/.tar.gz are
walked once (at most MAX_DEPTH deep, each size-checked before it is read) and each is handed
to its layout's reader (python_batches, binary_batches, image_folders); a TFDS folder goes to
tfds. Framework-free but for TFDS."""
import os
import re
import tarfile

import numpy as np

from legacy_eager.data import binary_batches, common, image_folders, python_batches, tfds
from legacy_eager.data.common import (CLASSES, LAYOUTS, MAX_DEPTH, TEST_BATCH, TRAIN_BATCHES,
                                      Cifar10, DataError)


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
        cap = common.MAX_IMAGE_BYTES if kind[0] == "image" else common.MAX_BATCH_BYTES
        if size > cap:
            what = "32x32 image file" if kind[0] == "image" else "CIFAR-10 batch"
            raise DataError(f"{where}: {size} bytes, more than a {what} can hold "
                            f"({cap} bytes at most); not read")
        if kind[0] == "image":
            split, cls = kind[1]
            if cls not in CLASSES:
                raise DataError(f"{os.path.dirname(where)}: class folder '{cls}' is not one of "
                                f"the ten CIFAR-10 classes ({', '.join(CLASSES)})")
            self.images[split].append((CLASSES.index(cls), where,
                                        image_folders.decode_image(read(), where)))
        else:
            fmt, batch = kind
            reader = (python_batches.unpickle_batch if fmt == "python"
                      else binary_batches.read_binary_batch)
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


def walk_folder(root):
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
    for parts, path in walk_folder(root):
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
        folder = tfds.tfds_folder(path)
        return tfds.read_tfds(folder) if folder else _read_folder(path)
    if tarfile.is_tarfile(path):
        return _read_archive(path)
    raise DataError(f"--data {path}: unrecognised layout; expected {LAYOUTS}")
