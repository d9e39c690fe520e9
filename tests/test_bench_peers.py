"""`python -m bench peers`: its arithmetic (medians, paired ratios, fractions of peak,
verdicts), the same-network check, the machine line and the peers' virtualenv bookkeeping,
on made-up measurements. The bench itself (timings, PyTorch, OpenVINO, MLServer) is not
run here."""
import os
import subprocess
import sys

import pytest

from bench import flops
from bench.peers import report, venv

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Width-64 DavidNet's trainable parameters as PyTorch lists them (bench/peers/torch_step.py):
# out, in, kh, kw for a convolution, BatchNorm's weight and bias, the linear layer's out, in.
TORCH_SHAPES = [[64, 3, 3, 3], [64], [64], [128, 64, 3, 3], [128], [128],
                [128, 128, 3, 3], [128], [128], [128, 128, 3, 3], [128], [128],
                [256, 128, 3, 3], [256], [256], [512, 256, 3, 3], [512], [512],
                [512, 512, 3, 3], [512], [512], [512, 512, 3, 3], [512], [512], [10, 512]]


def port_shapes():
    from legacy_eager.model import DavidNet, build

    return [v.shape.as_list() for v in build(DavidNet(c=64)).trainable_variables]


def test_the_port_and_the_pytorch_network_are_checked_to_be_the_same(shapes):
    """The port's real variables, in TensorFlow's layout, match PyTorch's list: 6,573,120
    parameters; one layer of another width, or a layer missing, is caught."""
    same, counts = report.same_network(shapes, TORCH_SHAPES)
    assert same and counts == (6_573_120, 6_573_120)
    wider = TORCH_SHAPES[:-1] + [[10, 1024]]
    assert not report.same_network(shapes, wider)[0]
    # Same count, different shapes: a 3x3 kernel swapped for one with in and out exchanged.
    swapped = [[128, 256, 3, 3] if s == [256, 128, 3, 3] else s for s in TORCH_SHAPES]
    assert not report.same_network(shapes, swapped)[0]
    assert not report.same_network(shapes, TORCH_SHAPES[1:])[0]


def test_paired_ratio_is_the_median_of_each_alternations_ratio():
    # Medians 100 / 100 would say 1.0; the rounds say 2.0, 0.5, 1.25 -> median 1.25.
    assert report.paired_ratio([200, 50, 100], [100, 100, 80]) == pytest.approx(1.25)
    with pytest.raises(ValueError):
        report.paired_ratio([1, 2, 3], [1, 2])


@pytest.fixture(scope="module")
def shapes():
    return port_shapes()


def _train(shapes, port_rates, torch_rates, peaks):
    """Made-up raw train measurements: one dict per alternation, as the children print."""
    port = [{"images_per_s": {"256": a}, "matmul_gflops": peak, "parameter_shapes": shapes}
            for a, peak in zip(port_rates, peaks)]
    theirs = [{"images_per_s": {"256": b}, "parameter_shapes": TORCH_SHAPES} for b in torch_rates]
    return {"port": port, "torch": theirs}


def _raw(shapes, bf16_port=(200.0, 210.0, 220.0), bf16_torch=(200.0, 200.0, 200.0),
         fp32_port=(120.0, 130.0, 140.0), fp32_torch=(100.0, 100.0, 100.0),
         ort_p50=(2.5, 2.5, 2.5), ov_p50=(2.0, 2.0, 2.0)):
    flop = flops.train_flops(64) / 1e9  # 2.27 GFLOP a trained image
    engine = lambda rate, p50: {"batch256_images_per_s": rate, "batch1_p50_ms": p50}  # noqa: E731
    inference = {m: {"onnxruntime": [engine(500.0, p) for p in ort_p50],
                     "openvino": [engine(400.0, p) for p in ov_p50],
                     "max_abs_diff": {"openvino": 2e-8}} for m in ("fp32", "int8")}
    run = lambda rate, p99: {"images_per_s": rate, "p50_ms": 10.0, "p99_ms": p99}  # noqa: E731
    serving = {"server": [{"1": run(150.0, 10.0), "8": run(330.0, 40.0), "32": run(400.0, 140.0)}] * 3,
               "mlserver": [{"1": run(100.0, 20.0), "8": run(250.0, 120.0), "32": run(360.0, 170.0)}] * 3}
    return flop, {
        "machine": {"cpu_model": "AMD EPYC", "cpu_family": "25", "cpus": 2, "flags": ["avx512_bf16"]},
        "versions": {"torch": "2.13.0+cpu"}, "quick": True, "rounds": 3, "threads": 2,
        "train": {"fp32": _train(shapes, fp32_port, fp32_torch, (440.0, 444.0, 450.0)),
                  "bf16": _train(shapes, bf16_port, bf16_torch, (600.0, 620.0, 640.0))},
        "inference": inference, "serving": serving}


def test_train_rows_give_medians_ratios_and_fractions_of_each_precisions_peak(shapes):
    flop, raw = _raw(shapes)
    summary = report.summarize(raw)
    bf16 = summary["train"]["bf16"]["batches"]["256"]
    # median 210 images/s x 2.27 GFLOP = 477 GFLOP/s of the median bf16 peak 620: 77%
    assert bf16["port"] == 210.0 and bf16["port_over_torch"] == pytest.approx(1.05)
    assert bf16["port_fraction_of_peak"] == pytest.approx(210.0 * flop / 620.0)
    assert bf16["torch_fraction_of_peak"] == pytest.approx(200.0 * flop / 620.0)
    fp32 = summary["train"]["fp32"]["batches"]["256"]
    assert fp32["port_fraction_of_peak"] == pytest.approx(130.0 * flop / 444.0)  # fp32's own peak
    rows = report.table(raw, summary).splitlines()
    assert ("  bf16         256        210.0          200.0         1.05x        "
            f"{100 * 210.0 * flop / 620.0:.1f}%           {100 * 200.0 * flop / 620.0:.1f}%") in rows
    assert "  same network: yes (6,573,120 and 6,573,120 parameters; layer shapes the same)" in rows
    assert rows[0].startswith("peers, one run on AMD EPYC (cpu family 25, 2 CPUs, flags: avx512_bf16)")


def test_goals_are_met_at_their_thresholds_and_missed_just_past_them(shapes):
    flop = flops.train_flops(64) / 1e9
    at_peak = 0.75 * 620.0 / flop  # images/s that is exactly 75% of the bf16 peak
    _, raw = _raw(shapes, bf16_port=(at_peak,) * 3, bf16_torch=(at_peak,) * 3,
                  fp32_port=(100.0,) * 3, fp32_torch=(100.0,) * 3,
                  ort_p50=(2.5,) * 3, ov_p50=(2.0,) * 3)
    goals = report.summarize(raw)["goals"]
    assert goals == {"bf16_step_over_torch": True, "bf16_step_fraction_of_peak": True,
                     "fp32_step_over_torch": True, "same_network": True,
                     "batch1_ort_over_openvino": True}
    _, raw = _raw(shapes, bf16_port=(at_peak * 0.999,) * 3, bf16_torch=(at_peak,) * 3,
                  fp32_port=(99.9,) * 3, fp32_torch=(100.0,) * 3,
                  ort_p50=(2.501,) * 3, ov_p50=(2.0,) * 3)
    summary = report.summarize(raw)
    assert not any(v for k, v in summary["goals"].items() if k != "same_network")
    text = report.table(raw, summary)
    assert "bf16 step (dropout 0.05) >= 1.0x PyTorch's bf16 (batch 256 and 512): NOT met" in text
    assert "ONNX Runtime's batch-1 p50 <= 1.25x OpenVINO's (fp32 and INT8): NOT met" in text


def test_inference_and_serving_ratios(shapes):
    _, raw = _raw(shapes, ort_p50=(2.4, 2.6, 9.0), ov_p50=(2.0, 2.0, 2.0))
    summary = report.summarize(raw)
    fp32 = summary["inference"]["fp32"]
    # per alternation 1.2, 1.3, 4.5: median 1.3 (the third, a noisy outlier, does not count)
    assert fp32["ratios"]["openvino"]["batch1_ort_over"] == pytest.approx(1.3)
    assert fp32["ratios"]["openvino"]["batch256_ort_over"] == pytest.approx(1.25)
    assert fp32["engines"]["onnxruntime"]["batch1_p50_ms"] == 2.6
    serving = summary["serving"]
    assert serving["8"]["images_per_s_ratio"] == pytest.approx(330 / 250)
    assert serving["8"]["p99_ratio"] == pytest.approx(40 / 120)
    text = report.table(raw, summary)
    assert "        8   330.0 (10.0 / 40.0)" in text and "1.32x images/s, 0.33x p99" in text
    assert "  fp32  openvino                       400.0            2.00             2.0e-08" in text


def test_a_part_left_out_has_no_rows_and_no_verdicts(shapes):
    _, raw = _raw(shapes)
    del raw["train"], raw["serving"]
    summary = report.summarize(raw)
    assert set(summary) == {"inference", "goals"}
    assert set(summary["goals"]) == {"batch1_ort_over_openvino"}
    text = report.table(raw, summary)
    assert "train step" not in text and "serving" not in text


def test_machine_line_from_proc_cpuinfo():
    cpuinfo = ("processor\t: 0\nvendor_id\t: AuthenticAMD\ncpu family\t: 25\nmodel name\t: AMD EPYC 9R14\n"
               "flags\t\t: fpu sse avx512f avx512_bf16 avx512_vnni\n\nprocessor\t: 1\n"
               "model name\t: something else\n")
    assert report.machine(cpuinfo, 2) == {"cpu_model": "AMD EPYC 9R14", "cpu_family": "25", "cpus": 2,
                                          "flags": ["avx512f", "avx512_bf16", "avx512_vnni"]}


def test_peers_venv_is_remade_when_its_requirements_change(tmp_path):
    requirements = tmp_path / "requirements.txt"
    requirements.write_text("torch==2.13.0+cpu\n")
    folder = tmp_path / "venv"
    (folder / "bin").mkdir(parents=True)
    (folder / "bin" / "python").write_text("")
    assert not venv.is_current(str(folder), str(requirements))  # no stamp: not made by us
    (folder / venv.STAMP).write_text("torch==2.13.0+cpu\n")
    assert venv.is_current(str(folder), str(requirements))
    requirements.write_text("torch==2.13.0+cpu\nopenvino==2026.4.1\n")
    assert not venv.is_current(str(folder), str(requirements))
    assert venv.default_location({venv.ENV_VARIABLE: "/x/peers"}) == "/x/peers"
    assert venv.default_location({}).endswith(os.path.join(".cache", "davidnet-tf", "peers-venv"))


def test_peers_requirements_pin_every_package():
    with open(venv.REQUIREMENTS) as f:
        lines = [line.split("#")[0].strip() for line in f]
    pins = [line for line in lines if line]
    assert pins and all("==" in line for line in pins), [p for p in pins if "==" not in p]
    names = {p.split("==")[0].lower() for p in pins}
    assert {"torch", "openvino", "mlserver", "onnxruntime"} <= names
    assert "tensorflow" not in names


def test_both_sides_train_with_the_same_dropout_and_the_table_names_it(shapes, monkeypatch):
    """--dropout reaches the port's step and PyTorch's alike (0 is Page's recipe); the
    train rows' heading says which step was timed."""
    from bench.peers import run

    calls = []

    def child(python, module, *args, timeout=3600):
        calls.append((module, [str(a) for a in args]))
        return {"images_per_s": {"256": 1.0}}
    monkeypatch.setattr(run, "_child", child)
    run.train_steps("peers-python", 1, run.SETTINGS[True], 2, (256,), False, 0.0, lambda _: None)
    assert sorted(m for m, _ in calls) == ["bench.peers.port_step", "bench.peers.port_step",
                                           "bench.peers.torch_step", "bench.peers.torch_step"]
    for _, args in calls:
        assert args[args.index("--dropout") + 1] == "0.0"
    _, raw = _raw(shapes)
    assert report.table(raw, report.summarize(raw)).splitlines()[2].startswith(
        "train step, width 64, dropout 0.05 (")  # the default recipe's, when not recorded
    raw["dropout"] = 0.0
    text = report.table(raw, report.summarize(raw))
    assert text.splitlines()[2].startswith("train step, width 64, dropout 0 (")
    # the verdicts say which step they judged: Page's (no dropout) is not the default's
    assert "\n  bf16 step (dropout 0) >= 75% of the bf16 matmul peak: met" in text


@pytest.mark.parametrize("argv, flag", [(["--rounds", "0"], "--rounds"), (["--only", "x"], "--only"),
                                        (["--dropout", "1"], "--dropout")])
def test_bad_flags_are_one_line_and_exit_2(argv, flag):
    done = subprocess.run([sys.executable, "-m", "bench", "peers", *argv], cwd=ROOT,
                          env=dict(os.environ, PYTHONPATH=ROOT), capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 2 and flag in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1 and "Traceback" not in done.stderr
