"""The layout the design promises (docs/architecture.md): services never import each other or read each other's
files, shipped code never imports test tooling, and benchmarks share the harness with the tests instead of
importing the tests."""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SERVICES = ROOT / "services"


def _imported_modules(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    names = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.append(node.module)
    return names


def test_no_service_imports_another_service() -> None:
    services = [p.name for p in SERVICES.iterdir() if p.is_dir() and p.name not in ("common", "__pycache__")]
    assert {"intake", "router", "notifier", "stats"} <= set(services)
    crossings = []
    for service in services:
        for path in (SERVICES / service).rglob("*.py"):
            for module in _imported_modules(path):
                parts = module.split(".")
                if parts[0] == "services" and len(parts) > 1 and parts[1] not in ("common", service):
                    crossings.append(f"{path.relative_to(SERVICES.parent)} imports {module}")
    assert not crossings, "\n".join(crossings)


def test_no_service_reads_another_services_files() -> None:
    """Reading by path is importing by other means: no service names another service's folder."""
    services = {"intake", "router", "notifier", "stats"}
    found = []
    for service in services:
        for path in (SERVICES / service).rglob("*.py"):
            text = path.read_text(encoding="utf-8")
            for other in services - {service}:
                if re.search(rf"""["'/]{other}["'/]\s*[/)]|/ *["']{other}["']""", text):
                    found.append(f"{path.name} names {other}'s folder")
    assert not found, found


def _top_level_imports(folder: Path) -> dict[str, set[str]]:
    return {str(path.relative_to(ROOT)): {module.split(".")[0] for module in _imported_modules(path)}
            for path in folder.rglob("*.py")}


def test_shipped_code_never_imports_test_tooling() -> None:
    found = [f"{path} imports {bad}" for path, tops in _top_level_imports(SERVICES).items()
             for bad in tops & {"tests", "harness", "bench"}]
    assert not found, found


def test_benchmarks_and_the_harness_never_import_the_tests() -> None:
    found = [f"{path} imports tests" for folder in (ROOT / "bench", ROOT / "harness")
             for path, tops in _top_level_imports(folder).items() if "tests" in tops]
    assert not found, found


ARCHITECTURE = ROOT / "docs" / "architecture.md"
ROOMS = {"domain.py", "handlers.py", "store.py", "config.py", "metrics.py", "__main__.py"}
# the portal owns no data: its adapter is the HTTP client of intake and stats, its use cases are the pages
PORTAL_ROOMS = {"domain.py", "client.py", "pages", "api.py", "config.py", "metrics.py", "__main__.py"}


def _named_paths() -> list[str]:
    text = ARCHITECTURE.read_text(encoding="utf-8")
    return [p.rstrip("/") for p in re.findall(r"`((?:services|tests|harness|bench|docs)/[^`\s]*)`", text)]


def test_every_path_the_architecture_page_names_exists() -> None:
    named = _named_paths()
    assert len(named) > 40  # the page names each room of each service
    missing = [path for path in named if "<" not in path and not (ROOT / path).exists()]
    assert not missing, missing


def test_every_service_has_the_rooms_the_page_promises() -> None:
    services = [p for p in SERVICES.iterdir() if p.is_dir() and p.name not in ("common", "__pycache__")]
    text = ARCHITECTURE.read_text(encoding="utf-8")
    problems = []
    for service in services:
        present = {p.name for p in service.iterdir()}
        wanted = PORTAL_ROOMS if service.name == "portal" else ROOMS
        problems += [f"{service.name} has no {room}" for room in sorted(wanted - present)]
        if not present & {"api.py", "agents.py"}:
            problems.append(f"{service.name} has no entrypoint (api.py or agents.py)")
        if f"## {service.name} " not in text:
            problems.append(f"docs/architecture.md has no section for {service.name}")
    assert not problems, problems
