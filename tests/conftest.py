import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# The suite runs TensorFlow in two workers and in child processes at once: on a GPU each
# takes memory as it needs it instead of all of it at start.
os.environ.setdefault("TF_FORCE_GPU_ALLOW_GROWTH", "true")

import pytest  # noqa: E402
from hypothesis import HealthCheck, settings  # noqa: E402

from tests import slow_rule, synthetic  # noqa: E402


# Generated requests (hypothesis; tests/test_serve_generated.py): max_examples per edge of a
# protocol's grammar (ten times that for valid requests). The suite: 3, the same ones on
# every CI run (derandomized, no example database). A long local run: --hypothesis-profile
# long, 200 (over 5,000 requests per protocol). No deadline: a request to a server on a
# loaded machine takes what it takes.
_generated = dict(deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("dev", max_examples=3, **_generated)
settings.register_profile("ci", max_examples=3, derandomize=True, database=None, **_generated)
settings.register_profile("long", max_examples=200, **_generated)
settings.load_profile("ci" if os.environ.get("CI") == "true" else "dev")


def pytest_configure(config):
    # The slow marker's rule, checked on every test: a plugin of its own, so that its hooks
    # also see session-scoped fixtures set up (tests/slow_rule.py).
    slow_rule.watch_training()
    config.pluginmanager.register(slow_rule, "davidnet-slow-rule")


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


# The shared run's training flags; a repro run of seed 0 with these flags on `tree` is that run.
TRAINED_FLAGS = ("--width", "4", "--batch-size", "16", "--epochs", "2")


@pytest.fixture(scope="session")
def exported_run(tree, tmp_path_factory):
    """One tiny run on `tree`, trained and exported by ./run.sh's own job (train, SavedModel,
    ONNX with its parity check, ONNX accuracy), shared by the export, predict, serve and
    repro tests: (run folder, the lines the job logged). Read only: a test that changes a
    run folder takes `run_copy`."""
    from export import train_and_export

    out = str(tmp_path_factory.mktemp("runs") / "tiny")
    lines = []
    with pytest.MonkeyPatch.context() as mp:  # its decode cache in the session's temp folder
        mp.setenv("CIFAR10_CACHE", str(tmp_path_factory.mktemp("cache")))
        mp.delenv("CIFAR10_DATA", raising=False)
        code = train_and_export.main(["--data", tree, *TRAINED_FLAGS, "--seed", "0", "--out", out],
                                     log=lines.append)
    assert code == 0, lines[-3:]
    return out, lines


@pytest.fixture
def run_copy(exported_run, tmp_path):
    """A copy of the shared run that this test may change."""
    import shutil

    return shutil.copytree(exported_run[0], str(tmp_path / "tiny"))


@pytest.fixture(autouse=True)
def _isolated_data_env(tmp_path, monkeypatch):
    """Each test gets its own decode cache, and no CIFAR10_DATA from the caller's shell."""
    monkeypatch.setenv("CIFAR10_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("CIFAR10_DATA", raising=False)
