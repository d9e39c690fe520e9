"""Prometheus metrics at /monitoring/prometheus/metrics (TensorFlow Serving's path), made
with prometheus-client in a registry of the app's own. Labels take few values: endpoint,
model version, HTTP status code, version state."""
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client import generate_latest

from export.serving.versions import STATES

LATENCY_BUCKETS = (.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048)


class Metrics:
    content_type = CONTENT_TYPE_LATEST

    def __init__(self):
        r = self.registry = CollectorRegistry()
        self.requests = Counter(
            "davidnet_requests", "Requests answered, by endpoint, model version (empty when "
            "none was reached) and HTTP status code", ["endpoint", "version", "code"], registry=r)
        self.latency = Histogram(
            "davidnet_request_latency_seconds", "Time from a request's arrival to the end of "
            "its answer", ["endpoint"], buckets=LATENCY_BUCKETS, registry=r)
        self.in_flight = Gauge(
            "davidnet_requests_in_flight", "Requests being handled now, by endpoint",
            ["endpoint"], registry=r)
        self.queue_wait = Histogram(
            "davidnet_queue_wait_seconds", "Time a request's images waited in the batcher "
            "before their ONNX Runtime call started", buckets=LATENCY_BUCKETS, registry=r)
        self.batch_images = Histogram(
            "davidnet_batch_images", "Images per ONNX Runtime call, mirror images of flip TTA "
            "included", buckets=BATCH_BUCKETS, registry=r)
        self.images = Counter("davidnet_images", "Images classified", ["version"], registry=r)
        self.loads = Counter("davidnet_model_loads", "Model versions loaded, checked and "
                             "serving", ["version"], registry=r)
        self.load_failures = Counter("davidnet_model_load_failures", "Model versions refused "
                                     "(not loadable or the wrong signature)", ["version"],
                                     registry=r)
        self.version_state = Gauge("davidnet_model_version_state", "1 for the state each "
                                   "version is in (TensorFlow Serving's states), else 0",
                                   ["version", "state"], registry=r)

    def set_state(self, version, state):
        for s in STATES:
            self.version_state.labels(str(version), s).set(1 if s == state else 0)

    def observe_batch(self, images, queue_waits):
        self.batch_images.observe(images)
        for wait in queue_waits:
            self.queue_wait.observe(wait)

    def exposition(self):
        return generate_latest(self.registry)
