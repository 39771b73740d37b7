"""Load shedding through the HTTP API: an overloaded intake refuses new posts at once with 503, the error
envelope in Chinese and Retry-After, and still takes the units' and supervisors' commands."""

from __future__ import annotations

from services.intake import metrics
from tests.intake.conftest import Intake, a_post


async def test_an_overloaded_intake_sheds_posts_but_not_staff_commands(intake: Intake) -> None:
    tn, case_id = await intake.assigned("zhanggong_gov")
    service = intake.runtime.service
    before = metrics.SHED.labels("outbox_age")._value.get()
    service.outbox_age = lambda: intake.settings.shed_max_outbox_age_seconds + 1  # the relay falls behind
    try:
        refused = await intake.client.post("/v1/posts", json=a_post())
        assert refused.status_code == 503, refused.text
        assert refused.headers["Retry-After"] == str(intake.settings.shed_retry_after_seconds)
        error = refused.json()["error"]
        assert error["code"] == "overloaded" and "请稍后重试" in error["message"] and error["field"] is None
        assert metrics.SHED.labels("outbox_age")._value.get() == before + 1

        signed = await intake.client.post(f"/v1/cases/{case_id}/sign", headers=intake.dept("zhanggong_gov"))
        assert signed.status_code == 200 and signed.json()["status"] == "signed"
        assert (await intake.client.get(f"/v1/posts/{tn}")).status_code == 200
    finally:
        service.outbox_age = intake.runtime.relay.falling_behind_seconds
    assert (await intake.client.post("/v1/posts", json=a_post())).status_code == 201
