"""The latest load sample as Prometheus gauges, for `/metrics` (read from the database at scrape time)."""

from __future__ import annotations

from prometheus_client.core import GaugeMetricFamily, Metric

from telemetry.models import LOAD_SERIES
from telemetry.selectors import load_latest


def load_metric_families() -> list[Metric]:
    """`sparkcontrol_load_<series>` per Spark (label `node`), and the gateway's without labels; absent when no
    sample was taken within the hour."""
    families = {
        name: GaugeMetricFamily(
            f"sparkcontrol_load_{name}",
            f"Latest load sample: {name.replace('_', ' ')}" + ("." if name.startswith("gateway_") else ", per Spark."),
            labels=[] if name.startswith("gateway_") else ["node"],
        )
        for name in LOAD_SERIES
    }
    for sample in load_latest():
        for name in LOAD_SERIES:
            value = getattr(sample, name)
            if value is None or name.startswith("gateway_") != (not sample.node):
                continue
            families[name].add_metric([sample.node] if sample.node else [], value)
    return list(families.values())
