"""Schemathesis over a running service's OpenAPI: every operation, generated requests, no 5xx allowed.

The run is bounded in `make test` (15 examples per operation) and longer in `make chaos`
(WENZHENG_FUZZ_EXAMPLES). Schemathesis' pytest plugin does not run on pytest 9, so each operation's
hypothesis strategy is driven directly.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import not_a_server_error

from tests.harness.ports import free_port

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES_PER_OPERATION = int(os.environ.get("WENZHENG_FUZZ_EXAMPLES", "15"))


@contextlib.contextmanager
def running_service(module: str, env: dict[str, str], log_path: Path) -> Iterator[str]:
    """`python -m <module>` on a free port with only the given WENZHENG_* settings; yields its base URL
    once the service says it is ready."""
    port = free_port()
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("WENZHENG_")}
    full_env.update({"WENZHENG_PORT": str(port), "WENZHENG_ENVIRONMENT": "test", "WENZHENG_LOG_LEVEL": "WARNING",
                     **env})
    url = f"http://127.0.0.1:{port}"
    with log_path.open("wb") as log:
        process = subprocess.Popen([sys.executable, "-m", module], cwd=ROOT, env=full_env, stdout=log,
                                   stderr=subprocess.STDOUT)
        try:
            deadline = time.monotonic() + 60
            while True:  # ready, not just alive: /readyz answers 503 by design until the consumer has joined
                if process.poll() is not None:
                    raise RuntimeError(log_path.read_text(errors="replace")[-3000:])
                try:
                    if httpx.get(f"{url}/readyz", timeout=1).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                if time.monotonic() > deadline:
                    raise RuntimeError(f"{module} not ready in 60 s:\n" + log_path.read_text(errors="replace")[-3000:])
                time.sleep(0.2)
            yield url
        finally:
            process.terminate()
            try:
                process.wait(20)
            except subprocess.TimeoutExpired:
                process.kill()


@dataclass
class FuzzReport:
    operations: int = 0
    calls: int = 0
    failures: list[str] = field(default_factory=list)


def fuzz_openapi(url: str, headers: dict[str, str] | None = None) -> FuzzReport:
    schema = schemathesis.openapi.from_url(f"{url}/openapi.json")
    report = FuzzReport()
    for result in schema.get_all_operations():
        operation = result.ok()
        if operation.path == "/readyz":  # 503 is its documented answer while a dependency is away
            continue
        report.operations += 1
        _fuzz_operation(operation, headers or {}, report)
    return report


def _fuzz_operation(operation, headers: dict[str, str], report: FuzzReport) -> None:
    @given(case=operation.as_strategy())
    @settings(max_examples=EXAMPLES_PER_OPERATION, deadline=None, suppress_health_check=list(HealthCheck),
              database=None)
    def check(case) -> None:
        report.calls += 1
        try:
            case.call_and_validate(headers=headers, checks=[not_a_server_error], timeout=30)
        except Exception as exc:
            report.failures.append(f"{operation.label}: {type(exc).__name__}: {str(exc)[:500]}")
            raise

    with contextlib.suppress(Exception):  # recorded in failures; go on with the next operation
        check()
