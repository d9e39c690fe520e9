"""The benchmark's own arithmetic and reporting (timings live in `python -m bench`; the INT8
gate is tested in test_export.py)."""
import os
import subprocess
import sys

import pytest

from bench import flops
from bench.__main__ import table

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_flop_count_matches_the_published_figure():
    # Width 64: about 0.76 GFLOP forward per image (Page's network), 3x that to train.
    assert flops.forward_flops(64) / 1e9 == pytest.approx(0.758, abs=0.002)
    assert flops.train_flops(64) == 3 * flops.forward_flops(64)
    # Convolution cost grows with the square of the width (the 3-channel stem linearly).
    assert flops.conv_macs(32) < flops.conv_macs(64) / 3.9


def test_table_reports_every_section():
    mode = {"images_per_s": 80.0, "gflops": 182.0, "fraction_of_matmul": 0.9}
    runner = {"batch256_images_per_s": 300.0, "batch1_p50_ms": 4.0, "threads": 2}
    results = {
        "pipeline": {"seed": 15000.0, "fast": 240000.0, "fast_over_seed": 16.0},
        "train_step": {"width": 64, "batch_size": 512, "threads": 2, "matmul_gflops": 200.0,
                       "train_gflop_per_image": 2.28, "eager": mode, "function": mode, "xla": mode},
        "inference": {"tf_savedmodel": runner, "onnxruntime_fp32": runner, "onnxruntime_int8": runner,
                      "ratios": {"ort_fp32_over_tf_batch1": 1.5, "ort_fp32_over_tf_batch256": 1.0,
                                 "int8_over_fp32_batch256": 3.0}},
        "peak_rss": {"width": 16, "steps": 3, "seed_peak_mb": 4000.0, "fast_peak_mb": 1400.0},
    }
    text = table(results)
    for fragment in ("fast/seed 16.0x", "function", "90.0% of matmul", "onnxruntime_int8",
                     "INT8 vs fp32 at batch 256: 3.00x", "seed 4,000 MB, fast 1,400 MB"):
        assert fragment in text


def test_peak_rss_child_reports_its_own_peak():
    done = subprocess.run([sys.executable, "-c", "from bench.rss_child import peak_rss_mb; "
                           "b = bytearray(300 * 2**20); print(peak_rss_mb())"],
                          cwd=ROOT, env=dict(os.environ, PYTHONPATH=ROOT),
                          capture_output=True, text=True, timeout=60)
    assert 300 < float(done.stdout) < 600


def test_serve_goals_are_judged_at_their_thresholds():
    """bench serve's verdicts: each goal met exactly at its threshold and missed just past
    it (ratios to export.predict's batch 256, p99s, RSS, failed requests in the swap), and
    the table says which."""
    from bench import serve

    def judged(single_32, p99_at_8, rss, failed, grpc_32, grpc_p99_at_8):
        def run(clients, rate, p99):
            return {"clients": clients, "requests": 400, "images_per_request": 1,
                    "images_per_s": rate, "p50_ms": 5.0, "p99_ms": p99}
        return serve.judge({
            "width": 64, "predict_batch256_images_per_s": {"fp32": 300.0, "int8": 900.0},
            "clients": {"single_8": run(8, 150.0, p99_at_8), "single_32": run(32, single_32, 250.0)},
            "grpc": {"single_8": run(8, 200.0, grpc_p99_at_8), "single_32": run(32, grpc_32, 150.0)},
            "swap": {"clients": 8, "requests": 500, "failed": failed, "max_ms": 100.0,
                     "p99_ms": 80.0, "swap_s": 0.7},
            "server_peak_rss_mb": rss})
    at = judged(single_32=240.0, p99_at_8=99.9, rss=599.0, failed=0, grpc_32=255.0, grpc_p99_at_8=49.9)
    assert at["single_32_over_batch256"] == 0.8 and all(at["goals"].values()), at["goals"]
    past = judged(single_32=239.9, p99_at_8=100.0, rss=600.0, failed=1, grpc_32=254.9,
                  grpc_p99_at_8=50.0)
    assert not any(past["goals"].values()), past["goals"]
    met, missed = serve.table(at), serve.table(past)
    assert "80% (goal 80%: met)" in met and "85% (goal 85%: met)" in met
    assert "1 failed (goal 0: not met)" in missed and "(goal < 600: not met)" in missed
