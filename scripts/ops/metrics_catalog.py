"""Which Prometheus series the code exports, and which ones a PromQL expression names.

The code is scanned, not imported (services may need Kafka or a model to import): every call of
prometheus_client's ``Counter``/``Gauge``/``Histogram``/``Summary``/``Info``/``Enum`` whose name is a
literal, a module constant or a ``metric_name(...)`` call; every ``ConsumerHealth(...)`` and
``Instrumentator(...)`` (their series are taken from the real classes in a private registry); and the
process/platform collectors of the default registry that ``render_metrics`` serves.

    python -m scripts.ops.metrics_catalog      # print every exported series name, by source file
"""

from __future__ import annotations

import ast
import re
import warnings
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
SERVICES_DIR = ROOT / "services"
SERVICE_NAMES = ("intake", "router", "notifier", "stats", "portal")

CONSTRUCTORS = {"Counter", "Gauge", "Histogram", "Summary", "Info", "Enum"}
# Series Prometheus makes itself: one set per scrape target, and the state of its alerts.
PROMETHEUS_BUILTINS = {"up", "scrape_duration_seconds", "scrape_samples_scraped",
                       "scrape_samples_post_metric_relabeling", "scrape_series_added", "ALERTS", "ALERTS_FOR_STATE"}


@dataclass
class Catalog:
    """Exported series name -> the files that export it."""

    series: dict[str, set[str]] = field(default_factory=dict)
    unresolved: list[str] = field(default_factory=list)

    def add(self, names: Iterable[str], source: str) -> None:
        for name in names:
            self.series.setdefault(name, set()).add(source)

    def exports(self, name: str) -> bool:
        return name in self.series

    def matching(self, pattern: str) -> list[str]:
        regex = re.compile(pattern)
        return sorted(n for n in self.series if regex.fullmatch(n))


# ------------------------------------------------------------------------------------------ series naming


def series_of(kind: str, name: str) -> set[str]:
    """The series names prometheus_client exposes for one metric family."""
    if kind == "Counter":
        base = name.removesuffix("_total")
        return {f"{base}_total", f"{base}_created"}
    if kind == "Histogram":
        return {f"{name}_bucket", f"{name}_sum", f"{name}_count", f"{name}_created"}
    if kind == "Summary":
        return {name, f"{name}_sum", f"{name}_count", f"{name}_created"}
    if kind == "Info":
        return {f"{name}_info"}
    return {name}


def _registry_series(registry: Any) -> set[str]:
    return {sample.name for family in registry.collect() for sample in family.samples}


def consumer_health_series(service: str) -> set[str]:
    from prometheus_client import CollectorRegistry

    from services.common.metrics import ConsumerHealth

    registry = CollectorRegistry()
    health = ConsumerHealth(service, registry=registry)
    health.lag.labels("topic").set(0)
    return _registry_series(registry)


def instrumentator_series(init_kwargs: dict[str, Any], instrument_kwargs: dict[str, Any]) -> set[str]:
    """Instrument a throwaway app with the library itself, serve one request, and list what it exports."""
    from fastapi import FastAPI
    from prometheus_client import CollectorRegistry
    from prometheus_fastapi_instrumentator import Instrumentator

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # starlette's note about httpx, irrelevant here
        from fastapi.testclient import TestClient

    registry = CollectorRegistry()
    app = FastAPI()

    @app.get("/probe")
    def probe() -> dict[str, str]:
        return {}

    init_kwargs = {k: v for k, v in init_kwargs.items() if k != "excluded_handlers"}
    Instrumentator(registry=registry, **init_kwargs).instrument(app, **instrument_kwargs)
    with TestClient(app) as client:
        client.get("/probe")
    return _registry_series(registry)


def default_registry_series() -> set[str]:
    """Process and Python collectors that prometheus_client registers in its default REGISTRY."""
    from prometheus_client import CollectorRegistry, GCCollector, PlatformCollector, ProcessCollector

    registry = CollectorRegistry()
    ProcessCollector(registry=registry)
    PlatformCollector(registry=registry)
    GCCollector(registry=registry)
    return _registry_series(registry)


# ------------------------------------------------------------------------------------------ code scanning


def _literal(node: ast.AST, constants: dict[str, str]) -> Any:
    if isinstance(node, ast.Name) and node.id in constants:
        return constants[node.id]
    if isinstance(node, ast.Call) and _callee(node) == "metric_name":
        from services.common.metrics import metric_name

        args = [_literal(a, constants) for a in node.args]
        kwargs = {k.arg: _literal(k.value, constants) for k in node.keywords if k.arg}
        if any(a is None for a in args) or any(v is None for v in kwargs.values()):
            return None
        return metric_name(*args, **kwargs)
    try:
        return ast.literal_eval(node)
    except (ValueError, SyntaxError, TypeError):
        return None


def _callee(call: ast.Call) -> str:
    func = call.func
    if isinstance(func, ast.Name):
        return func.id
    if isinstance(func, ast.Attribute):
        return func.attr
    return ""


def _module_constants(tree: ast.Module) -> dict[str, str]:
    constants: dict[str, str] = {}
    for stmt in tree.body:
        if isinstance(stmt, ast.Assign) and len(stmt.targets) == 1 and isinstance(stmt.targets[0], ast.Name):
            value = _literal(stmt.value, constants)
            if isinstance(value, str):
                constants[stmt.targets[0].id] = value
    return constants


def _kwargs(call: ast.Call, constants: dict[str, str]) -> dict[str, Any]:
    out = {}
    for keyword in call.keywords:
        if keyword.arg:
            value = _literal(keyword.value, constants)
            if value is not None:
                out[keyword.arg] = value
    return out


def _family_name(call: ast.Call, constants: dict[str, str]) -> str | None:
    name_node = call.args[0] if call.args else next((k.value for k in call.keywords if k.arg == "name"), None)
    name = _literal(name_node, constants) if name_node is not None else None
    if not isinstance(name, str):
        return None
    kwargs = _kwargs(call, constants)
    full = "_".join(part for part in (kwargs.get("namespace"), kwargs.get("subsystem"), name) if part)
    unit = kwargs.get("unit")
    if unit and not full.endswith(f"_{unit}"):
        full = f"{full}_{unit}"
    return full


def scan_source(source: str, origin: str, catalog: Catalog) -> None:
    tree = ast.parse(source)
    constants = _module_constants(tree)
    imports_prometheus = "prometheus_client" in source
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        callee = _callee(node)
        if callee in CONSTRUCTORS and imports_prometheus:
            name = _family_name(node, constants)
            if name is None:
                catalog.unresolved.append(f"{origin}:{node.lineno}: {callee}(...) with a name not known statically")
            else:
                catalog.add(series_of(callee, name), origin)
        elif callee == "ConsumerHealth" and node.args:
            service = _literal(node.args[0], constants)
            if isinstance(service, str):
                catalog.add(consumer_health_series(service), origin)
            else:
                catalog.unresolved.append(f"{origin}:{node.lineno}: ConsumerHealth(...) service not known statically")
        elif callee == "instrument" and isinstance(node.func, ast.Attribute):
            target = node.func.value
            if isinstance(target, ast.Call) and _callee(target) == "Instrumentator":
                catalog.add(instrumentator_series(_kwargs(target, constants), _kwargs(node, constants)), origin)
    if "render_metrics" in source or "generate_latest" in source:
        catalog.add(default_registry_series(), f"{origin} (default registry collectors)")


def scan_services(services_dir: Path = SERVICES_DIR) -> Catalog:
    catalog = Catalog()
    for path in sorted(services_dir.rglob("*.py")):
        if path.name == "metrics.py" and path.parent.name == "common":
            continue  # the helpers themselves; their users are found where they call them
        source = path.read_text(encoding="utf-8")
        if not any(word in source for word in ("prometheus_client", "ConsumerHealth", "Instrumentator",
                                                "render_metrics")):
            continue
        scan_source(source, str(path.relative_to(services_dir.parent)), catalog)
    return catalog


def existing_services(services_dir: Path = SERVICES_DIR) -> set[str]:
    return {name for name in SERVICE_NAMES if any((services_dir / name).glob("*.py"))}


# ------------------------------------------------------------------------------------------ PromQL


@dataclass(frozen=True)
class Selection:
    """What one PromQL expression needs from the scraped data."""

    names: frozenset[str]
    name_patterns: frozenset[str]


_KEYWORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "and", "or", "unless", "bool",
             "offset", "inf", "nan", "atan2", "start", "end"}
_TOKEN = re.compile(
    r"""(?P<string>"(?:\\.|[^"\\])*"|'(?:\\.|[^'\\])*'|`[^`]*`)
      |(?P<braces>\{[^{}]*\})
      |(?P<range>\[[^\]]*\])
      |(?P<var>\$\{[^}]*\}|\$\w+)
      |(?P<number>(?<![\w:])\d[\w.]*)
      |(?P<ident>[A-Za-z_:][A-Za-z0-9_:]*)
      |(?P<other>\s+|.)""",
    re.VERBOSE | re.DOTALL,
)
_NAME_MATCHER = re.compile(r"""__name__\s*(=~|=)\s*("(?:\\.|[^"\\])*"|'(?:\\.|[^'\\])*')""")


def select(expr: str) -> Selection:
    """Metric names and ``__name__`` regexes an expression reads (functions, labels, keywords dropped)."""
    tokens = [(m.lastgroup, m.group()) for m in _TOKEN.finditer(expr)]
    names: set[str] = set()
    patterns: set[str] = set()
    significant = [(kind, text) for kind, text in tokens if not (kind == "other" and text.isspace())]
    skip_group = False
    for index, (kind, text) in enumerate(significant):
        following = significant[index + 1][1] if index + 1 < len(significant) else ""
        if kind == "braces":
            for op, quoted in _NAME_MATCHER.findall(text):
                value = bytes(quoted[1:-1], "utf-8").decode("unicode_escape")
                (patterns if op == "=~" else names).add(value)
            continue
        if kind == "other" and text == "(" and skip_group:
            skip_group = "inside"
            continue
        if skip_group == "inside":
            if text == ")":
                skip_group = False
            continue
        skip_group = False
        if kind != "ident":
            continue
        if text in ("by", "without", "on", "ignoring", "group_left", "group_right"):
            skip_group = True
            continue
        if text in _KEYWORDS or following in ("(", "by", "without"):  # functions and aggregations
            continue
        names.add(text)
    return Selection(frozenset(names), frozenset(patterns))


def grafana_query_names(query: str) -> Selection:
    """Grafana template queries: ``label_values(metric, label)``, ``query_result(expr)`` or plain PromQL."""
    match = re.fullmatch(r"\s*label_values\(\s*(?P<body>.*)\)\s*", query, re.DOTALL)
    if match:
        body = match["body"]
        selector = body.rsplit(",", 1)[0] if "," in body else ""
        return select(selector) if selector else Selection(frozenset(), frozenset())
    match = re.fullmatch(r"\s*query_result\((?P<body>.*)\)\s*", query, re.DOTALL)
    return select(match["body"] if match else query)


def main() -> int:
    catalog = scan_services()
    by_file: dict[str, list[str]] = {}
    for name, sources in catalog.series.items():
        for source in sources:
            by_file.setdefault(source, []).append(name)
    for source in sorted(by_file):
        print(f"# {source}")
        for name in sorted(by_file[source]):
            print(f"  {name}")
    for problem in catalog.unresolved:
        print(f"! {problem}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
