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

Modules: common (classes, the dataset, limits), python_batches, binary_batches,
image_folders, tfds (one reader per layout), layouts (which layout a path is), cache (the
decode cache); this one says where the data is and cuts a run's subsets.
"""
import os

import numpy as np

from legacy_eager.data.cache import default_cache_dir, load_cifar10
from legacy_eager.data.common import CLASSES, IMAGE_SHAPE, LAYOUTS, Cifar10, DataError
from legacy_eager.data.layouts import read_cifar10
from legacy_eager.errors import cause

__all__ = ["CLASSES", "IMAGE_SHAPE", "Cifar10", "DataError", "default_cache_dir", "load_cifar10",
           "read_cifar10", "download_cifar10", "data_source", "data_path", "resolve", "load_data",
           "random_subset"]


def download_cifar10():
    """The seed's source: tf.keras.datasets (needs the internet)."""
    try:
        import tf_keras

        (x_train, y_train), (x_test, y_test) = tf_keras.datasets.cifar10.load_data()
    except Exception as e:
        raise DataError("no --data given, CIFAR10_DATA is not set, and downloading CIFAR-10 "
                        f"failed ({cause(e)}); pass --data PATH or set CIFAR10_DATA "
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
