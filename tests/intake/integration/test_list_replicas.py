"""Two intake replicas over one database: each answers lists from its own in-memory index, and learns of
the other's writes from the case-events topic."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import AsyncIterator

import httpx
import pytest

from harness.people import sign_in, unit_staff_username
from services.common.config import CommonSettings, TopicSettings
from services.intake.api import create_app
from services.intake.auth import Credentials
from tests.intake.conftest import Intake, eventually, open_intake

pytestmark = pytest.mark.integration
UNIT = "zhanggong_gov"


@contextlib.asynccontextmanager
async def second_replica(first: Intake) -> AsyncIterator[httpx.AsyncClient]:
    """Another intake on the same database and topics, as a second pod would run."""
    common = CommonSettings(kafka_bootstrap=first.bootstrap, mongo_url=first.runtime.common.mongo_url,
                            environment="test")
    app = create_app(first.settings, common=common, names=first.names, clock=first.clock,
                     credentials=Credentials.from_mapping(first.credentials))
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app, client=("10.0.0.2", 5555))
        async with httpx.AsyncClient(transport=transport, base_url="http://intake-b") as client:
            yield client


async def test_replica_b_lists_what_replica_a_changed(kafka_bootstrap: str, mongo_url: str,
                                                      test_topics: TopicSettings) -> None:
    async with open_intake(kafka_bootstrap, mongo_url, test_topics, f"replicas_{uuid.uuid4().hex[:8]}") as a:
        tracking, case_id = await a.assigned(UNIT)
        async with second_replica(a) as b:
            staff_b = await sign_in(b, unit_staff_username(UNIT))

            async def listed_on_b(bucket: str) -> list[str]:
                page = (await b.get("/v1/cases", params={"bucket": bucket}, headers=staff_b)).json()
                return [item["case_id"] for item in page["items"]]

            assert case_id in await listed_on_b("to_sign")  # loaded at B's start
            signed = await a.client.post(f"/v1/cases/{case_id}/sign", headers=a.dept(UNIT))
            assert signed.status_code == 200, signed.text
            # A sees its own change at once; B once the event has come round
            mine = (await a.client.get("/v1/cases", params={"bucket": "handling"}, headers=a.dept(UNIT))).json()
            assert case_id in [item["case_id"] for item in mine["items"]]

            async def moved_on_b() -> bool:
                return case_id in await listed_on_b("handling") and case_id not in await listed_on_b("to_sign")
            await eventually(moved_on_b, "replica B to list the signed case as handling")
            counts = (await b.get("/v1/inbox/counts", headers=staff_b)).json()
            assert counts["handling"] >= 1 and counts["to_sign"] == 0

            # a case posted on A after B started reaches B's lists too
            later = await a.post()
            async def posted_on_b() -> bool:
                page = (await b.get("/v1/cases", params={"q": later["tracking_number"]},
                                    headers=a.supervisor)).json()
                return page["total"] == 1
            await eventually(posted_on_b, "replica B to list a case posted on A")
            assert tracking != later["tracking_number"]
