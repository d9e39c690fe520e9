"""Which devices a run will use, said in one line before it starts (and, from TF_CONFIG and
--devices, which distribution strategy spreads it over them), and the one mistake that costs
GPU users hours: a GPU that `nvidia-smi` sees but TensorFlow does not (usually
the CPU-only wheel, CUDA libraries not found, or a driver too old for CUDA 12).

Framework-free: the caller passes TensorFlow's view of its GPUs, so the decision can be
tested with any device list. `DAVIDNET_DEVICE=cpu` (the user chose the CPU) or
`--allow-cpu` let such a run go on on the CPU; otherwise it stops with exit 2.
"""
import json
import os
import shutil
import subprocess
from typing import NamedTuple

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


class ClusterTask(NamedTuple):
    """This process's task in a TF_CONFIG cluster."""
    kind: str      # "worker" or "chief"
    index: int
    chief: bool    # the task of type "chief", or worker 0 when the cluster has none


def cluster_task():
    """The ClusterTask from TF_CONFIG when it names a cluster, else None."""
    raw = os.environ.get("TF_CONFIG")
    if not raw:
        return None
    try:
        tf_config = json.loads(raw)
        cluster = tf_config.get("cluster")
        if not cluster:
            return None
        kind, index = tf_config["task"]["type"], int(tf_config["task"]["index"])
        chief_kind = "chief" if "chief" in cluster else "worker"
        return ClusterTask(kind, index, (kind, index) == (chief_kind, 0))
    except (ValueError, KeyError, TypeError, AttributeError) as e:
        raise UsageError(f"TF_CONFIG: not a cluster description ({type(e).__name__}: {e})") from None


def make_strategy(config, tf, task):
    """MultiWorkerMirroredStrategy when TF_CONFIG names a cluster; MirroredStrategy over
    --devices GPUs (or logical CPU devices); None (TF's default, one device) otherwise.
    Called first thing after TensorFlow is imported: both need the runtime unstarted.
    `task`: the process's ClusterTask or None. `tf` is passed in: this module imports no
    TensorFlow."""
    if task is not None:
        return tf.distribute.MultiWorkerMirroredStrategy()
    n = config.devices
    if n == 1:
        return None
    gpus = tf.config.list_physical_devices("GPU")
    if gpus:
        if len(gpus) < n:
            raise UsageError(f"--devices {n}: this machine has {len(gpus)} GPU(s)")
        return tf.distribute.MirroredStrategy([f"/gpu:{i}" for i in range(n)])
    try:
        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(
            cpu, [tf.config.LogicalDeviceConfiguration() for _ in range(n)])
    except RuntimeError:
        raise UsageError(f"--devices {n}: TensorFlow had already started in this process; "
                         "logical CPU devices must be set before") from None
    return tf.distribute.MirroredStrategy([f"/cpu:{i}" for i in range(n)])
