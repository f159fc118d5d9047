"""Prometheus metrics per server: calls, latency and errors by method and status code."""

from __future__ import annotations

from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, Counter, Histogram, start_http_server

# Buckets from 0.5 ms: the widget and routing calls are expected to answer in milliseconds.
LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)


@dataclass
class RpcMetrics:
    """The collectors of one server, kept in their own registry so tests can run many."""

    registry: CollectorRegistry = field(default_factory=CollectorRegistry)

    def __post_init__(self) -> None:
        labels = ("method", "code")
        self.calls = Counter(
            "switchboard_rpc_calls", "RPCs handled", labels, registry=self.registry
        )
        self.errors = Counter(
            "switchboard_rpc_errors",
            "RPCs that ended with a status other than OK",
            labels,
            registry=self.registry,
        )
        self.latency = Histogram(
            "switchboard_rpc_latency_seconds",
            "Time to handle an RPC",
            ("method",),
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )

    def observe(self, method: str, code: str, seconds: float) -> None:
        self.calls.labels(method, code).inc()
        if code != "OK":
            self.errors.labels(method, code).inc()
        self.latency.labels(method).observe(seconds)

    def serve(self, host: str, port: int) -> int:
        """Expose ``/metrics`` over HTTP; returns the bound port (useful with port 0)."""
        server, _thread = start_http_server(port, addr=host, registry=self.registry)
        return int(server.server_port)
