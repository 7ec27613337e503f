"""Prometheus metrics, in the server's own registry (so tests and embedders never collide with
the process-global default registry), labelled by model and version."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram, start_http_server

_LATENCY_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0)
_BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)
_BYTES_BUCKETS = (64, 256, 1024, 4096, 16384, 65536, 262144, 1048576)
LABELS = ("model", "version")


class Metrics:
    def __init__(self, registry: CollectorRegistry | None = None):
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.requests = Counter("agilenn_requests", "Inference requests answered, by outcome (OK or an ErrorCode name)",
                                (*LABELS, "code"), registry=r)
        self.request_seconds = Histogram("agilenn_request_duration_seconds", "Arrival to reply, successful requests",
                                         LABELS, buckets=_LATENCY_BUCKETS, registry=r)
        self.queue_seconds = Histogram("agilenn_queue_duration_seconds", "Arrival until the request's batch started",
                                       LABELS, buckets=_LATENCY_BUCKETS, registry=r)
        self.decode_seconds = Histogram("agilenn_decode_duration_seconds", "Payload or image decoding",
                                        LABELS, buckets=_LATENCY_BUCKETS, registry=r)
        self.compute_seconds = Histogram("agilenn_compute_duration_seconds", "ONNX run of one batch",
                                         LABELS, buckets=_LATENCY_BUCKETS, registry=r)
        self.batch_size = Histogram("agilenn_batch_size", "Requests per ONNX run", LABELS, buckets=_BATCH_BUCKETS,
                                    registry=r)
        self.payload_bytes = Histogram("agilenn_request_payload_bytes", "Feature payload or image bytes received",
                                       LABELS, buckets=_BYTES_BUCKETS, registry=r)
        self._children: dict[tuple[str, str], "ModelMetrics"] = {}

    def for_model(self, name: str, version: str) -> "ModelMetrics":
        """Label-bound children, cached: .labels() lookups are not free on the hot path."""
        key = (name, version)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = ModelMetrics(self, name, version)
        return child

    def serve(self, port: int, addr: str = "0.0.0.0") -> int:
        """Start the /metrics HTTP endpoint in a daemon thread; returns the bound port."""
        server, _thread = start_http_server(port, addr=addr, registry=self.registry)
        return server.server_port


class ModelMetrics:
    def __init__(self, m: Metrics, name: str, version: str):
        self._m = m
        self._labels = (name, version)
        self._codes: dict[str, object] = {}
        self.request_seconds = m.request_seconds.labels(name, version)
        self.queue_seconds = m.queue_seconds.labels(name, version)
        self.decode_seconds = m.decode_seconds.labels(name, version)
        self.compute_seconds = m.compute_seconds.labels(name, version)
        self.batch_size = m.batch_size.labels(name, version)
        self.payload_bytes = m.payload_bytes.labels(name, version)

    def count(self, code: str) -> None:
        c = self._codes.get(code)
        if c is None:
            c = self._codes[code] = self._m.requests.labels(*self._labels, code)
        c.inc()

    def batch(self, size: int, compute_s: float) -> None:
        self.batch_size.observe(size)
        self.compute_seconds.observe(compute_s)
