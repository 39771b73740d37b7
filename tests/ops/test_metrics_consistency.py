"""Dashboards and rules name only series that exist: exported by the code (found by scanning services/),
recorded by our rules, made by Prometheus itself, or exported by the Kafka exporter docker compose runs.

The per-service tests fail, naming what is missing, until that service's code exports what the monitoring
expects (`python -m scripts.ops.metrics_catalog` prints what the code exports now).
"""

from __future__ import annotations

import re

import pytest

from scripts.ops.metrics_catalog import (
    PROMETHEUS_BUILTINS,
    SERVICE_NAMES,
    Catalog,
    existing_services,
    scan_services,
    scan_source,
    select,
)
from tests.ops.references import recorded_names, references

# Series of exporters that are not our code (docker-compose.yml's kafka-lag-exporter, danielqsj/kafka-exporter).
EXTERNAL = {
    "kafka_topic_partition_current_offset": "kafka-lag-exporter",
    "kafka_consumergroup_lag": "kafka-lag-exporter",
}

CATALOG = scan_services()
RECORDED = recorded_names()
REFERENCES = list(references())


def owner(name: str) -> str:
    match = re.match(r"wenzheng_([a-z]+)_", name)
    if match and match[1] in SERVICE_NAMES:
        return match[1]
    return "other"


def missing() -> dict[str, list[str]]:
    """owner -> 'name (where)' for every referenced name or pattern no source provides."""
    out: dict[str, list[str]] = {}
    for where, selection in REFERENCES:
        for name in selection.names:
            if CATALOG.exports(name) or name in RECORDED or name in PROMETHEUS_BUILTINS or name in EXTERNAL:
                continue
            out.setdefault(owner(name), []).append(f"{name}  ({where})")
        for pattern in selection.name_patterns:
            if not CATALOG.matching(pattern):
                out.setdefault("other", []).append(f"__name__=~{pattern!r} matches nothing  ({where})")
    return out


MISSING = missing()


@pytest.mark.parametrize("service", SERVICE_NAMES)
def test_monitoring_names_only_what_the_service_exports(service):
    wanted = sorted(set(MISSING.get(service, [])))
    if not wanted:
        return
    state = "exists but does not export" if service in existing_services() else "has no code yet; expected"
    pytest.fail(f"services/{service} {state}:\n  " + "\n  ".join(wanted), pytrace=False)


def test_monitoring_names_outside_the_services_exist():
    assert not MISSING.get("other"), "\n".join(sorted(set(MISSING["other"])))


def test_every_expression_reads_some_series():
    empty = [where for where, selection in REFERENCES if not (selection.names or selection.name_patterns)]
    assert not empty


def test_dashboards_use_the_recording_rules():
    used = {name for _, selection in REFERENCES for name in selection.names}
    assert RECORDED - used == set(), f"recorded but never read: {sorted(RECORDED - used)}"


def test_the_scan_finds_what_exists_today():
    """A canary for the scanner itself: names already in the code must be found."""
    if "intake" in existing_services():
        assert CATALOG.exports("wenzheng_intake_posts_total")
        assert CATALOG.exports("http_request_duration_seconds_bucket")
        assert CATALOG.exports("wenzheng_intake_consumer_lag_messages")


# ------------------------------------------------------------------------------------------ the tools


@pytest.mark.parametrize(("expr", "names", "patterns"), [
    ("sum by (topic) (rate(a_total[5m]))", {"a_total"}, set()),
    ("sum(rate(x[5m])) by (job) / on(job) group_left(extra) y", {"x", "y"}, set()),
    ('{__name__=~"wenzheng_[a-z]+_lag"} > 0', set(), {"wenzheng_[a-z]+_lag"}),
    ('count(up{job=~"w.+"} == 1) and on () b offset 5m', {"up", "b"}, set()),
    ('rate(m{label="sum(x) by y"}[$__rate_interval]) * ${var} + 1e3', {"m"}, set()),
    ("histogram_quantile(0.9, sum without (instance) (h_bucket))", {"h_bucket"}, set()),
    ("time() - job:last:max > 900", {"job:last:max"}, set()),
    ("absent(up{job='x'}) or vector(1)", {"up"}, set()),
])
def test_promql_names(expr, names, patterns):
    selection = select(expr)
    assert (set(selection.names), set(selection.name_patterns)) == (names, patterns)


def test_code_scan_follows_prometheus_client_naming():
    source = '''
from prometheus_client import Counter, Gauge, Histogram, Summary
from services.common.metrics import ConsumerHealth, metric_name
LAG = "wenzheng_demo_backlog_events"
A = Counter(metric_name("demo", "posts"), "doc", ["channel"])
B = Counter("wenzheng_demo_errors_total", "doc")
C = Gauge(LAG, "doc")
D = Histogram("seconds", "doc", namespace="wenzheng", subsystem="demo")
E = Summary(metric_name("demo", "size", "bytes"), "doc")
F = Gauge(some_call(), "doc")
HEALTH = ConsumerHealth("demo")
'''
    catalog = Catalog()
    scan_source(source, "demo.py", catalog)
    assert {"wenzheng_demo_posts_total", "wenzheng_demo_errors_total", "wenzheng_demo_backlog_events",
            "wenzheng_demo_seconds_bucket", "wenzheng_demo_seconds_count", "wenzheng_demo_size_bytes_sum",
            "wenzheng_demo_consumer_lag_messages", "wenzheng_demo_last_event_applied_timestamp_seconds",
            } <= set(catalog.series)
    assert "wenzheng_demo_errors_total_total" not in catalog.series
    assert len(catalog.unresolved) == 1 and "demo.py:10" in catalog.unresolved[0]
