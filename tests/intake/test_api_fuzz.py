"""A bounded schemathesis run against the running app's OpenAPI: no input may cause a 5xx."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator

import httpx
import pytest
from pymongo import MongoClient

from services.common.config import TopicSettings
from tests.harness.fuzz import EXAMPLES_PER_OPERATION, fuzz_openapi, running_service
from tests.harness.people import sign_in_sync

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def running_intake(kafka_bootstrap: str, mongo_url: str, intake_topics: TopicSettings,
                   tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict]:
    run = uuid.uuid4().hex[:10]
    workdir = tmp_path_factory.mktemp("intake-fuzz")
    credentials = workdir / "credentials.json"
    env = {
        "WENZHENG_KAFKA_BOOTSTRAP": kafka_bootstrap, "WENZHENG_MONGO_URL": mongo_url,
        "WENZHENG_INTAKE_DATABASE": f"wenzheng_intake_fuzz_{run}",
        "WENZHENG_INTAKE_CREDENTIALS_FILE": str(credentials), "WENZHENG_INTAKE_CONSUMER_GROUP": f"fuzz-{run}",
        "WENZHENG_INTAKE_RATE_LIMIT_ENABLED": "false", "WENZHENG_INTAKE_LOGIN_RATE_PER_IP": "100000",
        "WENZHENG_INTAKE_PASSWORD_TIME_COST": "1", "WENZHENG_INTAKE_PASSWORD_MEMORY_KIB": "1024",
        "WENZHENG_INTAKE_PASSWORD_PARALLELISM": "1", "WENZHENG_INTAKE_ATTACHMENTS_DIR": str(workdir / "attachments"),
        **{f"WENZHENG_TOPIC_{k.upper()}": v for k, v in intake_topics.model_dump().items()},
    }
    subprocess.run([sys.executable, "-m", "services.intake", "demo-accounts", "--out", str(credentials)],
                   env={**os.environ, **env}, check=True, capture_output=True, timeout=120)
    try:
        with running_service("services.intake", env, workdir / "intake.log") as url:
            yield {"url": url, "credentials": json.loads(credentials.read_text())}
    finally:
        with MongoClient(mongo_url) as client:
            client.drop_database(f"wenzheng_intake_fuzz_{run}")


def test_no_input_causes_a_server_error(running_intake: dict) -> None:
    """Every operation, as a person who is both admin and supervisor (so the case and admin routes are
    reached too)."""
    url, accounts = running_intake["url"], running_intake["credentials"]["accounts"]
    admin = sign_in_sync(url, "admin", accounts["admin"]["password"])
    me = httpx.get(f"{url}/v1/auth/me", headers=admin, timeout=10).json()
    patched = httpx.patch(f"{url}/v1/admin/accounts/{me['id']}", json={"roles": ["admin", "supervisor"]},
                          headers=admin, timeout=10)
    assert patched.status_code == 200, patched.text
    headers = sign_in_sync(url, "admin", accounts["admin"]["password"])
    report = fuzz_openapi(url, headers)
    assert report.operations >= 20 and report.calls >= report.operations * min(5, EXAMPLES_PER_OPERATION)
    assert not report.failures, "\n".join(report.failures[:10])
