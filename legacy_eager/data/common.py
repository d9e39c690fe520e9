"""What every CIFAR-10 reader shares: the classes, the decoded dataset, the one error, the
size limits, and the conversion of the official batches' channel-first rows. Framework-free."""
from dataclasses import dataclass

import numpy as np

from legacy_eager.errors import UsageError

CLASSES = ("airplane", "automobile", "bird", "cat", "deer",
           "dog", "frog", "horse", "ship", "truck")
IMAGE_SHAPE = (32, 32, 3)
TRAIN_BATCHES = tuple(f"data_batch_{i}" for i in range(1, 6))
TEST_BATCH = "test_batch"
LAYOUTS = ("the python version (cifar-10-python.tar.gz or cifar-10-batches-py/), "
           "the binary version (cifar-10-binary.tar.gz or cifar-10-batches-bin/), "
           "image folders (train/<class>/ and test/<class>/ in a folder, .tar or .tar.gz) "
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


def chw_rows_to_images(rows):
    return np.ascontiguousarray(rows.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1))


def check_labels(labels, n, where):
    if labels.shape != (n,) or labels.min(initial=0) < 0 or labels.max(initial=0) > 9:
        raise DataError(f"{where}: labels must be {n} integers in 0..9")
    return labels
