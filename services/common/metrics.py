"""Prometheus helpers: naming per DESIGN.md §6 and the text exposition for any web framework."""

from __future__ import annotations

import time

from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry, Gauge, generate_latest

METRICS_CONTENT_TYPE = CONTENT_TYPE_LATEST


def metric_name(service: str, what: str, unit: str = "") -> str:
    """``wenzheng_<service>_<what>_<unit>``; counters get ``_total`` from prometheus_client itself."""
    return "_".join(part for part in ("wenzheng", service, what, unit) if part)


def render_metrics(registry: CollectorRegistry = REGISTRY) -> bytes:
    return generate_latest(registry)


class ConsumerHealth:
    """Per-consumer gauges every consuming service exports: lag and last event applied."""

    def __init__(self, service: str, registry: CollectorRegistry = REGISTRY) -> None:
        self.lag = Gauge(metric_name(service, "consumer_lag", "messages"),
                         "Messages on the consumed topics not yet processed", ["topic"], registry=registry)
        self.last_applied = Gauge(metric_name(service, "last_event_applied", "timestamp_seconds"),
                                  "Unix time when the last event was applied", registry=registry)
        self.started = time.time()

    def applied(self) -> None:
        self.last_applied.set(time.time())
