"""PIPL retention end to end: a citizen's contact is erased a configured number of days after the case is
closed, from intake's store, from the private compacted contacts topic (a tombstone) and from the notifier's
state (a real notifier worker reads the tombstone and counts the contact it dropped); both count it; the case
and its public text stay."""

from __future__ import annotations

import uuid
from datetime import timedelta

import httpx
import pytest

from harness.people import sign_in
from harness.ports import free_port
from services.intake import metrics
from services.intake.retention import erasure_cutoff
from tests.intake.conftest import open_intake, random_phone, read_topic
from tests.notifier.harness import FakeGateway, WorkerProcess, wait_for, worker_env

pytestmark = pytest.mark.integration
RETENTION_DAYS = 30


async def test_contacts_are_erased_after_the_retention_period_everywhere(kafka_bootstrap, mongo_url, intake_topics,
                                                                         tmp_path) -> None:
    run = uuid.uuid4().hex[:10]
    clock_file = tmp_path / "clock"
    clock_file.write_text("0")
    port = free_port()
    with FakeGateway() as gateway:
        await _story(kafka_bootstrap, mongo_url, intake_topics, tmp_path, run, clock_file, port, gateway)


async def _story(kafka_bootstrap, mongo_url, intake_topics, tmp_path, run, clock_file, port, gateway) -> None:
    async with open_intake(kafka_bootstrap, mongo_url, intake_topics, run, retention_enabled=False,
                           contact_retention_days=RETENTION_DAYS) as intake:
        worker = WorkerProcess(worker_env(kafka=kafka_bootstrap, names=intake_topics, run_id=run, port=port,
                                          sms_url=gateway.url, clock_file=clock_file),
                               tmp_path / "notifier.log").start()
        try:
            await wait_for(worker.readyz, "the notifier worker to be ready")
            phone, kept_phone = random_phone(), random_phone()
            old = (await intake.post(contact_phone=phone, title="小区门口井盖缺失"))["tracking_number"]
            recent = (await intake.post(contact_phone=kept_phone))["tracking_number"]
            old_id, recent_id = (await intake.case_doc(old))["_id"], (await intake.case_doc(recent))["_id"]
            r = await intake.client.post(f"/v1/cases/{old_id}/close", json={"reason": "已处理完毕"},
                                         headers=intake.supervisor)
            assert r.status_code == 200, r.text
            await wait_for(lambda: f"received:{old_id}" in gateway.accepted and f"received:{recent_id}" in
                           gateway.accepted, "the notifier to hold both contacts (it notified both citizens)")

            # not yet: the case closed only now
            eraser = intake.runtime.eraser
            assert await eraser.sweep() == 0
            intake.clock.advance(timedelta(days=RETENTION_DAYS, hours=1))
            await intake.client.post(f"/v1/cases/{recent_id}/close", json={"reason": "已处理完毕"},
                                     headers=intake.supervisor)  # closed "today": keeps its contact
            before = metrics.CONTACTS_ERASED._value.get()
            assert await eraser.sweep_all() == 1
            assert metrics.CONTACTS_ERASED._value.get() == before + 1
            assert await eraser.sweep_all() == 0  # done once

            doc = await intake.case_doc(old)
            assert doc["contact"] is None and doc["phone_last4"] is None and doc["poster_ref"] is None
            assert doc["contact_erased_at"] is not None and doc["closed_at"] < erasure_cutoff(
                intake.clock.now(), RETENTION_DAYS)
            assert (await intake.case_doc(recent))["contact"]["phone"] == kept_phone
            public = (await intake.client.get(f"/v1/posts/{old}")).json()
            assert public["title"] == "小区门口井盖缺失" and public["status"] == "closed"  # the case stays
            supervisor = await sign_in(intake.client, "supervisor")  # the clock moved past the old sign-in's life
            reveal = await intake.client.get(f"/v1/cases/{old_id}", headers=supervisor)
            assert reveal.status_code == 200 and phone not in reveal.text

            # the compacted private topic: the last word on the key is a tombstone
            contacts = await read_topic(intake.bootstrap, intake.names.case_contacts,
                                        until=lambda ms: any(m["key"] == old_id and m["value"] is None for m in ms))
            mine = [m for m in contacts if m["key"] == old_id]
            assert phone in (mine[0]["value"] or "") and mine[-1]["value"] is None

            # the notifier read it: it dropped the one contact it held (and counted that), the other one stays
            await wait_for(lambda: _notifier_metrics_with(port, "wenzheng_notifier_contacts_erased_total 1.0"),
                           "the notifier to drop the erased contact")
        finally:
            worker.stop()


async def _notifier_metrics_with(port: int, needle: str) -> str | None:
    async with httpx.AsyncClient() as http:
        page = (await http.get(f"http://127.0.0.1:{port}/metrics")).text
    return page if needle in page else None
