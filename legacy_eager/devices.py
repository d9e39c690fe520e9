"""Which devices a run will use, said in one line before it starts, and the one mistake
that costs GPU users hours: a GPU that `nvidia-smi` sees but TensorFlow does not (usually
the CPU-only wheel, CUDA libraries not found, or a driver too old for CUDA 12).

Framework-free: the caller passes TensorFlow's view of its GPUs, so the decision can be
tested with any device list. `DAVIDNET_DEVICE=cpu` (the user chose the CPU) or
`--allow-cpu` let such a run go on on the CPU; otherwise it stops with exit 2.
"""
import os
import shutil
import subprocess

from legacy_eager.errors import UsageError

DEVICE_ENV = "DAVIDNET_DEVICE"


def nvidia_smi_gpus(timeout=20):
    """The GPUs `nvidia-smi -L` lists ("GPU 0: NVIDIA H100 ..."); [] when it is missing,
    fails or lists none (a broken driver reads as no GPU: nothing to warn about here)."""
    exe = shutil.which("nvidia-smi")
    if exe is None:
        return []
    try:
        done = subprocess.run([exe, "-L"], capture_output=True, text=True, timeout=timeout)
    except (OSError, subprocess.SubprocessError):
        return []
    if done.returncode != 0:
        return []
    return [line.strip() for line in done.stdout.splitlines() if line.startswith("GPU ")]


def describe(tf_gpus, cpu_count=None):
    """`GPU:0 (NVIDIA H100), GPU:1 (...)` from [(index, name)], else `CPU (N cores)`."""
    if tf_gpus:
        return ", ".join(f"GPU:{i} ({name})" for i, name in tf_gpus)
    cores = cpu_count or os.cpu_count() or 1
    return f"CPU ({cores} core{'s' if cores != 1 else ''})"


def check_gpu_seen(tf_gpus, smi_gpus, allow_cpu, environ=None):
    """None when TensorFlow uses what the machine has; a warning line when it does not but
    the CPU is allowed; UsageError (exit 2) otherwise."""
    environ = os.environ if environ is None else environ
    if tf_gpus or not smi_gpus:
        return None
    problem = (f"nvidia-smi lists {len(smi_gpus)} GPU(s) ({smi_gpus[0]}) but TensorFlow sees "
               "none: usually tensorflow without [and-cuda] (./run.sh installs it when "
               "nvidia-smi lists a GPU), CUDA 12 libraries not found, or a driver too old for "
               "CUDA 12")
    if allow_cpu or environ.get(DEVICE_ENV, "").lower() == "cpu":
        return f"warning: {problem}; training on the CPU as asked"
    raise UsageError(f"{problem}; training would run on the CPU (hours instead of minutes); "
                     f"pass --allow-cpu (or set {DEVICE_ENV}=cpu) to do so anyway")


def tensorflow_gpus(tf):
    """[(index, device name)] of the GPUs TensorFlow can use."""
    gpus = []
    for i, gpu in enumerate(tf.config.list_physical_devices("GPU")):
        try:
            name = tf.config.experimental.get_device_details(gpu).get("device_name", "GPU")
        except Exception:  # details are best effort; the device is what matters
            name = "GPU"
        gpus.append((i, name))
    return gpus
