"""The two timers every benchmark shares, the project's and the peers' alike: a runner's
throughput and single-image latency, and this machine's matmul peak. Imports TensorFlow
only in matmul_gflops, so the peers' virtualenv can time its runners with it too."""
import time

import numpy as np


def time_runner(run, images, reps_big, reps_one, warmups=1):
    """images/s at the full batch, p50 ms at batch 1, each after `warmups` untimed calls."""
    one = images[:1]
    for _ in range(warmups):
        run(images)
        run(one)
    t = time.perf_counter()
    for _ in range(reps_big):
        run(images)
    throughput = len(images) * reps_big / (time.perf_counter() - t)
    latencies = []
    for _ in range(reps_one):
        t = time.perf_counter()
        run(one)
        latencies.append((time.perf_counter() - t) * 1000)
    return {"batch256_images_per_s": throughput, "batch1_p50_ms": float(np.median(latencies))}


def matmul_gflops(n=4096, reps=4, dtype=None, warmups=1):
    """GFLOP/s of an n x n matmul in TensorFlow, in `dtype` (default float32)."""
    import tensorflow as tf

    a, b = tf.random.normal([n, n]), tf.random.normal([n, n])
    if dtype is not None:
        a, b = tf.cast(a, dtype), tf.cast(b, dtype)
    for _ in range(warmups):
        tf.matmul(a, b).numpy()
    t = time.perf_counter()
    for _ in range(reps):
        c = tf.matmul(a, b)
    c.numpy()
    return 2 * n ** 3 * reps / (time.perf_counter() - t) / 1e9
