"""A bounded `schemathesis run --checks all` against the stats service's OpenAPI: 0 failures."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
from pymongo import MongoClient

from harness.fuzz import EXAMPLES_PER_OPERATION, fuzz_openapi, running_service
from services.common.config import TopicSettings

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def stats_url(kafka_bootstrap: str, mongo_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    run = uuid.uuid4().hex[:10]
    names = TopicSettings(**{k: f"fuzz.{run}.{v}" for k, v in TopicSettings().model_dump().items()})
    env = {
        "WENZHENG_KAFKA_BOOTSTRAP": kafka_bootstrap, "WENZHENG_MONGO_URL": mongo_url,
        "WENZHENG_STATS_DATABASE": f"wenzheng_stats_fuzz_{run}", "WENZHENG_STATS_CONSUMER_GROUP": f"fuzz-{run}",
        **{f"WENZHENG_TOPIC_{k.upper()}": v for k, v in names.model_dump().items()},
    }
    try:
        with running_service("services.stats", env, tmp_path_factory.mktemp("stats-fuzz") / "stats.log") as url:
            yield url
    finally:
        with MongoClient(mongo_url) as client:
            client.drop_database(f"wenzheng_stats_fuzz_{run}")


def test_no_input_causes_a_server_error(stats_url: str) -> None:
    report = fuzz_openapi(stats_url)
    assert report.operations >= 8 and report.calls >= report.operations * min(5, EXAMPLES_PER_OPERATION)
    print(' '.join(report.command), f'-> {report.operations} operations, {report.calls} generated, '
          f'{report.passed} passed, {len(report.failures)} failures')
    assert not report.failures, "\n".join(report.failures[:10]) + "\n" + report.output[-4000:]
