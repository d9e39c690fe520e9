"""legacy_eager.machine: the CPU a run was trained on, read from /proc/cpuinfo, and what is
said when it cannot be read."""
import json
import platform

from legacy_eager import machine

XEON = """processor\t: 0
vendor_id\t: GenuineIntel
cpu family\t: 6
model\t\t: 143
model name\t: Intel(R) Xeon(R) Platinum 8481C CPU @ 2.70GHz
flags\t\t: fpu sse2 avx avx2 fma avx512f avx512_vnni avx512_bf16 amx_bf16 amx_tile amx_int8

processor\t: 1
vendor_id\t: GenuineIntel
model name\t: a second block, never read
flags\t\t: fpu
"""


def test_the_first_processor_block_gives_the_model_and_the_flags_that_matter(tmp_path):
    path = tmp_path / "cpuinfo"
    path.write_text(XEON)
    got = machine.describe_machine(str(path))
    assert got["cpu_model"] == "Intel(R) Xeon(R) Platinum 8481C CPU @ 2.70GHz"
    assert (got["cpu_vendor"], got["cpu_family"], got["cpu_model_number"]) == ("GenuineIntel", "6", "143")
    # in FLAGS_THAT_MATTER's order; fpu, sse2 and avx are not among them
    assert got["cpu_flags"] == ["avx2", "fma", "avx512f", "avx512_vnni", "avx512_bf16",
                                "amx_tile", "amx_bf16", "amx_int8"]
    json.dumps(got)  # goes into config.json as it is


def test_an_unreadable_cpuinfo_falls_back_to_platform_processor(tmp_path, monkeypatch):
    monkeypatch.setattr(platform, "processor", lambda: "arm")
    got = machine.describe_machine(str(tmp_path / "missing"))
    assert got["cpu_model"] == "arm" and got["cpu_flags"] is None and got["cpu_family"] is None
    monkeypatch.setattr(platform, "processor", lambda: "")
    assert machine.describe_machine(str(tmp_path / "missing"))["cpu_model"] is None


def test_undecodable_bytes_do_not_stop_a_run(tmp_path):
    path = tmp_path / "cpuinfo"
    path.write_bytes(b"model name\t: Odd \xff\xfe CPU\nflags\t: avx2\n")
    got = machine.describe_machine(str(path))
    assert got["cpu_model"].startswith("Odd ") and got["cpu_flags"] == ["avx2"]

