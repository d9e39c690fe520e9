"""Concurrent clients for the serving benchmarks, framework-free (the gRPC ones run it in a
process of their own, the REST ones in the bench's): C threads split N requests, each opens
its connection before a common start line, and the clock runs from that line to the last
answer."""
import threading
import time

import numpy as np


def run_clients(clients, requests, session, images_per_request=1):
    """`session()` is a context manager yielding `call()`, which sends one request and
    returns an error (or None); each thread enters one session before the clock starts.
    Returns images/s, latency percentiles (ms) and the distinct errors."""
    latencies, errors = [], []
    per_client = [requests // clients + (i < requests % clients) for i in range(clients)]
    start_line = threading.Barrier(clients + 1)

    def client(n):
        with session() as call:
            start_line.wait()
            for _ in range(n):
                t = time.perf_counter()
                error = call()
                latencies.append((time.perf_counter() - t) * 1000)
                if error is not None:
                    errors.append(error)
    threads = [threading.Thread(target=client, args=(n,)) for n in per_client]
    for t in threads:
        t.start()
    start_line.wait()
    t0 = time.perf_counter()
    for t in threads:
        t.join()
    seconds = time.perf_counter() - t0
    return {"clients": clients, "requests": requests, "images_per_request": images_per_request,
            "errors": sorted(set(map(str, errors))),
            "images_per_s": requests * images_per_request / seconds,
            "p50_ms": float(np.percentile(latencies, 50)),
            "p99_ms": float(np.percentile(latencies, 99))}
