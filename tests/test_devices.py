"""The GPU path, checked without a GPU: run.sh's choice of TensorFlow with a fake
nvidia-smi, the device line and the stop when TensorFlow cannot see the GPU, and where
the compiled step's variables live."""
import json
import os
import stat
import subprocess
import sys

import pytest

from legacy_eager import devices
from legacy_eager.errors import UsageError
from tests import synthetic
from tests.children import run_child

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TF_VERSION = next(line.split("==")[1].strip() for line in open(os.path.join(ROOT, "requirements.txt"))
                  if line.startswith("tensorflow=="))
SMI = {
    "one GPU": 'echo "GPU 0: NVIDIA H100 80GB HBM3 (UUID: GPU-5f1c)"',
    "none": 'echo "No devices were found"; exit 6',
    "failing": 'echo "NVIDIA-SMI has failed because it could not communicate with the NVIDIA driver." >&2; exit 9',
}


def _fake_smi(folder, kind):
    folder.mkdir(exist_ok=True)
    path = folder / "nvidia-smi"
    path.write_text(f"#!/bin/sh\n{SMI[kind]}\n")
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return str(folder)


def _env(fake_dir, **extra):
    env = {k: v for k, v in os.environ.items() if k not in ("DAVIDNET_DEVICE", "DAVIDNET_PRINT_INSTALL")}
    env["PATH"] = f"{fake_dir}:{env['PATH']}"
    env.update(extra)
    return env


def _print_install(env):
    done = subprocess.run([os.path.join(ROOT, "run.sh"), "--print-install"], env=env,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    (line,) = done.stdout.splitlines()
    return line


@pytest.mark.parametrize("kind,device,expected", [
    ("one GPU", None, "gpu"), ("none", None, "cpu"), ("failing", None, "cpu"),
    ("one GPU", "cpu", "cpu"), ("none", "gpu", "gpu"),
])
def test_run_sh_installs_the_cuda_set_only_for_a_gpu(tmp_path, kind, device, expected):
    env = _env(_fake_smi(tmp_path / "bin", kind), **({"DAVIDNET_DEVICE": device} if device else {}))
    line = _print_install(env)
    assert " -m pip install " in line and "requirements.txt" in line
    if expected == "gpu":
        assert line.endswith(f" tensorflow[and-cuda]=={TF_VERSION}")
    else:
        assert line.endswith(f" tensorflow=={TF_VERSION}") and "and-cuda" not in line


def test_run_sh_refuses_an_unknown_device_choice(tmp_path):
    done = subprocess.run([os.path.join(ROOT, "run.sh"), "--print-install"],
                          env=_env(str(tmp_path), DAVIDNET_DEVICE="tpu"),
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert done.stderr.strip() == "run.sh: DAVIDNET_DEVICE=tpu: expected gpu, cpu or auto"


def test_device_description():
    assert devices.describe([], cpu_count=2) == "CPU (2 cores)"
    assert devices.describe([(0, "NVIDIA H100"), (1, "NVIDIA H100")]) == \
        "GPU:0 (NVIDIA H100), GPU:1 (NVIDIA H100)"


def test_gpu_that_tensorflow_cannot_see_stops_the_run_unless_allowed():
    smi = ["GPU 0: NVIDIA H100 80GB HBM3 (UUID: GPU-5f1c)"]
    with pytest.raises(UsageError) as e:
        devices.check_gpu_seen([], smi, allow_cpu=False, environ={})
    message = str(e.value)
    assert message.startswith("nvidia-smi lists 1 GPU(s) (GPU 0: NVIDIA H100") and "\n" not in message
    assert "CUDA 12" in message and "--allow-cpu" in message
    assert devices.check_gpu_seen([], smi, allow_cpu=True, environ={}).startswith("warning: ")
    assert devices.check_gpu_seen([], smi, False, environ={"DAVIDNET_DEVICE": "cpu"}).startswith("warning: ")
    assert devices.check_gpu_seen([(0, "NVIDIA H100")], smi, False, environ={}) is None
    assert devices.check_gpu_seen([], [], False, environ={}) is None


def test_nvidia_smi_listing(tmp_path, monkeypatch):
    for kind, expected in (("one GPU", 1), ("none", 0), ("failing", 0)):
        monkeypatch.setenv("PATH", _fake_smi(tmp_path / kind.replace(" ", "_"), kind))
        assert len(devices.nvidia_smi_gpus()) == expected


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    root = tmp_path_factory.mktemp("data") / "cifar"
    (xt, yt), (xs, ys) = synthetic.make_arrays(32, 1), synthetic.make_arrays(16, 2)
    return synthetic.write_image_tree(str(root), xt, yt, xs, ys)


def _train(tree, out, env, *flags):
    return subprocess.run([sys.executable, "-m", "legacy_eager.train", "--data", tree, "--width", "4",
                           "--batch-size", "16", "--epochs", "1", "--out", str(out), *flags],
                          cwd=ROOT, env=dict(env, PYTHONPATH=ROOT), capture_output=True, text=True,
                          timeout=300)


@pytest.mark.slow
def test_training_names_its_devices_and_stops_on_an_unseen_gpu(tree, tmp_path):
    """On this machine TensorFlow has no GPU: with a fake nvidia-smi listing one, the run
    stops before writing anything; with --allow-cpu it trains and says it uses the CPU."""
    env = _env(_fake_smi(tmp_path / "bin", "one GPU"))
    stopped = _train(tree, tmp_path / "stopped", env)
    assert stopped.returncode == 2
    last = stopped.stderr.strip().splitlines()[-1]
    assert last.startswith("error: nvidia-smi lists 1 GPU(s) (GPU 0: NVIDIA H100") and "but TensorFlow sees none" in last
    assert not (tmp_path / "stopped").exists()
    allowed = _train(tree, tmp_path / "allowed", env, "--allow-cpu")
    assert allowed.returncode == 0, allowed.stderr[-2000:]
    assert "warning: nvidia-smi lists 1 GPU(s)" in allowed.stderr
    assert allowed.stdout.splitlines()[0] == f"devices: CPU ({os.cpu_count()} cores)"
    config = json.load(open(tmp_path / "allowed" / "config.json"))
    assert config["devices"]["used"] == f"CPU ({os.cpu_count()} cores)" and config["devices"]["gpus"] == []


@pytest.fixture(scope="module")
def placements():
    """tests/placement_run for both compiled modes, in one child process: {mode: result}."""
    results, _ = run_child("tests.placement_run", "function", "xla")
    return {r.pop("mode"): r for r in results}


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["function", "xla"])
def test_compiled_step_reads_no_variable_on_another_device(placements, mode):
    """Built under /CPU:1 of two logical devices (standing in for a GPU beside the host):
    the global step, weights and slots all live there, the traced step captures no
    variable elsewhere, and XLA, which refuses such a variable, runs the step. TF's own
    eager get_or_create_global_step pins the step to CPU:0, which fails exactly here."""
    r = placements[mode]
    assert r["global_step"].endswith("CPU:1") and r["steps"] == 1
    assert r["model"] == r["slots"] == r["captured"] == [r["global_step"]]


def test_run_sh_installs_nothing_when_every_pinned_version_is_there():
    """This environment has every pin of requirements.txt (extras such as tritonclient[http]
    included): ./run.sh goes straight to its command, without pip."""
    import sys

    env = {k: v for k, v in os.environ.items() if k != "DAVIDNET_PRINT_INSTALL"}
    env.update(VIRTUAL_ENV=sys.prefix, DAVIDNET_DEVICE="cpu")
    done = subprocess.run([os.path.join(ROOT, "run.sh"), "--help"], env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and "installing" not in done.stderr, done.stderr[-2000:]
