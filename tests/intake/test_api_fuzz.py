"""A bounded schemathesis run against the running app's OpenAPI: no input may cause a 5xx."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator

import pytest
from pymongo import MongoClient

from services.common.config import TopicSettings
from services.common.reference import reference
from services.intake.auth import ensure_credentials_file
from tests.harness.fuzz import EXAMPLES_PER_OPERATION, fuzz_openapi, running_service

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def running_intake(kafka_bootstrap: str, mongo_url: str, intake_topics: TopicSettings,
                   tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict]:
    run = uuid.uuid4().hex[:10]
    workdir = tmp_path_factory.mktemp("intake-fuzz")
    credentials = workdir / "credentials.json"
    ensure_credentials_file(credentials, sorted(u.id for u in reference().units.units))
    env = {
        "WENZHENG_KAFKA_BOOTSTRAP": kafka_bootstrap, "WENZHENG_MONGO_URL": mongo_url,
        "WENZHENG_INTAKE_DATABASE": f"wenzheng_intake_fuzz_{run}",
        "WENZHENG_INTAKE_CREDENTIALS_FILE": str(credentials), "WENZHENG_INTAKE_CONSUMER_GROUP": f"fuzz-{run}",
        "WENZHENG_INTAKE_RATE_LIMIT_ENABLED": "false",
        **{f"WENZHENG_TOPIC_{k.upper()}": v for k, v in intake_topics.model_dump().items()},
    }
    try:
        with running_service("services.intake", env, workdir / "intake.log") as url:
            yield {"url": url, "credentials": json.loads(credentials.read_text())}
    finally:
        with MongoClient(mongo_url) as client:
            client.drop_database(f"wenzheng_intake_fuzz_{run}")


def test_no_input_causes_a_server_error(running_intake: dict) -> None:
    """Every operation, with a supervisor's token (so the unit and supervisor routes are reached too)."""
    token = running_intake["credentials"]["supervisors"]["supervisor"]
    report = fuzz_openapi(running_intake["url"], {"Authorization": f"Bearer {token}"})
    assert report.operations >= 20 and report.calls >= report.operations * min(5, EXAMPLES_PER_OPERATION)
    assert not report.failures, "\n".join(report.failures[:10])
