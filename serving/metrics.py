"""The service's Prometheus metrics (official client), one registry per app so apps never share series."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

# Milliseconds matter here: the budget is a 10 ms p99 (DESIGN §6).
LATENCY_BUCKETS = (0.001, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.015, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
CANDIDATE_BUCKETS = (1, 10, 50, 100, 200, 500, 1_000, 2_000)


class Metrics:
    """Request latency by route and status, errors by kind, candidates per request, store-read
    latency by feature view, degraded answers by reason, reloads by result, and the served model
    as labels of `seqrank_model_info` (1 for the bundle serving now)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.request_seconds = Histogram(
            "seqrank_request_seconds",
            "HTTP request latency in the service",
            ["route", "status"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.errors = Counter(
            "seqrank_errors_total", "Failed or degraded requests by kind", ["kind"], registry=r
        )
        self.candidates = Histogram(
            "seqrank_candidates", "Candidates per ranking request", buckets=CANDIDATE_BUCKETS, registry=r
        )
        self.store_read_seconds = Histogram(
            "seqrank_store_read_seconds",
            "Online-store read latency by feature view",
            ["view"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.degraded = Counter(
            "seqrank_degraded_total",
            "Answers in popularity order instead of the model's",
            ["reason"],
            registry=r,
        )
        self.reloads = Counter("seqrank_reloads_total", "Bundle reloads by result", ["result"], registry=r)
        self.model_info = Gauge(
            "seqrank_model_info",
            "The served bundle (1) by model and version",
            ["model", "model_version"],
            registry=r,
        )
        self.ready = Gauge("seqrank_ready", "1 when /readyz answers 200", registry=r)
        self._model: tuple[str, str] | None = None

    def serving(self, model: str, version: str) -> None:
        """Mark (model, version) as the served bundle, dropping the previous one's series."""
        if self._model is not None and self._model != (model, version):
            self.model_info.remove(*self._model)
        self.model_info.labels(model, version).set(1)
        self._model = (model, version)
