"""The gateway's Prometheus metrics, per process, in prometheus-client's default registry (exposed by /metrics).

With several web processes, each exposes its own values; sum them by `service` in Prometheus.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0)

REQUESTS = Counter(
    "sparkcontrol_gateway_requests",
    "Requests answered by the /v1/ gateway, by service, route and HTTP status.",
    ["service", "route", "status"],
)
ERRORS = Counter(
    "sparkcontrol_gateway_errors",
    "Gateway requests that did not get an upstream answer, by service and reason.",
    ["service", "reason"],
)
LATENCY = Histogram(
    "sparkcontrol_gateway_request_seconds",
    "Time from the request reaching the gateway to the last byte of its answer.",
    ["service", "route"],
    buckets=LATENCY_BUCKETS,
)
FIRST_BYTE = Histogram(
    "sparkcontrol_gateway_first_byte_seconds",
    "Time from the request reaching the gateway to the upstream's response head (queueing and holds included).",
    ["service", "route"],
    buckets=LATENCY_BUCKETS,
)
IN_FLIGHT = Gauge("sparkcontrol_gateway_in_flight", "Gateway requests in flight to a service.", ["service"])
QUEUED = Gauge("sparkcontrol_gateway_queued", "Gateway requests waiting for a slot under a service's cap.", ["service"])
HELD = Gauge("sparkcontrol_gateway_held", "Gateway requests held for a model being swapped in.")
