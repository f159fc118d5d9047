"""Prometheus metrics per server: calls, latency and errors by method and status code."""

from __future__ import annotations

from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, Counter, Histogram, start_http_server

# The collectors one call of a method ends in: calls, errors (None for OK), latency.
_Children = tuple[Counter, Counter | None, Histogram]

# Buckets from 0.5 ms: the widget and routing calls are expected to answer in milliseconds.
LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)


@dataclass
class RpcMetrics:
    """The collectors of one server, kept in their own registry so tests can run many."""

    registry: CollectorRegistry = field(default_factory=CollectorRegistry)

    def __post_init__(self) -> None:
        self._children: dict[tuple[str, str], _Children] = {}
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
        # Finding a labelled child takes a lock and checks the labels: done once per
        # (method, code), not on every call.
        children = self._children.get((method, code))
        if children is None:
            children = self._children.setdefault((method, code), self._children_of(method, code))
        calls, errors, latency = children
        calls.inc()
        if errors is not None:
            errors.inc()
        latency.observe(seconds)

    def _children_of(self, method: str, code: str) -> _Children:
        errors = self.errors.labels(method, code) if code != "OK" else None
        return self.calls.labels(method, code), errors, self.latency.labels(method)

    def serve(self, host: str, port: int) -> int:
        """Expose ``/metrics`` over HTTP; returns the bound port (useful with port 0)."""
        server, _thread = start_http_server(port, addr=host, registry=self.registry)
        return int(server.server_port)
