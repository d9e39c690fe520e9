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


def test_serve_table_reports_every_goal():
    from bench import serve

    run = lambda c, n, rate, p99: {"clients": c, "requests": 100, "images_per_request": n,  # noqa: E731
                                   "images_per_s": rate, "p50_ms": 5.0, "p99_ms": p99}
    result = {"width": 64, "predict_batch256_images_per_s": {"fp32": 300.0, "int8": 900.0},
              "clients": {"single_8": run(8, 1, 150.0, 80.0), "single_32": run(32, 1, 195.0, 250.0)},
              "server_peak_rss_mb": 385.0, "single_32_over_batch256": 0.65,
              "swap": {"clients": 8, "requests": 900, "failed": 0, "max_ms": 120.5, "p99_ms": 60.0,
                       "swap_s": 1.4},
              "grpc": {"single_8": run(8, 1, 180.0, 40.0), "single_32": run(32, 1, 260.0, 150.0)},
              "grpc_single_32_over_batch256": 0.8667,
              "goals": {"single_32_over_batch256": False, "p99_ms_at_8": True, "server_rss_mb": True,
                        "swap_failed": True, "grpc_single_32_over_batch256": True,
                        "grpc_p99_ms_at_8": True}}
    text = serve.table(result)
    for fragment in ("fp32 300.0, INT8 900.0 images/s", "65% (goal 80%: not met)",
                     "p99 at 8 clients 80.0 ms (goal < 100: met)",
                     "with two versions 385 MB (goal < 600: met)",
                     "900 requests, 0 failed (goal 0: met), longest 120.5 ms",
                     "gRPC: 32 single-image clients / batch 256: 87% (goal 85%: met)"):
        assert fragment in text
