import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import pytest  # noqa: E402

from tests import synthetic  # noqa: E402


@pytest.fixture(scope="session")
def tiny_arrays():
    """48 training and 20 test images of random pixels: ((x_train, y_train), (x_test, y_test))."""
    return synthetic.make_arrays(48, 1), synthetic.make_arrays(20, 2)


@pytest.fixture(scope="session")
def tree(tmp_path_factory, tiny_arrays):
    """tiny_arrays as a CIFAR-10 image tree that many tests train on; read only, so one
    serves the whole session."""
    (xt, yt), (xs, ys) = tiny_arrays
    return synthetic.write_image_tree(str(tmp_path_factory.mktemp("data") / "cifar"), xt, yt, xs, ys)


@pytest.fixture(autouse=True)
def _isolated_data_env(tmp_path, monkeypatch):
    """Each test gets its own decode cache, and no CIFAR10_DATA from the caller's shell."""
    monkeypatch.setenv("CIFAR10_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("CIFAR10_DATA", raising=False)
