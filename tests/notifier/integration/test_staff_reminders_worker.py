"""Staff reminders and 督办 notices through a real worker process against the real broker: on the
notifications topic once per person and channel, delivered to the gateway, never on a public topic."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import date, timedelta
from pathlib import Path

import pytest

from harness.ports import free_port
from services.common.events import utcnow
from services.common.kafka import EventPublisher, new_producer
from services.common.workdays import default_calendar
from tests.notifier.fakes import CaseScript
from tests.notifier.fakes import staff_contact as contact
from tests.notifier.harness import FakeGateway, WorkerProcess, read_topic, wait_for, worker_env

pytestmark = pytest.mark.integration


@asynccontextmanager
async def worker_after(events: list, kafka_bootstrap: str, test_topics, run_id: str,
                       tmp_path: Path) -> AsyncIterator[tuple[FakeGateway, Path]]:
    """Publish ``events`` (staff contacts, case events), then run a real worker against an SMS gateway; yields
    the gateway and the worker's clock-offset file once it is ready; stops it afterwards."""
    clock_file = tmp_path / "clock_offset"
    clock_file.write_text("0")
    producer = new_producer(kafka_bootstrap)
    await producer.start()
    publisher = EventPublisher(producer, source="/test/intake", names=test_topics)
    for event in events:
        await publisher.publish(event)
    with FakeGateway() as gateway:
        env = worker_env(kafka=kafka_bootstrap, names=test_topics, run_id=run_id, port=free_port(),
                         sms_url=gateway.url, clock_file=clock_file)
        worker = WorkerProcess(env, tmp_path / "worker.log").start()
        try:
            await wait_for(worker.readyz, "the worker ready")
            yield gateway, clock_file
        finally:
            worker.stop()
            await producer.stop()


@pytest.mark.integration
async def test_a_worker_sends_staff_reminders_on_the_notifications_topic(kafka_bootstrap, test_topics,
                                                                         run_id, tmp_path):
    now = utcnow()
    script = CaseScript("c-staff", tracking="WZ2609-STAF-0001")
    deadline = default_calendar().add_working_days(now, 1)
    events = [contact("p-staff", ["unit_staff"], at=now),
              contact("p-elsewhere", ["unit_staff"], unit="nankang_gov", at=now),
              script.submitted(now), script.assigned(now, deadline)]
    async with worker_after(events, kafka_bootstrap, test_topics, run_id, tmp_path) as (gateway, clock):
        # noon of the day after the deadline in Shanghai: nobody's quiet hours, the unsigned alert is due
        target = deadline + timedelta(hours=12)
        clock.write_text(str((target - utcnow()).total_seconds()))

        async def staff_notifications() -> list[dict]:
            events = await read_topic(kafka_bootstrap, test_topics.notifications)
            return [e["data"] for _, e in events if e["data"]["kind"] == "staff_alert"]
        sent = await wait_for(staff_notifications, "a staff reminder on the notifications topic")
        await wait_for(lambda: any(k.startswith("staff:") for k in gateway.accepted), "the gateway to get it")
    assert {n["person_id"] for n in sent} == {"p-staff"}  # only the unit's own people
    assert {n["channel"] for n in sent} == {"sms"} and all(n["to"] == "13900000000" for n in sent)
    assert all(n["case_id"] == "c-staff" for n in sent)
    public = await read_topic(kafka_bootstrap, test_topics.alerts)
    assert "13900000000" not in str(public) and "p-staff" not in str(public)


@pytest.mark.integration
async def test_a_worker_sends_a_supervision_notice_to_the_units_people_once(kafka_bootstrap, test_topics,
                                                                            run_id, tmp_path):
    now = utcnow()
    script = CaseScript("c-notice", tracking="WZ2609-DUBN-0001")
    deadline = default_calendar().add_working_days(now, 10)
    people = [contact("p-staff", ["unit_staff"], at=now), contact("p-lead", ["unit_lead"], at=now),
              contact("p-elsewhere", ["unit_staff"], unit="nankang_gov", at=now),
              contact("p-office", ["supervisor"], unit=None, at=now)]
    case = [script.submitted(now), script.assigned(now, deadline), script.contact(now)]
    notice = script.notice_issued(now, "n-dubn", date(2026, 12, 5), method="meeting")
    events = [*people, *case, notice, notice]  # the notice delivered twice
    async with worker_after(events, kafka_bootstrap, test_topics, run_id, tmp_path) as (gateway, _):
        async def notices() -> list[dict]:
            events = await read_topic(kafka_bootstrap, test_topics.notifications)
            found = [e["data"] for _, e in events if e["data"]["notification_id"].startswith("staff:notice:")]
            return found if len(found) >= 2 else []
        await wait_for(notices, "the notice on the notifications topic")
        await wait_for(lambda: sum(k.startswith("staff:notice:") for k in gateway.accepted) >= 2,
                       "the gateway to get both")
        await asyncio.sleep(2)  # time for a duplicate, if there were one
        sent = await notices()
    assert sorted(n["person_id"] for n in sent) == ["p-lead", "p-staff"]  # once each, only the unit's people
    assert {n["text"] for n in sent} == {
        "【问政督办】章贡区人民政府：市督办办公室对工单WZ2609-DUBN-0001会议督办，请于2026年12月5日前答复。"}
    assert all(n["to"] == "13900000000" and n["kind"] == "staff_alert" for n in sent)
    assert "13800138000" not in json.dumps(sent)
