"""Which machine ran a run: the CPU's model name and the instruction sets that change how
fast (and in which precision) TensorFlow's CPU kernels run, for config.json, so that a
report can put each run's numbers beside the machine that produced them. Framework-free.

Read from /proc/cpuinfo (Linux); elsewhere, or when it cannot be read, from
platform.processor(). A field that cannot be known is None, never a guess."""
import os
import platform

CPUINFO = "/proc/cpuinfo"
# The flags that change oneDNN's kernels: AVX-512 (and its bfloat16 / VNNI forms) and AMX
# (Sapphire Rapids and later) make mixed_bfloat16 fast on a CPU; without them it is emulated.
FLAGS_THAT_MATTER = ("avx2", "fma", "avx512f", "avx512_vnni", "avx512_bf16", "avx512_fp16",
                     "amx_tile", "amx_bf16", "amx_int8", "amx_fp16")


def _first_processor(text):
    """The `key: value` fields of the first processor block in /proc/cpuinfo's text."""
    fields = {}
    for line in text.splitlines():
        if not line.strip():
            if fields:
                break
            continue
        key, sep, value = line.partition(":")
        if sep:
            fields.setdefault(key.strip(), value.strip())
    return fields


def describe_machine(cpuinfo=CPUINFO):
    """{"cpu_model", "cpu_vendor", "cpu_family", "cpu_model_number", "cpu_flags" (those of
    FLAGS_THAT_MATTER it has), "logical_cpus", "arch"}."""
    try:
        with open(cpuinfo, encoding="utf-8", errors="replace") as f:
            fields = _first_processor(f.read(1 << 20))  # one block is a few kB; never all of it
    except OSError:
        fields = {}
    flags = set((fields.get("flags") or fields.get("Features") or "").split())
    model = (fields.get("model name") or fields.get("Hardware") or fields.get("Processor")
             or fields.get("cpu model") or platform.processor() or None)
    return {"cpu_model": model,
            "cpu_vendor": fields.get("vendor_id") or fields.get("CPU implementer"),
            "cpu_family": fields.get("cpu family"),
            "cpu_model_number": fields.get("model"),
            "cpu_flags": [flag for flag in FLAGS_THAT_MATTER if flag in flags] if fields else None,
            "logical_cpus": os.cpu_count(),
            "arch": platform.machine() or None}
