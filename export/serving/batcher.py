"""Micro-batching for one served model version: the images of requests that arrive within
`window` seconds of the first (up to `max_batch` images) run as one ONNX Runtime call in a
worker thread, and each request gets its own rows back. One batcher per version, so one
call never mixes two models."""
import asyncio
import time

import numpy as np

from export.predict import softmax
from legacy_eager import tta as tta_views


class Stopped(Exception):
    """The batcher stopped before this request's batch ran."""


class Batcher:
    """A TTA request adds the images of the model's TTA views to the batch (its mirror
    images for DavidNet's flip TTA, 6 views for airbench94's). `observe(batch_images,
    queue_waits_s)`, when given, is told of every batch run."""

    def __init__(self, classifier, max_batch, window, observe=None):
        self.classifier, self.max_batch, self.window = classifier, max_batch, window
        self.observe = observe
        self.queue = asyncio.Queue()
        self.task = None

    def start(self):
        # One batch at a time: ONNX Runtime already uses every core for it (two batches in
        # flight were measured slower on 2 cores; README, Serving over HTTP).
        self.task = asyncio.get_running_loop().create_task(self._work())

    async def stop(self):
        """Refuse new requests, run every request already queued, then end the worker;
        returns once it has ended (an unloaded version finishes what it has)."""
        task, self.task = self.task, None
        if task is None:
            return
        await self.queue.put(None)
        await task

    async def predict(self, images, tta):
        if self.task is None:
            raise Stopped("the model version is not serving")
        future = asyncio.get_running_loop().create_future()
        await self.queue.put((images, tta, future, time.perf_counter()))
        return await future

    async def _work(self):
        loop = asyncio.get_running_loop()
        last = False
        while not last:
            first = await self.queue.get()
            if first is None:
                return
            jobs, size = [first], self._rows(first)
            deadline = loop.time() + self.window
            while size < self.max_batch:
                timeout = deadline - loop.time()
                if timeout <= 0:
                    break
                try:
                    job = await asyncio.wait_for(self.queue.get(), timeout)
                except asyncio.TimeoutError:
                    break
                if job is None:  # stop(): this batch is the last
                    last = True
                    break
                jobs.append(job)
                size += self._rows(job)
            started = time.perf_counter()
            if self.observe:
                self.observe(size, [started - job[3] for job in jobs])
            try:
                results = await loop.run_in_executor(None, self._run, jobs)
            except Exception as e:  # a failed batch fails its requests, not the server
                for _, _, future, _ in jobs:
                    if not future.done():
                        future.set_exception(e)
                continue
            for (_, _, future, _), result in zip(jobs, results):
                if not future.done():
                    future.set_result(result)

    def _rows(self, job):
        images, tta, _, _ = job
        return len(images) * (len(self.classifier.tta_views) if tta else 1)

    def _run(self, jobs):
        parts = []
        views = self.classifier.tta_views
        for images, tta, _, _ in jobs:
            parts.extend([tta_views.view_images(images, v) for v in views] if tta else [images])
        logits, probs = self.classifier.run(np.concatenate(parts), batch_size=self.max_batch)
        results, at = [], 0
        for images, tta, _, _ in jobs:
            n, k = len(images), len(views) if tta else 1
            if tta:
                lg = tta_views.combine([logits[at + i * n:at + (i + 1) * n] for i in range(k)], views)
                results.append((lg, softmax(lg)))
            else:
                results.append((logits[at:at + n], probs[at:at + n]))
            at += k * n
        return results
