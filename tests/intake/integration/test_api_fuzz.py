"""A bounded `schemathesis run --checks all` against the running app's OpenAPI: 0 failures."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from harness.fuzz import EXAMPLES_PER_OPERATION, fuzz_openapi, running_intake_process
from harness.people import sign_in_sync
from services.common.config import TopicSettings

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def running_intake(kafka_bootstrap: str, mongo_url: str, intake_topics: TopicSettings,
                   tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict]:
    topic_env = {f"WENZHENG_TOPIC_{k.upper()}": v for k, v in intake_topics.model_dump().items()}
    with running_intake_process(kafka_bootstrap, mongo_url, topic_env, tmp_path_factory.mktemp("intake-fuzz"),
                                "fuzz") as running:
        yield running


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
    print(' '.join(report.command), f'-> {report.operations} operations, {report.calls} generated, '
          f'{report.passed} passed, {len(report.failures)} failures')
    assert not report.failures, "\n".join(report.failures[:10]) + "\n" + report.output[-4000:]
