"""The loader: each accepted layout, the cache, and every bad-input error."""
import os
import pickle

import numpy as np
import pytest

from legacy_eager import data as cifar
from legacy_eager.data import common, layouts, python_batches
from legacy_eager.data import DataError, load_cifar10, read_cifar10
from tests import synthetic


@pytest.fixture(scope="module")
def arrays():
    (x_train, y_train), (x_test, y_test) = synthetic.make_arrays(40, 1), synthetic.make_arrays(20, 2)
    return x_train, y_train, x_test, y_test


def _by_class(x, y):
    """The image-tree loader orders by class, then file name (the fixture's index)."""
    order = np.argsort(y, kind="stable")
    return x[order], y[order]


def _assert_same(loaded, x_train, y_train, x_test, y_test):
    np.testing.assert_array_equal(loaded.x_train, x_train)
    np.testing.assert_array_equal(loaded.y_train, y_train)
    np.testing.assert_array_equal(loaded.x_test, x_test)
    np.testing.assert_array_equal(loaded.y_test, y_test)
    assert loaded.x_train.dtype == np.uint8 and loaded.y_train.dtype == np.int64


@pytest.mark.parametrize("packed", [False, True], ids=["folder", "tar.gz"])
def test_python_version(tmp_path, arrays, packed):
    path = synthetic.write_python_batches(str(tmp_path / "cifar-10-batches-py"), *arrays)
    if packed:
        path = synthetic.tar_folder(path, str(tmp_path / "cifar-10-python.tar.gz"), "cifar-10-batches-py")
    loaded = read_cifar10(path)
    _assert_same(loaded, *arrays)
    assert "python version" in loaded.source


@pytest.mark.parametrize("packed", [False, True], ids=["folder", "tar.gz"])
def test_binary_version(tmp_path, arrays, packed):
    path = synthetic.write_binary_batches(str(tmp_path / "cifar-10-batches-bin"), *arrays)
    if packed:
        path = synthetic.tar_folder(path, str(tmp_path / "cifar-10-binary.tar.gz"), "cifar-10-batches-bin")
    _assert_same(read_cifar10(path), *arrays)


def test_parent_folder_of_python_batches(tmp_path, arrays):
    synthetic.write_python_batches(str(tmp_path / "cifar-10-batches-py"), *arrays)
    _assert_same(read_cifar10(str(tmp_path)), *arrays)


@pytest.mark.parametrize("packing", ["folder", "tar", "tar.gz"])
def test_image_tree(tmp_path, arrays, packing):
    x_train, y_train, x_test, y_test = arrays
    root = synthetic.write_image_tree(str(tmp_path / "tree"), *arrays)
    path = root if packing == "folder" else synthetic.tar_folder(
        root, str(tmp_path / f"cifar.{packing}"), "cifar10")  # with a top folder, as archives often have
    _assert_same(read_cifar10(path), *_by_class(x_train, y_train), *_by_class(x_test, y_test))


def test_image_tree_converts_grayscale_to_rgb(tmp_path, arrays):
    from PIL import Image

    root = synthetic.write_image_tree(str(tmp_path / "tree"), *arrays)
    gray = np.full((32, 32), 77, np.uint8)
    Image.fromarray(gray).save(os.path.join(root, "train", "cat", "gray.png"))
    loaded = read_cifar10(root)
    assert loaded.x_train.shape == (41, 32, 32, 3)
    assert any((img == 77).all() for img in loaded.x_train[loaded.y_train == 3])


def test_crafted_pickle_is_refused_and_never_runs(tmp_path, arrays):
    folder = synthetic.write_python_batches(str(tmp_path / "cifar-10-batches-py"), *arrays)
    marker = tmp_path / "pwned"

    class Exploit:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    with open(os.path.join(folder, "data_batch_3"), "wb") as f:
        pickle.dump({b"data": Exploit(), b"labels": []}, f, protocol=2)
    with pytest.raises(DataError, match=r"data_batch_3: not a CIFAR-10 batch .*refusing to load"):
        read_cifar10(folder)
    assert not marker.exists()


def test_cache_skips_decoding_and_notices_changes(tmp_path, arrays, monkeypatch):
    root = synthetic.write_image_tree(str(tmp_path / "tree"), *arrays)
    cache = str(tmp_path / "cache")
    first = load_cifar10(root, cache)
    assert len(os.listdir(cache)) == 1

    decodes = []
    real_read = layouts.read_cifar10
    monkeypatch.setattr(layouts, "read_cifar10", lambda p: decodes.append(p) or real_read(p))
    again = load_cifar10(root, cache)
    assert decodes == []
    np.testing.assert_array_equal(again.x_train, first.x_train)
    assert again.source == first.source

    os.remove(os.path.join(root, "train", "cat", "0003.png"))  # one cat fewer
    changed = load_cifar10(root, cache)
    assert decodes == [root]
    assert len(changed.x_train) == len(first.x_train) - 1


def test_damaged_cache_entry_is_rebuilt(tmp_path, arrays):
    path = synthetic.write_binary_batches(str(tmp_path / "cifar-10-batches-bin"), *arrays)
    cache = str(tmp_path / "cache")
    load_cifar10(path, cache)
    (entry,) = os.listdir(cache)
    with open(os.path.join(cache, entry), "wb") as f:
        f.write(b"not an npz")
    _assert_same(load_cifar10(path, cache), *arrays)


# ---------------------------------------------------------------- errors, one line each


def _error(path):
    with pytest.raises(DataError) as info:
        load_cifar10(path)
    message = str(info.value)
    assert "\n" not in message
    return message


def test_missing_path(tmp_path):
    assert _error(str(tmp_path / "nope")) == f"--data {tmp_path / 'nope'}: no such file or folder"


def test_unrecognised_layout_lists_the_accepted_ones(tmp_path):
    (tmp_path / "stuff").mkdir()
    (tmp_path / "stuff" / "notes.txt").write_text("hello")
    message = _error(str(tmp_path / "stuff"))
    assert "unrecognised layout" in message
    for layout in ("cifar-10-python.tar.gz", "cifar-10-binary.tar.gz", "train/<class>/"):
        assert layout in message
    (tmp_path / "plain.bin").write_bytes(b"\x00" * 100)
    assert "unrecognised layout" in _error(str(tmp_path / "plain.bin"))


def test_unknown_class_folder(tmp_path, arrays):
    root = synthetic.write_image_tree(str(tmp_path / "tree"), *arrays)
    os.rename(os.path.join(root, "train", "cat"), os.path.join(root, "train", "kitten"))
    message = _error(root)
    assert "'kitten' is not one of the ten CIFAR-10 classes" in message


def test_corrupt_image_is_named(tmp_path, arrays):
    root = synthetic.write_image_tree(str(tmp_path / "tree"), *arrays)
    bad = os.path.join(root, "test", "dog", "0005.png")
    with open(bad, "r+b") as f:
        f.truncate(40)
    assert _error(root).startswith(f"{bad}: unreadable or corrupt image (")


def test_corrupt_image_inside_archive_is_named(tmp_path, arrays):
    root = synthetic.write_image_tree(str(tmp_path / "tree"), *arrays)
    with open(os.path.join(root, "train", "frog", "junk.jpg"), "wb") as f:
        f.write(b"definitely not a jpeg")
    archive = synthetic.tar_folder(root, str(tmp_path / "c.tar.gz"), "c")
    assert _error(archive).startswith(f"{archive}:c/train/frog/junk.jpg: unreadable or corrupt image")


def test_image_of_wrong_size(tmp_path, arrays):
    from PIL import Image

    root = synthetic.write_image_tree(str(tmp_path / "tree"), *arrays)
    Image.new("RGB", (40, 30)).save(os.path.join(root, "train", "ship", "big.png"))
    assert "big.png: image is 40x30, expected 32x32" in _error(root)


def test_truncated_binary_batch(tmp_path, arrays):
    folder = synthetic.write_binary_batches(str(tmp_path / "cifar-10-batches-bin"), *arrays)
    with open(os.path.join(folder, "test_batch.bin"), "ab") as f:
        f.write(b"\x01\x02")
    assert "not a whole number of 3073-byte" in _error(folder)


def test_damaged_archive(tmp_path, arrays):
    path = synthetic.write_python_batches(str(tmp_path / "cifar-10-batches-py"), *arrays)
    archive = synthetic.tar_folder(path, str(tmp_path / "cifar-10-python.tar.gz"), "cifar-10-batches-py")
    blob = open(archive, "rb").read()
    with open(archive, "wb") as f:
        f.write(blob[: len(blob) // 2])
    assert "damaged archive" in _error(archive)


def test_download_failure_points_to_data_flag(monkeypatch):
    import tf_keras  # a pinned requirement: its absence is a failure, not a skip

    def offline():
        raise Exception("URL fetch failure on https://example.invalid: Name or service not known")

    monkeypatch.setattr(tf_keras.datasets.cifar10, "load_data", offline)
    with pytest.raises(DataError) as info:
        cifar.resolve(None)
    message = str(info.value)
    assert "--data" in message and "CIFAR10_DATA" in message and "\n" not in message
    assert ("downloading CIFAR-10 failed (Exception: URL fetch failure on https://example.invalid: "
            "Name or service not known); ") in message  # why, not only the exception's type


def test_env_var_is_used_when_no_flag(tmp_path, arrays, monkeypatch):
    path = synthetic.write_binary_batches(str(tmp_path / "cifar-10-batches-bin"), *arrays)
    monkeypatch.setenv("CIFAR10_DATA", path)
    _assert_same(cifar.resolve(None), *arrays)


def test_random_subset_is_seeded_and_bounded(arrays):
    x, y = arrays[0], arrays[1]
    a = cifar.random_subset(x, y, 10, np.random.default_rng(5), "--train-subset")
    b = cifar.random_subset(x, y, 10, np.random.default_rng(5), "--train-subset")
    np.testing.assert_array_equal(a[0], b[0])
    assert len(a[0]) == 10 and len(np.unique(a[0].reshape(10, -1), axis=0)) == 10
    with pytest.raises(DataError, match=r"--train-subset 41: larger than the 40 images"):
        cifar.random_subset(x, y, 41, np.random.default_rng(0), "--train-subset")


def test_tensorflow_datasets_folder(tmp_path, arrays):
    """tfds's folder, given as the version folder or as its parent."""
    folder = synthetic.write_tfds_folder(str(tmp_path / "tensorflow_datasets"), *arrays)
    loaded = read_cifar10(folder)
    assert loaded.layout == "TensorFlow Datasets"
    _assert_same(loaded, *arrays)
    _assert_same(load_cifar10(os.path.dirname(folder), str(tmp_path / "cache")), *arrays)


def test_tensorflow_datasets_folder_with_other_classes(tmp_path, arrays):
    folder = synthetic.write_tfds_folder(str(tmp_path / "tfds"), *arrays)
    with open(os.path.join(folder, "label.labels.txt"), "w") as f:
        f.write("\n".join(["cat"] * 10))
    assert "label.labels.txt: classes cat" in _error(folder)


@pytest.mark.parametrize("labels", [["cat"] * 8, [0.5] * 8, [None] * 8])
def test_python_batch_labels_must_be_integers(tmp_path, arrays, labels):
    folder = synthetic.write_python_batches(str(tmp_path / "cifar-10-batches-py"), *arrays)
    x = arrays[0][:8]
    with open(os.path.join(folder, "data_batch_2"), "wb") as f:
        pickle.dump({b"data": x.transpose(0, 3, 1, 2).reshape(8, -1), b"labels": labels}, f, protocol=2)
    message = _error(folder)
    assert message.startswith(f"{folder}/data_batch_2: labels must be 8 integers in 0..9, got ")


@pytest.mark.parametrize("packed", [False, True], ids=["folder", "tar"])
def test_oversized_member_is_not_read(tmp_path, arrays, monkeypatch, packed):
    folder = synthetic.write_python_batches(str(tmp_path / "cifar-10-batches-py"), *arrays)
    path = folder if not packed else synthetic.tar_folder(folder, str(tmp_path / "c.tar"),
                                                          "cifar-10-batches-py")
    monkeypatch.setattr(common, "MAX_BATCH_BYTES", 1000)  # the test batches are ~25 KB
    read = []
    monkeypatch.setattr(python_batches, "unpickle_batch", lambda raw, where: read.append(where))
    message = _error(path)
    assert "data_batch_1: " in message and "more than a CIFAR-10 batch can hold (1000 bytes at most); not read" in message
    assert read == []


def test_failed_cache_save_is_cleaned_up_and_said(tmp_path, arrays, monkeypatch, capsys):
    path = synthetic.write_binary_batches(str(tmp_path / "cifar-10-batches-bin"), *arrays)
    cache = tmp_path / "cache"
    real_savez = np.savez

    def disk_full(file, **arrays_):
        real_savez(file, **arrays_)  # the temporary file is there...
        raise OSError(28, "No space left on device")  # ...when the disk fills
    monkeypatch.setattr(np, "savez", disk_full)
    _assert_same(load_cifar10(path, str(cache)), *arrays)  # the data still loads
    assert os.listdir(cache) == []  # no temporary file left behind
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"warning: cannot write the decode cache {cache}") and "No space left" in err
    assert "\n" not in err
