"""Every PromQL expression the monitoring config holds: Prometheus rules and Grafana dashboard queries."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import yaml

from scripts.ops.metrics_catalog import Selection, grafana_query_names, select

ROOT = Path(__file__).resolve().parents[2]
RULE_FILES = sorted((ROOT / "deploy" / "prometheus" / "rules").glob("*.yml"))
DASHBOARD_FILES = sorted((ROOT / "deploy" / "grafana" / "dashboards").glob("*.json"))


def rules() -> Iterator[tuple[str, dict]]:
    for path in RULE_FILES:
        for group in yaml.safe_load(path.read_text(encoding="utf-8"))["groups"]:
            for rule in group["rules"]:
                yield f"{path.name}: {rule.get('record') or rule.get('alert')}", rule


def recorded_names() -> set[str]:
    return {rule["record"] for _, rule in rules() if "record" in rule}


def dashboards() -> Iterator[tuple[Path, dict]]:
    for path in DASHBOARD_FILES:
        yield path, json.loads(path.read_text(encoding="utf-8"))


def panels(board: dict) -> Iterator[dict]:
    for panel in board.get("panels", []):
        yield panel
        yield from panel.get("panels", [])


def references() -> Iterator[tuple[str, Selection]]:
    """(where, what it reads) for every rule expression, panel target and template variable."""
    for where, rule in rules():
        yield where, select(rule["expr"])
    for path, board in dashboards():
        for panel in panels(board):
            for target in panel.get("targets", []):
                yield f"{path.name}: panel {panel['title']!r} {target['refId']}", select(target["expr"])
        for variable in board.get("templating", {}).get("list", []):
            query = variable.get("query")
            text = query.get("query", "") if isinstance(query, dict) else query or ""
            if variable.get("type") == "query":
                yield f"{path.name}: variable ${variable['name']}", grafana_query_names(text)
