"""Benchmarks of the training and serving paths, measured in one run on this machine.

    python -m bench [--quick]
    python -m bench serve [--quick]
    python -m bench peers [--quick]   (against PyTorch, OpenVINO and MLServer: bench/peers/run.py)

1. input pipeline: images/s over a full 50,000-image epoch (synthetic uint8 data of the
   real shape), the seed's tf.data chain (rebuilt each epoch, as the seed does) vs fast;
2. train step at width 64: images/s for eager, function and xla (the first step, which
   traces and compiles, is not timed), this machine's float32 matmul GFLOP/s, and each
   mode's achieved GFLOP/s as a fraction of it (FLOPs counted from layer shapes:
   bench/flops.py);
3. inference of a width-64 export: batch 256 (images/s) and batch 1 (median ms) for the
   TF SavedModel, ONNX Runtime fp32 and ONNX Runtime INT8;
4. peak RSS of a training process holding all 50,000 images, for both pipelines;
5. with --quick, a short pass of the HTTP server under load (the full one: python -m bench
   serve, bench/serve.py).
--quick (about 3 minutes) times batch-128 train steps and fewer repetitions.
Every figure is from this run; ratios compare figures from this run only.
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

import numpy as np

from bench import flops
from bench.exports import make_export, synthetic
from bench.timing import matmul_gflops, time_runner
from legacy_eager.cli import Parser
from legacy_eager.errors import UsageError, run_cli

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def bench_pipelines(epochs):
    from legacy_eager import input_pipeline

    x, y = synthetic(50000)
    mean, std = input_pipeline.channel_stats(x)
    padded = input_pipeline.normalize(input_pipeline.pad4(x), mean, std)  # the seed does this once

    def seed_epoch():  # the seed rebuilds its chain every epoch
        import tensorflow as tf
        ds = (tf.data.Dataset.from_tensor_slices((padded, y)).map(input_pipeline.data_aug)
              .shuffle(len(x)).batch(512).prefetch(1))
        return sum(int(b.shape[0]) for b, _ in ds)

    fast = input_pipeline.fast_train_set(x, y, mean, std, 512)

    def fast_epoch():
        return sum(int(b.shape[0]) for b, _ in fast)

    result = {}
    for name, epoch in (("seed", seed_epoch), ("fast", fast_epoch)):
        epoch()  # warm-up: traces, compiles, fills caches
        t = time.perf_counter()
        n = sum(epoch() for _ in range(epochs))
        result[name] = n / (time.perf_counter() - t)
    result["fast_over_seed"] = result["fast"] / result["seed"]
    return result


def bench_train_steps(batch_size, steps, width=64):
    import tensorflow as tf

    from legacy_eager.config import Config
    from legacy_eager.trainer import Trainer

    x = tf.random.normal([batch_size, 32, 32, 3])
    y = tf.constant(np.arange(batch_size) % 10, tf.int64)
    peak = matmul_gflops()
    per_image = flops.train_flops(width)
    result = {"width": width, "batch_size": batch_size, "timed_steps": steps,
              "matmul_gflops": peak, "train_gflop_per_image": per_image / 1e9,
              "threads": tf.config.threading.get_intra_op_parallelism_threads() or os.cpu_count()}
    for mode in ("eager", "function", "xla"):
        trainer = Trainer(Config(width=width, batch_size=batch_size, mode=mode), 50000)
        trainer.train_step(x, y)[0].numpy()  # trace / compile, not timed
        t = time.perf_counter()
        for _ in range(steps):
            loss, _ = trainer.train_step(x, y)
        loss.numpy()
        result[mode] = step_rates(batch_size * steps / (time.perf_counter() - t), per_image, peak)
    return result


def step_rates(images_per_s, flop_per_image, matmul_gflops):
    """A train step's images/s as GFLOP/s and as a fraction of the measured matmul peak."""
    gflops = images_per_s * flop_per_image / 1e9
    return {"images_per_s": images_per_s, "gflops": gflops, "fraction_of_matmul": gflops / matmul_gflops}


def bench_inference(reps_big, reps_one):
    import tensorflow as tf

    from export.predict import OnnxClassifier

    big, _ = synthetic(256, seed=2)
    with tempfile.TemporaryDirectory() as folder:
        saved_model, fp32, int8 = make_export(folder)
        loaded = tf.saved_model.load(saved_model)
        serve = loaded.signatures["serving_default"]
        threads = tf.config.threading.get_intra_op_parallelism_threads() or os.cpu_count()
        result = {"tf_savedmodel": dict(time_runner(
            lambda b: serve(images=tf.constant(b))["logits"].numpy(), big, reps_big, reps_one),
            threads=threads)}
        for name, path in (("onnxruntime_fp32", fp32), ("onnxruntime_int8", int8)):
            clf = OnnxClassifier(path)
            result[name] = dict(time_runner(lambda b: clf.run(b, 256), big, reps_big, reps_one),
                                threads=clf.session.get_session_options().intra_op_num_threads
                                or os.cpu_count())
    result["ratios"] = inference_ratios(result)
    return result


def inference_ratios(result):
    """How many times faster: ONNX Runtime fp32 than TensorFlow (batch 1 by latency, batch
    256 by throughput), and INT8 than fp32 at batch 256."""
    fp32_r, tf_r, int8_r = result["onnxruntime_fp32"], result["tf_savedmodel"], result["onnxruntime_int8"]
    return {
        "ort_fp32_over_tf_batch1": tf_r["batch1_p50_ms"] / fp32_r["batch1_p50_ms"],
        "ort_fp32_over_tf_batch256": fp32_r["batch256_images_per_s"] / tf_r["batch256_images_per_s"],
        "int8_over_fp32_batch256": int8_r["batch256_images_per_s"] / fp32_r["batch256_images_per_s"],
    }


def bench_rss(steps, width=16):
    result = {"width": width, "steps": steps}
    for name in ("seed", "fast"):
        done = subprocess.run([sys.executable, "-m", "bench.rss_child", name, str(width), str(steps)],
                              cwd=ROOT, capture_output=True, text=True,
                              env=dict(os.environ, PYTHONPATH=ROOT))
        if done.returncode != 0:
            raise RuntimeError(f"bench.rss_child {name} failed: {done.stderr.strip()[-500:]}")
        result[f"{name}_peak_mb"] = float(done.stdout.strip().splitlines()[-1])
    return result


def table(results):
    p, s, i, r = results["pipeline"], results["train_step"], results["inference"], results["peak_rss"]
    rows = [
        "input pipeline (images/s, 50,000-image epoch)",
        f"  seed {p['seed']:>10,.0f}   fast {p['fast']:>10,.0f}   fast/seed {p['fast_over_seed']:.1f}x",
        f"train step, width {s['width']}, batch {s['batch_size']} ({s['threads']} threads; "
        f"matmul peak {s['matmul_gflops']:.1f} GFLOP/s; {s['train_gflop_per_image']:.2f} GFLOP/image)",
    ]
    for mode in ("eager", "function", "xla"):
        m = s[mode]
        rows.append(f"  {mode:<8} {m['images_per_s']:>7.1f} images/s  {m['gflops']:>6.1f} GFLOP/s  "
                    f"{100 * m['fraction_of_matmul']:>5.1f}% of matmul")
    rows.append("inference, width 64       batch 256 (images/s)   batch 1 (p50 ms)   threads")
    for name in ("tf_savedmodel", "onnxruntime_fp32", "onnxruntime_int8"):
        m = i[name]
        rows.append(f"  {name:<22} {m['batch256_images_per_s']:>12.1f}   {m['batch1_p50_ms']:>14.2f}"
                    f"   {m['threads']:>7}")
    q = i["ratios"]
    rows.append(f"  ORT fp32 vs TF: {q['ort_fp32_over_tf_batch1']:.2f}x at batch 1, "
                f"{q['ort_fp32_over_tf_batch256']:.2f}x at batch 256; INT8 vs fp32 at batch 256: "
                f"{q['int8_over_fp32_batch256']:.2f}x")
    rows.append(f"peak RSS, training on 50,000 images (width {r['width']}, {r['steps']} steps): "
                f"seed {r['seed_peak_mb']:,.0f} MB, fast {r['fast_peak_mb']:,.0f} MB")
    return "\n".join(rows)


def parser():
    """`python -m bench [--quick]`, and its subcommands `serve` (bench/serve.py's flags) and
    `peers` (bench/peers/run.py's)."""
    from bench import serve
    from bench.peers import run as peers

    p = Parser(prog="python -m bench", description=__doc__,
               formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="smaller and fewer repetitions (< 3 min)")
    commands = p.add_subparsers(dest="command", metavar="[serve|peers]")
    served = serve.parser()
    commands.add_parser("serve", parents=[served], add_help=False,
                        description=served.description, formatter_class=served.formatter_class,
                        help="the HTTP and gRPC server under load, a version swap (bench/serve.py)")
    against = peers.parser()
    commands.add_parser("peers", parents=[against], add_help=False,
                        description=against.description, formatter_class=against.formatter_class,
                        help="this project against PyTorch, OpenVINO and MLServer, alternated "
                             "(bench/peers/run.py)")
    return p


def main(argv=None):
    return run_cli(bench, sys.argv[1:] if argv is None else argv)


def bench(argv):
    args = parser().parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # for TensorFlow here and in children
    if args.command in ("serve", "peers"):
        if argv[0] != args.command:  # argparse would let the subcommand's own default hide it
            raise UsageError(f"{argv[0]}: give {args.command}'s flags after it: python -m bench "
                             f"{args.command} [--quick]")
        if args.command == "peers":
            from bench.peers import run as peers

            return peers.main(argv[1:])
        from bench import serve

        return serve.run(args.quick)
    return bench_all(args.quick)


def bench_all(quick):
    import platform

    import tensorflow as tf

    start = time.perf_counter()
    results = {
        "machine": {"cpus": os.cpu_count(), "processor": platform.processor() or platform.machine(),
                    "tensorflow": tf.__version__, "gpus": len(tf.config.list_physical_devices("GPU"))},
        "quick": quick,
        "pipeline": bench_pipelines(epochs=1 if quick else 2),
        "train_step": bench_train_steps(batch_size=128 if quick else 512,
                                        steps=2 if quick else 3),
        "inference": bench_inference(reps_big=3 if quick else 10,
                                     reps_one=20 if quick else 100),
        "peak_rss": bench_rss(steps=3 if quick else 10),
    }
    from bench import serve

    results["serve"] = serve.bench_serve(quick=True) if quick else None
    results["seconds"] = time.perf_counter() - start
    print(table(results))
    if results["serve"]:
        print(serve.table(results["serve"]))
    print(json.dumps(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
