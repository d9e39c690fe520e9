"""TensorFlow Datasets folders (tensorflow_datasets/cifar10/<version>/): the TFRecord shards
and dataset_info.json that `tfds` writes, read without the tensorflow-datasets package.
The one reader that needs TensorFlow (imported when a TFDS folder is read)."""
import os
import re

import numpy as np

from legacy_eager.data.common import CLASSES, IMAGE_SHAPE, Cifar10, DataError, check_labels


def tfds_folder(path):
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


def read_tfds(folder):
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
        splits.append(read_tfrecords(shards))
    (x_tr, y_tr), (x_te, y_te) = splits
    return Cifar10(x_tr, y_tr, x_te, y_te, layout="TensorFlow Datasets", path=folder)


def read_tfrecords(shards):
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
    return x.astype(np.uint8), check_labels(y, len(y), shards[0])
