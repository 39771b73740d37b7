"""Stats' Prometheus metrics (module-level: one set per process, shared by every app instance).

Per-unit gauges are bounded by ``metrics_max_units`` (the caller passes it to :func:`publish_rates`)."""

from __future__ import annotations

from datetime import date

from prometheus_client import Counter, Gauge

from services.common.metrics import ConsumerHealth, metric_name
from services.common.reference import CITY, reference
from services.stats.domain import UNASSIGNED, Summary

SERVICE = "stats"
RATES = ("reply_rate", "on_time_rate", "satisfaction_rate")

CONSUMER = ConsumerHealth(SERVICE)
EVENTS_APPLIED = Counter(metric_name(SERVICE, "events_applied"), "Events applied to the ledger (duplicates excluded)")
DUPLICATES = Counter(metric_name(SERVICE, "duplicate_events"), "Events already in the ledger, ignored")
DEAD_LETTERS = Counter(metric_name(SERVICE, "dead_letters"), "Messages dead-lettered")
APPLY_LAG = Gauge(metric_name(SERVICE, "apply_lag", "seconds"),
                  "Now minus the time of the newest event in the last applied batch")
LEDGER_SIZE = Gauge(metric_name(SERVICE, "ledger", "cases"), "Cases in the ledger")
# one gauge per rate, by unit and its county: what the recording rules and dashboards aggregate
UNIT_RATES = {
    "reply_rate": Gauge(metric_name(SERVICE, "reply_rate", "ratio"), "Live reply rate of a unit",
                        ["department", "county"]),
    "on_time_rate": Gauge(metric_name(SERVICE, "on_time_rate", "ratio"), "Live on-time rate of a unit",
                          ["department", "county"]),
    "satisfaction_rate": Gauge(metric_name(SERVICE, "satisfaction_rate", "ratio"), "Live satisfaction rate of a unit",
                               ["department", "county"]),
}
OVERALL_RATE = Gauge(metric_name(SERVICE, "rate", "ratio"), "Live platform-wide rate", ["rate"])


def publish_rates(overall: Summary, by_unit: dict[str, Summary], today: date, max_units: int) -> None:
    rates = overall.rates(today)
    for name in RATES:
        if rates[name]["value"] is not None:
            OVERALL_RATE.labels(rate=name).set(rates[name]["value"])
    for unit in sorted(u for u in by_unit if u != UNASSIGNED)[:max_units]:
        rates = by_unit[unit].rates(today)
        for name in RATES:
            if rates[name]["value"] is not None:
                UNIT_RATES[name].labels(department=unit, county=unit_county(unit)).set(rates[name]["value"])


def unit_county(unit_id: str) -> str:
    """A unit's county-level division ("city" for a city-wide unit), from the shared reference data."""
    unit = reference().unit(unit_id)
    if unit is None:
        return "unknown"
    return unit.county or CITY
