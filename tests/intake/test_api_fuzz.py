"""A bounded schemathesis run against the running app's OpenAPI: no input may cause a 5xx."""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import not_a_server_error

from services.common.config import TopicSettings
from services.intake.auth import ensure_credentials_file
from services.intake.directory import BUILTIN_UNITS

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def running_intake(kafka_bootstrap: str, mongo_url: str, intake_topics: TopicSettings,
                   tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict]:
    run = uuid.uuid4().hex[:10]
    workdir = tmp_path_factory.mktemp("intake-fuzz")
    credentials = workdir / "credentials.json"
    ensure_credentials_file(credentials, sorted(u.id for u in BUILTIN_UNITS))
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("WENZHENG_")}
    env.update({
        "WENZHENG_PORT": str(port), "WENZHENG_KAFKA_BOOTSTRAP": kafka_bootstrap, "WENZHENG_MONGO_URL": mongo_url,
        "WENZHENG_ENVIRONMENT": "test", "WENZHENG_INTAKE_DATABASE": f"wenzheng_intake_fuzz_{run}",
        "WENZHENG_INTAKE_CREDENTIALS_FILE": str(credentials), "WENZHENG_INTAKE_CONSUMER_GROUP": f"fuzz-{run}",
        "WENZHENG_INTAKE_RATE_LIMIT_ENABLED": "false", "WENZHENG_LOG_LEVEL": "WARNING",
    })
    env.update({f"WENZHENG_TOPIC_{k.upper()}": v for k, v in intake_topics.model_dump().items()})
    log = open(workdir / "intake.log", "wb")
    process = subprocess.Popen([sys.executable, "-m", "services.intake"], cwd=ROOT, env=env, stdout=log,
                               stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(300):
            if process.poll() is not None:
                raise RuntimeError((workdir / "intake.log").read_text(errors="replace")[-3000:])
            try:
                if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.1)
        yield {"url": url, "credentials": json.loads(credentials.read_text()), "log": workdir / "intake.log"}
    finally:
        process.terminate()
        process.wait(20)
        log.close()
        from pymongo import MongoClient

        with MongoClient(mongo_url) as client:
            client.drop_database(f"wenzheng_intake_fuzz_{run}")


def _fuzz_operation(operation, headers: dict[str, str], failures: list[str], calls: list[int]) -> None:
    @given(case=operation.as_strategy())
    @settings(max_examples=15, deadline=None, suppress_health_check=list(HealthCheck), database=None)
    def check(case) -> None:
        calls[0] += 1
        try:
            case.call_and_validate(headers=headers, checks=[not_a_server_error], timeout=30)
        except Exception as exc:
            failures.append(f"{operation.label}: {type(exc).__name__}: {str(exc)[:500]}")
            raise

    with contextlib.suppress(Exception):  # recorded in failures; go on with the next operation
        check()


def test_no_input_causes_a_server_error(running_intake: dict) -> None:
    """Every operation, 15 generated requests each (schemathesis' pytest plugin does not run on pytest 9,
    so the operations' hypothesis strategies are driven directly)."""
    schema = schemathesis.openapi.from_url(f"{running_intake['url']}/openapi.json")
    token = running_intake["credentials"]["supervisors"]["supervisor"]
    failures: list[str] = []
    calls = [0]
    operations = [result.ok() for result in schema.get_all_operations()]
    for operation in operations:
        _fuzz_operation(operation, {"Authorization": f"Bearer {token}"}, failures, calls)
    assert len(operations) >= 20 and calls[0] >= len(operations) * 5
    assert not failures, "\n".join(failures[:10])
