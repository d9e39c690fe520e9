"""The benchmark's own arithmetic and reporting (timings live in `python -m bench`; the INT8
gate is tested in test_export.py)."""
import os
import subprocess
import sys

import numpy as np
import pytest

from bench import flops
from bench import __main__ as bench_main

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.parametrize("width", [8, 64])
def test_flop_count_equals_the_built_networks_layers(width):
    """bench/flops.py's count against the Keras DavidNet itself: its forward pass traced,
    each Conv2D's multiply-adds from its output map and kernel (H * W * kh * kw * Cin * Cout),
    the linear layer's from its kernel, the kernels being the model's own."""
    import tensorflow as tf

    from legacy_eager.model import DavidNet, build

    model = build(DavidNet(c=width))
    graph = tf.function(model.logits).get_concrete_function(tf.TensorSpec([1, 32, 32, 3])).graph
    macs, kernels = 0, []
    for op in graph.get_operations():
        if op.type in ("Conv2D", "MatMul"):
            out, kernel = op.outputs[0].shape.as_list(), op.inputs[1].shape.as_list()
            macs += (np.prod(out[1:3]) if op.type == "Conv2D" else 1) * np.prod(kernel)
            kernels.append(kernel)
    layers = [m.kernel.shape.as_list() for m in model.submodules
              if type(m).__name__ in ("Conv2D", "Dense")]
    assert sorted(kernels) == sorted(layers) and len(layers) == 9
    assert flops.conv_macs(width) == macs
    assert flops.forward_flops(width) == 2 * macs
    if width == 64:  # Page's network: about 0.76 GFLOP forward per image
        assert 2 * macs / 1e9 == pytest.approx(0.758, abs=0.002)


def test_time_runner_measures_throughput_and_median_latency(monkeypatch):
    """On a clock that only the runner moves (1 ms an image plus 2 ms a call, the 3rd
    single-image call 10 ms slower): 256 / 0.258 s at batch 256, and the median ignores
    the outlier."""
    import numpy as np

    now, calls = [0.0], []

    def run(batch):
        calls.append(len(batch))
        now[0] += 0.001 * len(batch) + 0.002 + (0.010 if calls.count(1) == 4 else 0.0)
    from bench import timing

    monkeypatch.setattr(timing.time, "perf_counter", lambda: now[0])
    result = timing.time_runner(run, np.zeros((256, 32, 32, 3), np.uint8), reps_big=3, reps_one=5)
    assert calls == [256, 1] + [256] * 3 + [1] * 5  # one warm-up of each, not timed
    assert result["batch256_images_per_s"] == pytest.approx(256 / 0.258)
    assert result["batch1_p50_ms"] == pytest.approx(3.0)


def test_table_reports_the_derived_rates_and_ratios():
    """The table from raw measurements: GFLOP/s and the share of the matmul peak from
    images/s, and which runtime is how many times faster (batch 1 by latency, batch 256 by
    throughput), each worked out by hand below."""
    flop_per_image = 2.28e9
    steps = {"eager": 20.0, "function": 80.0, "xla": 60.0}  # images/s
    inference = {"tf_savedmodel": {"batch256_images_per_s": 200.0, "batch1_p50_ms": 6.0, "threads": 2},
                 "onnxruntime_fp32": {"batch256_images_per_s": 300.0, "batch1_p50_ms": 4.0, "threads": 2},
                 "onnxruntime_int8": {"batch256_images_per_s": 750.0, "batch1_p50_ms": 2.0, "threads": 2}}
    inference["ratios"] = bench_main.inference_ratios(inference)
    results = {
        "pipeline": {"seed": 15000.0, "fast": 240000.0, "fast_over_seed": 16.0},
        "train_step": {"width": 64, "batch_size": 512, "threads": 2, "matmul_gflops": 240.0,
                       "train_gflop_per_image": flop_per_image / 1e9,
                       **{m: bench_main.step_rates(r, flop_per_image, 240.0) for m, r in steps.items()}},
        "inference": inference,
        "peak_rss": {"width": 16, "steps": 3, "seed_peak_mb": 4000.0, "fast_peak_mb": 1400.0},
    }
    rows = bench_main.table(results).splitlines()
    # function: 80 x 2.28 = 182.4 GFLOP/s, 182.4 / 240 = 76.0%; eager 45.6 (19.0%); xla 136.8 (57.0%)
    assert "  function    80.0 images/s   182.4 GFLOP/s   76.0% of matmul" in rows
    assert "  eager       20.0 images/s    45.6 GFLOP/s   19.0% of matmul" in rows
    assert "  xla         60.0 images/s   136.8 GFLOP/s   57.0% of matmul" in rows
    # 6 ms / 4 ms: ONNX Runtime 1.5x faster at batch 1; 300 / 200 and 750 / 300 at batch 256
    assert ("  ORT fp32 vs TF: 1.50x at batch 1, 1.50x at batch 256; INT8 vs fp32 at batch 256: "
            "2.50x") in rows
    assert rows[0].startswith("input pipeline") and "fast/seed 16.0x" in rows[1]
    assert rows[-1] == "peak RSS, training on 50,000 images (width 16, 3 steps): seed 4,000 MB, fast 1,400 MB"


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


def test_step_variants_compare_each_round_with_its_own_reference():
    """Ratios are the median over rounds of a variant's images/s over the reference's in the
    same round; a round where either failed (None) is left out."""
    from bench import step_variants

    rates = {"default": [100.0, 50.0, 80.0, 90.0], "bf16": [150.0, 100.0, None, 108.0],
             "broken": [None, None, None, None]}
    rel = step_variants.relative(rates, "default")
    # per round 1.5, 2.0, (failed), 1.2: median 1.5; the medians alone would say 108/85 = 1.27
    assert rel == {"default": 1.0, "bf16": pytest.approx(1.5), "broken": None}


def test_profile_kinds_from_trace_event_names():
    """Op events ("scope:OpType") are sorted into kinds; the executor's and Python's events
    are not ops; the table gives ms per traced step and each kind's share."""
    from bench import profile_step as p

    events = [
        ("gradient_tape/david_net/res_blk/conv_bn_1/conv2d_1/Conv2D/Conv2DBackpropFilter:"
         "_MklNativeConv2DBackpropFilter", 60.0),
        ("gradient_tape/david_net/res_blk/conv_bn_1/conv2d_1/Conv2D/Conv2DBackpropInput:"
         "_MklNativeConv2DBackpropInput", 40.0),
        ("david_net/res_blk/conv_bn_1/conv2d_1/Conv2D:_MklNativeConv2D", 20.0),
        ("david_net/res_blk/conv_bn_1/stateless_dropout_1/stateless_random_uniform/"
         "StatelessRandomUniformV2:StatelessRandomUniformV2", 10.0),
        ("david_net/res_blk/conv_bn_1/stateless_dropout_1/SelectV2:SelectV2", 4.0),
        ("gradient_tape/david_net/res_blk_2/conv_bn_7/conv2d_7/Conv2D/Cast/Cast:Cast", 2.0),
        ("gradient_tape/david_net/conv_bn/batch_normalization/FusedBatchNormGradV3:"
         "_MklNativeFusedBatchNormGradV3", 3.0),
        ("Momentum/update__18/ResourceApplyMomentum:ResourceApplyMomentum", 1.0),
        ("sparse_softmax_cross_entropy_with_logits/Sum:Sum", 0.5),
        ("ExecutorState::Process", 500.0), ("EagerLocalExecute: __inference_step_1786", 500.0),
        ("ParallelFor", 100.0), ("step", 500.0),
    ]
    kinds = p.summarize(events, steps=2)
    assert kinds == {"conv backward, filter gradient": 30.0, "conv backward, input gradient": 20.0,
                     "conv forward": 10.0, "dropout (random mask, select, scale)": 7.0,
                     "BatchNorm backward": 1.5, "casts": 1.0, "optimizer and weight decay": 0.5,
                     p.OTHER: 0.25}
    assert list(kinds)[0] == "conv backward, filter gradient"  # largest first
    rows = p.table({"precision": "mixed_bfloat16", "batch_size": 256, "steps": 2,
                    "wall_ms_per_step": 50.0, "images_per_s": 5120.0,
                    "op_ms_per_step": sum(kinds.values()), "kinds": kinds}).splitlines()
    # 30 of 70.25 ms of op time
    assert "  conv backward, filter gradient                 30.0     42.7%" in rows
