"""Tiny CIFAR-10-shaped datasets written in each layout the loader accepts.

Images are random, with a class-dependent colour so a tiny network can learn them.
"""
import io
import os
import pickle
import tarfile

import numpy as np
from PIL import Image

from legacy_eager.data import CLASSES


def make_arrays(n, seed=0):
    """n uint8 32x32 RGB images and int64 labels; each class tints its images."""
    rng = np.random.default_rng(seed)
    y = np.arange(n, dtype=np.int64) % 10
    tint = rng.integers(0, 256, size=(10, 3))
    x = rng.integers(0, 64, size=(n, 32, 32, 3)) + tint[y][:, None, None, :] * 3 // 4
    return x.astype(np.uint8), y


def _chw_rows(x):
    return x.transpose(0, 3, 1, 2).reshape(len(x), -1)


def _write_batches(folder, x_train, y_train, x_test, y_test, write, suffix):
    """Five training batches and one test batch, as both official versions lay them out."""
    os.makedirs(folder, exist_ok=True)
    for i, idx in enumerate(np.array_split(np.arange(len(x_train)), 5), start=1):
        write(os.path.join(folder, f"data_batch_{i}{suffix}"), x_train[idx], y_train[idx])
    write(os.path.join(folder, f"test_batch{suffix}"), x_test, y_test)
    return folder


def write_python_batches(folder, x_train, y_train, x_test, y_test):
    """cifar-10-batches-py/: pickled dicts with bytes keys, as the official files have."""
    return _write_batches(folder, x_train, y_train, x_test, y_test, _dump, "")


def _dump(path, x, y):
    with open(path, "wb") as f:
        pickle.dump({b"batch_label": b"synthetic", b"data": _chw_rows(x),
                     b"labels": [int(v) for v in y]}, f, protocol=2)


def write_binary_batches(folder, x_train, y_train, x_test, y_test):
    """cifar-10-batches-bin/: records of 1 label byte + 3072 pixel bytes (CHW)."""
    return _write_batches(folder, x_train, y_train, x_test, y_test, _write_bin, ".bin")


def _write_bin(path, x, y):
    rows = np.concatenate([y.astype(np.uint8)[:, None], _chw_rows(x)], axis=1)
    with open(path, "wb") as f:
        f.write(rows.tobytes())


def write_image_tree(root, x_train, y_train, x_test, y_test, fmt="PNG"):
    """train/<class>/NNNN.png and test/<class>/NNNN.png, as in the JPEG copy."""
    for split, x, y in (("train", x_train, y_train), ("test", x_test, y_test)):
        for i, (img, label) in enumerate(zip(x, y)):
            folder = os.path.join(root, split, CLASSES[label])
            os.makedirs(folder, exist_ok=True)
            Image.fromarray(img).save(os.path.join(folder, f"{i:04d}.{fmt.lower()}"), format=fmt)
    return root


def tar_folder(folder, archive, arcname):
    with tarfile.open(archive, "w:gz" if archive.endswith("gz") else "w") as tar:
        tar.add(folder, arcname=arcname)
    return archive


def png_bytes(img):
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="PNG")
    return buf.getvalue()


def write_tfds_folder(root, x_train, y_train, x_test, y_test, version="3.0.2"):
    """tensorflow_datasets/cifar10/<version>/ as `tfds` writes it: TFRecord shards of
    tf.train.Example (PNG `image`, int64 `label`, `id`), dataset_info.json, label names."""
    import json

    import tensorflow as tf

    folder = os.path.join(root, "cifar10", version)
    os.makedirs(folder, exist_ok=True)
    splits = []
    for split, x, y in (("train", x_train, y_train), ("test", x_test, y_test)):
        halves = np.array_split(np.arange(len(x)), 2)
        for i, idx in enumerate(halves):
            path = os.path.join(folder, f"cifar10-{split}.tfrecord-{i:05d}-of-{len(halves):05d}")
            with tf.io.TFRecordWriter(path) as writer:
                for k in idx:
                    feature = {
                        "image": tf.train.Feature(bytes_list=tf.train.BytesList(value=[png_bytes(x[k])])),
                        "label": tf.train.Feature(int64_list=tf.train.Int64List(value=[int(y[k])])),
                        "id": tf.train.Feature(bytes_list=tf.train.BytesList(value=[f"{split}_{k}".encode()])),
                    }
                    writer.write(tf.train.Example(
                        features=tf.train.Features(feature=feature)).SerializeToString())
        splits.append({"name": split, "shardLengths": [str(len(i)) for i in halves]})
    with open(os.path.join(folder, "dataset_info.json"), "w") as f:
        json.dump({"name": "cifar10", "version": version, "splits": splits}, f)
    with open(os.path.join(folder, "label.labels.txt"), "w") as f:
        f.write("\n".join(CLASSES) + "\n")
    return folder
