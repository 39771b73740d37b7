"""Prometheus metrics of the stats service; per-unit gauges are bounded by ``metrics_max_units``."""

from __future__ import annotations

from datetime import date

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge

from services.common.metrics import ConsumerHealth, metric_name
from services.common.reference import CITY, reference
from services.stats.domain import UNASSIGNED, Summary

SERVICE = "stats"
RATES = ("reply_rate", "on_time_rate", "satisfaction_rate")


class StatsMetrics:
    def __init__(self, registry: CollectorRegistry = REGISTRY, max_units: int = 200) -> None:
        self.max_units = max_units
        self.health = ConsumerHealth(SERVICE, registry)
        self.events_applied = Counter(metric_name(SERVICE, "events_applied"),
                                      "Events applied to the ledger (duplicates excluded)", registry=registry)
        self.duplicates = Counter(metric_name(SERVICE, "duplicate_events"),
                                  "Events already in the ledger, ignored", registry=registry)
        self.dead_letters = Counter(metric_name(SERVICE, "dead_letters"), "Messages dead-lettered", registry=registry)
        self.apply_lag = Gauge(metric_name(SERVICE, "apply_lag", "seconds"),
                               "Now minus the time of the newest event in the last applied batch", registry=registry)
        self.ledger_size = Gauge(metric_name(SERVICE, "ledger", "cases"), "Cases in the ledger", registry=registry)
        # one gauge per rate, by unit and its county: what the recording rules and dashboards aggregate
        labels = ["department", "county"]
        self.unit_rates = {
            "reply_rate": Gauge(metric_name(SERVICE, "reply_rate", "ratio"), "Live reply rate of a unit",
                                labels, registry=registry),
            "on_time_rate": Gauge(metric_name(SERVICE, "on_time_rate", "ratio"), "Live on-time rate of a unit",
                                  labels, registry=registry),
            "satisfaction_rate": Gauge(metric_name(SERVICE, "satisfaction_rate", "ratio"),
                                       "Live satisfaction rate of a unit", labels, registry=registry),
        }
        self.overall_rate = Gauge(metric_name(SERVICE, "rate", "ratio"), "Live platform-wide rate", ["rate"],
                                  registry=registry)

    def publish_rates(self, overall: Summary, by_unit: dict[str, Summary], today: date) -> None:
        rates = overall.rates(today)
        for name in RATES:
            if rates[name]["value"] is not None:
                self.overall_rate.labels(rate=name).set(rates[name]["value"])
        for unit in sorted(u for u in by_unit if u != UNASSIGNED)[: self.max_units]:
            rates = by_unit[unit].rates(today)
            for name in RATES:
                if rates[name]["value"] is not None:
                    self.unit_rates[name].labels(department=unit, county=unit_county(unit)).set(rates[name]["value"])


def unit_county(unit_id: str) -> str:
    """A unit's county-level division ("city" for a city-wide unit), from the shared reference data."""
    unit = reference().unit(unit_id)
    if unit is None:
        return "unknown"
    return unit.county or CITY
