"""The served versions of one model, as TensorFlow Serving keeps them.

A model base path holds numbered version folders (`BASE/1/model.onnx`, `BASE/2/...`; a run
folder is a version folder too); a single MODEL.onnx or run folder is served as version 1.
The version policy (latest, all, specific:N,M) says which versions to serve; labels
(stable=1) name versions. The base path is polled: a version folder is considered once it
has looked the same at two polls in a row (a folder still being copied in is not loaded
half-written), then loaded, checked and warmed (models.load_file) before it takes a request; only
then does the version it replaces stop taking new requests, finish the ones it has and get
unloaded. A version that cannot be loaded is refused with its error (state END) and tried
again when its folder changes; the versions serving go on serving.

States are TensorFlow Serving's: START, LOADING, AVAILABLE, UNLOADING, END.
"""
import asyncio
import contextlib
import os
import re
from dataclasses import dataclass, field

from export.serving import models
from export.serving.batcher import Batcher
from export.serving.bodies import BadRequest

STATES = ("START", "LOADING", "AVAILABLE", "UNLOADING", "END")


class NotServed(BadRequest):
    """A request for a model, version or label that is not being served."""


# ---------------------------------------------------------------- flags


@dataclass(frozen=True)
class VersionPolicy:
    """TensorFlow Serving's model_version_policy: latest (the highest version that can be
    served), all, or specific versions."""
    kind: str = "latest"
    versions: tuple = ()

    @classmethod
    def parse(cls, text):
        if text in ("latest", "all"):
            return cls(text)
        match = re.fullmatch(r"specific:(\d+(?:,\d+)*)", text)
        if not match:
            raise ValueError(f"expected latest, all or specific:N[,M...], got {text!r}")
        return cls("specific", tuple(sorted({int(v) for v in match.group(1).split(",")})))

    def select(self, candidates):
        if self.kind == "all":
            return set(candidates)
        if self.kind == "specific":
            return set(candidates) & set(self.versions)
        return {max(candidates)} if candidates else set()

    def __str__(self):
        return self.kind if self.kind != "specific" else "specific:" + ",".join(map(str, self.versions))


def parse_labels(text):
    """"stable=1,canary=2" as {"stable": 1, "canary": 2}."""
    labels = {}
    for part in filter(None, (text or "").split(",")):
        match = re.fullmatch(r"(\w+)=(\d+)", part.strip())
        if not match:
            raise ValueError(f"expected LABEL=VERSION[,LABEL=VERSION...] (a label is letters, "
                             f"digits and _), got {part!r}")
        labels[match.group(1)] = int(match.group(2))
    return labels


# ---------------------------------------------------------------- where versions come from


def fingerprint(path):
    """What changes when a version's model file is written or replaced."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_ino, st.st_size, st.st_mtime_ns


def scan_base_path(base):
    """{version: (model file, fingerprint)} for the numbered folders under `base`."""
    found = {}
    try:
        names = os.listdir(base)
    except OSError:
        return found
    for name in names:
        folder = os.path.join(base, name)
        if name.isdigit() and os.path.isdir(folder):
            path = models.model_file(folder)
            found[int(name)] = (path, (fingerprint(folder), fingerprint(path)))
    return found


# ---------------------------------------------------------------- versions


@dataclass
class Served:
    version: int
    path: str
    classifier: object
    batcher: Batcher
    in_flight: int = 0
    idle: asyncio.Event = field(default_factory=asyncio.Event)


@dataclass
class Status:
    state: str
    error_code: str = "OK"
    error_message: str = ""


class ModelVersions:
    """`scan()` returns {version: (model file, fingerprint)}; `poll_seconds` None: scan once."""

    def __init__(self, name, scan, policy=VersionPolicy(), labels=None, poll_seconds=None,
                 threads=0, max_batch=256, window=0.002, metrics=None, log=None):
        self.name, self.scan, self.policy = name, scan, policy
        self.labels = dict(labels or {})
        self.poll_seconds, self.threads = poll_seconds, threads
        self.max_batch, self.window = max_batch, window
        self.metrics, self.log = metrics, log or (lambda line: None)
        self.served = {}        # version -> Served, taking requests
        self.status = {}        # version -> Status, every version seen (END ones stay)
        self.refused = {}       # version -> the fingerprint it was refused at
        self.seen = None        # the last scan's fingerprints
        self._poller = None
        self._unloads = set()

    # -------------------------------------------------------- lifecycle

    async def start(self):
        await self.poll_once()
        if self.poll_seconds:
            self._poller = asyncio.get_running_loop().create_task(self._poll_forever())

    async def stop(self):
        if self._poller:
            self._poller.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._poller
        for version in list(self.served):
            self._unload(version)
        if self._unloads:
            await asyncio.gather(*self._unloads)

    async def _poll_forever(self):
        while True:
            await asyncio.sleep(self.poll_seconds)
            try:
                await self.poll_once()
            except Exception as e:  # a poll that fails is logged; the next one tries again
                self.log(f"{self.name}: polling failed ({type(e).__name__}: {e})")

    # -------------------------------------------------------- one poll

    async def poll_once(self):
        found = await asyncio.to_thread(self.scan)
        first, previous = self.seen is None, self.seen or {}
        self.seen = {v: fp for v, (_, fp) in found.items()}
        # Settled: unchanged since the last poll (or present at start-up); a loaded version
        # stays a candidate while its folder exists, whatever happens to the files.
        candidates = {v for v, (_, fp) in found.items()
                      if (first or previous.get(v) == fp) and self.refused.get(v) != fp}
        candidates |= set(self.served) & set(found)
        while True:  # each round loads or refuses every version it tries: it ends
            to_load = self.policy.select(candidates) - set(self.served)
            if not to_load:
                break
            for version in sorted(to_load, reverse=True):
                if not await self._load(version, *found[version]):
                    candidates.discard(version)
        wanted = self.policy.select(candidates)
        for version in set(self.served) - wanted:
            self._unload(version)

    def _set(self, version, state, error_code="OK", error_message=""):
        self.status[version] = Status(state, error_code, error_message)
        if self.metrics:
            self.metrics.set_state(version, state)

    async def _load(self, version, path, fp):
        self._set(version, "START")
        self._set(version, "LOADING")
        try:
            classifier = await asyncio.to_thread(models.load_file, path, self.threads)
        except models.Refused as e:
            self.refused[version] = fp
            self._set(version, "END", e.code, str(e))
            if self.metrics:
                self.metrics.load_failures.labels(str(version)).inc()
            self.log(f"{self.name}: version {version} refused: {e}")
            return False
        observe = self.metrics.observe_batch if self.metrics else None
        batcher = Batcher(classifier, self.max_batch, self.window, observe)
        batcher.start()
        self.refused.pop(version, None)
        self.served[version] = Served(version, path, classifier, batcher)
        self._set(version, "AVAILABLE")
        if self.metrics:
            self.metrics.loads.labels(str(version)).inc()
        self.log(f"{self.name}: version {version} AVAILABLE ({path})")
        return True

    def _unload(self, version):
        served = self.served.pop(version)  # no new request reaches it from here on
        self._set(version, "UNLOADING")
        task = asyncio.get_running_loop().create_task(self._finish(served))
        self._unloads.add(task)
        task.add_done_callback(self._unloads.discard)

    async def _finish(self, served):
        while served.in_flight:
            served.idle.clear()
            await served.idle.wait()
        await served.batcher.stop()
        self._set(served.version, "END")
        self.log(f"{self.name}: version {served.version} END (unloaded)")

    # -------------------------------------------------------- requests

    def resolve(self, name, version=None, label=None):
        """The Served that a request for (name, version or label) goes to; NotServed with
        TensorFlow Serving's message if none."""
        if label is not None:
            if name != self.name or label not in self.labels:
                raise NotServed(f"Unrecognized servable version label: {label}", 400)
            version = self.labels[label]
        if name != self.name:
            spec = f"Latest({name})" if version is None else f"Specific({name}, {version})"
            raise NotServed(f"Servable not found for request: {spec}", 404)
        if version is None:
            if not self.served:
                raise NotServed(f"Servable not found for request: Latest({name})", 404)
            return self.served[max(self.served)]
        if version not in self.served:
            raise NotServed(f"Servable not found for request: Specific({name}, {version})", 404)
        return self.served[version]

    @contextlib.contextmanager
    def using(self, served):
        """Hold `served` while a request runs on it: an unload waits for the request."""
        served.in_flight += 1
        try:
            yield served
        finally:
            served.in_flight -= 1
            if not served.in_flight:
                served.idle.set()

    def status_document(self, name, version=None, label=None):
        """GET /v1/models/NAME[/versions/N|/labels/L]: TensorFlow Serving's answer."""
        if label is not None:
            if name != self.name or label not in self.labels:
                raise NotServed(f"Unrecognized servable version label: {label}", 400)
            version = self.labels[label]
        if name != self.name or not self.status:
            raise NotServed(f"Could not find any versions of model {name}", 404)
        if version is not None and version not in self.status:
            raise NotServed(f"Could not find version {version} of model {name}", 404)
        versions = [version] if version is not None else sorted(self.status, reverse=True)
        return {"model_version_status": [
            {"version": str(v), "state": self.status[v].state,
             "status": {"error_code": self.status[v].error_code,
                        "error_message": self.status[v].error_message}} for v in versions]}

    def ready(self):
        return bool(self.served)
