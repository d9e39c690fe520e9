import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import pytest  # noqa: E402


@pytest.fixture(autouse=True)
def _isolated_data_env(tmp_path, monkeypatch):
    """Each test gets its own decode cache, and no CIFAR10_DATA from the caller's shell."""
    monkeypatch.setenv("CIFAR10_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("CIFAR10_DATA", raising=False)
