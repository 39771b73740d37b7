"""Build the Grafana dashboards in deploy/grafana/dashboards/ from the short panel lists below.

    python -m scripts.ops.dashboards           # write the JSON files
    python -m scripts.ops.dashboards --check   # exit 1 when a committed file differs (tests run this too)

Edit the lists here rather than the JSON: a dashboard saved from Grafana's UI must be folded back in.
Every expression may name only series the code exports or the recording rules in deploy/prometheus/rules
record (tests/ops/test_metrics_consistency.py).
"""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
DASHBOARD_DIR = ROOT / "deploy" / "grafana" / "dashboards"
DATASOURCE = {"type": "prometheus", "uid": "prometheus"}  # deploy/grafana/provisioning/datasources/prometheus.yml
RATE = "$__rate_interval"


@dataclass(frozen=True)
class Query:
    expr: str
    legend: str = ""
    instant: bool = False


@dataclass(frozen=True)
class Panel:
    title: str
    queries: tuple[Query, ...]
    kind: str = "timeseries"
    unit: str = "short"
    description: str = ""
    width: int = 12
    height: int = 8
    max_value: float | None = None
    options: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Row:
    title: str
    panels: tuple[Panel, ...]


def q(expr: str, legend: str = "", instant: bool = False) -> Query:
    return Query(" ".join(expr.split()), legend, instant)


OPERATIONS = (
    Row("Throughput", (
        Panel("Throughput per service", (q("service:wenzheng_throughput:rate5m", "{{service}}"),), unit="ops",
              description="intake: posts accepted; router: routing decisions; notifier: alerts raised; "
                          "stats: events applied into the ledger."),
        Panel("Events published per topic (intake outbox)",
              (q("topic:wenzheng_intake_outbox_published:rate5m", "{{topic}}"),),
              unit="ops"),
        Panel("Messages written per topic (Kafka exporter; docker compose)",
              (q(f'sum by (topic) (rate(kafka_topic_partition_current_offset{{topic=~"wenzheng\\\\..*"}}[{RATE}]))',
                 "{{topic}}"),), unit="ops"),
        Panel("Posts by channel", (q(f"sum by (channel) (rate(wenzheng_intake_posts_total[{RATE}]))",
                                     "{{channel}}"),), unit="ops", width=6),
        Panel("Routing decisions by outcome",
              (q(f"sum by (outcome) (rate(wenzheng_router_decisions_total[{RATE}]))", "{{outcome}}"),),
              unit="ops", width=6),
        Panel("Alerts by kind", (q(f"sum by (kind) (rate(wenzheng_notifier_alerts_total[{RATE}]))", "{{kind}}"),),
              unit="ops", width=6),
        Panel("Notifications by channel and outcome",
              (q(f"sum by (channel, outcome) (rate(wenzheng_notifier_notifications_total[{RATE}]))",
                 "{{channel}} {{outcome}}"),), unit="ops", width=6),
    )),
    Row("Latency", (
        Panel("End-to-end latency", (
            q("max(wenzheng_intake_outbox_oldest_age_seconds)", "accepted → published (oldest in outbox)"),
            q(f"histogram_quantile(0.95, sum by (le) (rate(wenzheng_router_classification_seconds_bucket[{RATE}])))",
              "router: classify p95"),
            q("max(wenzheng_stats_apply_lag_seconds)", "stats: event → ledger"),
            q("job:http_request_duration_seconds:p95_5m", "{{job}}: HTTP p95"),
            q(f"histogram_quantile(0.95, sum by (le) (rate(wenzheng_notifier_delivery_seconds_bucket[{RATE}])))",
              "notifier: delivery p95"),
        ), unit="s"),
        Panel("HTTP latency p95 by handler",
              (q(f"histogram_quantile(0.95, sum by (le, handler) "
                 f"(rate(http_request_duration_seconds_bucket[{RATE}])))", "{{handler}}"),), unit="s"),
        Panel("Router confidence (median)",
              (q(f"histogram_quantile(0.5, sum by (le) (rate(wenzheng_router_confidence_bucket[{RATE}])))",
                 "median confidence"),), unit="percentunit", max_value=1),
        Panel("Outbox backlog", (q("sum(wenzheng_intake_outbox_backlog_events)", "unpublished events"),)),
    )),
    Row("Consumers", (
        Panel("Consumer lag by service and topic",
              (q("job_topic:wenzheng_consumer_lag_messages:sum", "{{job}} {{topic}}"),)),
        Panel("Seconds since the last event was applied",
              (q("time() - job:wenzheng_last_event_applied_timestamp_seconds:max", "{{job}}"),), unit="s"),
        Panel("Kafka consumer group lag (Kafka exporter; docker compose)",
              (q('sum by (consumergroup, topic) (kafka_consumergroup_lag{topic=~"wenzheng\\\\..*"})',
                 "{{consumergroup}} {{topic}}"),)),
    )),
    Row("Errors", (
        Panel("HTTP 5xx ratio", (q("job:http_requests_5xx:ratio_rate5m", "{{job}}"),), unit="percentunit"),
        Panel("HTTP requests by status", (q(f"sum by (job, status) (rate(http_requests_total[{RATE}]))",
                                            "{{job}} {{status}}"),), unit="reqps"),
        Panel("Dead letters (last 10 minutes)", (q("job:wenzheng_dead_letters:increase10m", "{{job}}"),)),
        Panel("Commands by outcome", (q(f"sum by (outcome) (rate(wenzheng_intake_commands_total[{RATE}]))",
                                        "{{outcome}}"),), unit="ops", width=6),
        Panel("Outbox relay errors", (q(f"sum(rate(wenzheng_intake_relay_errors_total[{RATE}]))", "relay"),),
              unit="ops", width=6),
    )),
    Row("Replicas", (
        Panel("Replicas up", (q("job:wenzheng_replicas:count", "{{job}}", instant=True),),
              kind="stat", width=8, height=5, description='count by (job) (up{job=~"wenzheng-.+"} == 1)'),
        Panel("Replicas down", (q('count by (job) (up{job=~"wenzheng-.+"} == 0)', "{{job}}", instant=True),),
              kind="stat", width=8, height=5),
        Panel("Firing alerts", (q('count by (alertname) (ALERTS{alertstate="firing"})', "{{alertname}}",
                                  instant=True),), kind="stat", width=8, height=5),
    )),
)

UNIT_FILTER = 'county=~"$county", department=~"$department"'
SERVICE_QUALITY = (
    Row("Rates this month by unit", (
        Panel("Reply rate", (q(f"sort(department:wenzheng_reply_rate:ratio{{{UNIT_FILTER}}})", "{{department}}",
                               instant=True),), kind="bargauge", unit="percentunit", max_value=1, width=8,
              height=12, description="replied cases / received cases"),
        Panel("On-time rate", (q(f"sort(department:wenzheng_on_time_rate:ratio{{{UNIT_FILTER}}})",
                                 "{{department}}", instant=True),), kind="bargauge", unit="percentunit",
              max_value=1, width=8, height=12,
              description="replied by the deadline / cases whose deadline has passed or that were replied"),
        Panel("Satisfaction rate", (q(f"sort(department:wenzheng_satisfaction_rate:ratio{{{UNIT_FILTER}}})",
                                      "{{department}}", instant=True),), kind="bargauge", unit="percentunit",
              max_value=1, width=8, height=12,
              description="satisfied + basically satisfied / rated cases"),
    )),
    Row("By county", (
        Panel("Rates by county (mean of its units)", (
            q('county:wenzheng_reply_rate:avg_ratio{county=~"$county"}', "{{county}} reply"),
            q('county:wenzheng_on_time_rate:avg_ratio{county=~"$county"}', "{{county}} on time"),
            q('county:wenzheng_satisfaction_rate:avg_ratio{county=~"$county"}', "{{county}} satisfaction"),
        ), unit="percentunit", max_value=1, width=24),
    )),
    Row("Trends", (
        Panel("Reply rate over time", (q(f"department:wenzheng_reply_rate:ratio{{{UNIT_FILTER}}}",
                                         "{{department}}"),), unit="percentunit", max_value=1),
        Panel("Satisfaction rate over time", (q(f"department:wenzheng_satisfaction_rate:ratio{{{UNIT_FILTER}}}",
                                                "{{department}}"),), unit="percentunit", max_value=1),
    )),
    Row("Overdue and second handling", (
        Panel("Overdue open cases by unit",
              (q('sort_desc(department:wenzheng_overdue_open_cases:sum{department=~"$department"})',
                 "{{department}}", instant=True),), kind="bargauge", width=8, height=10),
        Panel("Open and overdue cases", (q("sum(wenzheng_notifier_open_cases)", "open"),
                                         q("sum(wenzheng_notifier_overdue_open_cases)", "overdue")), width=8,
              height=10),
        Panel("Second handling, returns and extensions per day", (
            q('sum(increase(wenzheng_intake_commands_total{command="reopen", outcome="ok"}[1d]))',
              "second handling (reopened)"),
            q('sum(increase(wenzheng_intake_commands_total{command="return", outcome="ok"}[1d]))',
              "returned (misrouted)"),
            q('sum(increase(wenzheng_intake_commands_total{command="approve_extension", outcome="ok"}[1d]))',
              "extensions approved"),
        ), width=8, height=10),
        Panel("Routing outcomes per day (triage = low confidence or returned twice)",
              (q("sum by (outcome) (increase(wenzheng_router_decisions_total[1d]))", "{{outcome}}"),), width=12),
        Panel("Alerts per day by kind", (q("sum by (kind) (increase(wenzheng_notifier_alerts_total[1d]))",
                                           "{{kind}}"),), width=12),
    )),
)

VARIABLES = {
    "wenzheng-service-quality": [
        ("county", "County", "label_values(wenzheng_stats_reply_rate_ratio, county)"),
        ("department", "Unit", 'label_values(wenzheng_stats_reply_rate_ratio{county=~"$county"}, department)'),
    ],
}


def _panel_json(panel: Panel, panel_id: int, x: int, y: int) -> dict[str, Any]:
    defaults: dict[str, Any] = {"unit": panel.unit}
    if panel.unit == "percentunit" or panel.max_value is not None:
        defaults["min"] = 0
    if panel.max_value is not None:
        defaults["max"] = panel.max_value
    out: dict[str, Any] = {
        "id": panel_id,
        "type": panel.kind,
        "title": panel.title,
        "datasource": DATASOURCE,
        "gridPos": {"x": x, "y": y, "w": panel.width, "h": panel.height},
        "fieldConfig": {"defaults": defaults, "overrides": []},
        "options": panel.options or _default_options(panel.kind),
        "targets": [
            {"refId": chr(ord("A") + i), "datasource": DATASOURCE, "expr": query.expr,
             "legendFormat": query.legend, "instant": query.instant, "range": not query.instant}
            for i, query in enumerate(panel.queries)
        ],
    }
    if panel.description:
        out["description"] = panel.description
    return out


def _default_options(kind: str) -> dict[str, Any]:
    if kind == "bargauge":
        return {"orientation": "horizontal", "displayMode": "gradient", "showUnfilled": True,
                "reduceOptions": {"calcs": ["lastNotNull"], "values": False}}
    if kind == "stat":
        return {"reduceOptions": {"calcs": ["lastNotNull"], "values": False}, "colorMode": "value"}
    return {"legend": {"displayMode": "list", "placement": "bottom"}, "tooltip": {"mode": "multi"}}


def _variable(name: str, label: str, query: str) -> dict[str, Any]:
    return {"name": name, "label": label, "type": "query", "datasource": DATASOURCE,
            "query": {"query": query, "refId": f"{name}-variable"}, "definition": query,
            "refresh": 2, "includeAll": True, "multi": True, "allValue": ".*",
            "current": {"selected": True, "text": ["All"], "value": ["$__all"]}, "sort": 1}


def dashboard(uid: str, title: str, description: str, rows: tuple[Row, ...]) -> dict[str, Any]:
    panels: list[dict[str, Any]] = []
    next_id, y = 1, 0
    for row in rows:
        panels.append({"id": next_id, "type": "row", "title": row.title, "collapsed": False,
                       "gridPos": {"x": 0, "y": y, "w": 24, "h": 1}, "panels": []})
        next_id, y, x, row_height = next_id + 1, y + 1, 0, 0
        for panel in row.panels:
            if x + panel.width > 24:
                x, y, row_height = 0, y + row_height, 0
            panels.append(_panel_json(panel, next_id, x, y))
            next_id, x, row_height = next_id + 1, x + panel.width, max(row_height, panel.height)
        y += row_height
    return {
        "uid": uid,
        "title": title,
        "description": description,
        "tags": ["wenzheng"],
        "timezone": "browser",
        "schemaVersion": 39,
        "version": 1,
        "editable": True,
        "refresh": "30s",
        "time": {"from": "now-6h", "to": "now"},
        "templating": {"list": [_variable(*v) for v in VARIABLES.get(uid, [])]},
        "annotations": {"list": []},
        "panels": panels,
    }


def render_all() -> dict[str, str]:
    boards = [
        dashboard("wenzheng-operations", "Wenzheng · Operations",
                  "Throughput, latency, consumer lag, errors, dead letters and replicas of the four services.",
                  OPERATIONS),
        dashboard("wenzheng-service-quality", "Wenzheng · Service quality",
                  "Reply, on-time and satisfaction rates by unit and county; overdue cases and second handling.",
                  SERVICE_QUALITY),
    ]
    return {f"{b['uid']}.json": json.dumps(b, ensure_ascii=False, indent=2) + "\n" for b in boards}


def stale_files(directory: Path = DASHBOARD_DIR) -> list[str]:
    return sorted(name for name, text in render_all().items()
                  if not (directory / name).exists() or (directory / name).read_text(encoding="utf-8") != text)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m scripts.ops.dashboards")
    parser.add_argument("--check", action="store_true")
    args = parser.parse_args(argv)
    if args.check:
        stale = stale_files()
        for name in stale:
            print(f"stale dashboard: deploy/grafana/dashboards/{name} (run `python -m scripts.ops.dashboards`)")
        return 1 if stale else 0
    DASHBOARD_DIR.mkdir(parents=True, exist_ok=True)
    for name, text in render_all().items():
        (DASHBOARD_DIR / name).write_text(text, encoding="utf-8")
        print(f"wrote deploy/grafana/dashboards/{name}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
