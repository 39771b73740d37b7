"""A failing gateway (HTTP 500 from a fake server) is retried, then dead-lettered, while alerts and the other
channel keep flowing. A real worker process against the real broker and database."""

from __future__ import annotations

from collections import Counter
from collections.abc import Awaitable
from datetime import timedelta

import httpx
import pytest

from harness.ports import free_port
from services.common.events import CaseContact, utcnow
from services.common.kafka import EventPublisher, new_producer
from services.common.workdays import default_calendar
from tests.notifier.fakes import CaseScript
from tests.notifier.harness import FakeGateway, WorkerProcess, read_topic, wait_for, worker_env

pytestmark = pytest.mark.integration
ATTEMPTS = 3


async def test_failing_sms_gateway_is_retried_then_dead_lettered_while_the_rest_flows(
        kafka_bootstrap, test_topics, run_id, tmp_path):
    clock_file = tmp_path / "clock_offset"
    clock_file.write_text("0")
    producer = new_producer(kafka_bootstrap)
    await producer.start()
    publisher = EventPublisher(producer, source="/test/intake", names=test_topics)
    now = utcnow()
    deadline = default_calendar().add_working_days(now, 1)
    sms_cases = [CaseScript(f"sms-{i}", tracking=f"WZ-SMS-{i:04d}") for i in range(3)]
    wechat_cases = [CaseScript(f"wx-{i}", tracking=f"WZ-WX-{i:04d}") for i in range(3)]
    with FakeGateway(fail_with=500) as sms, FakeGateway() as wechat:
        env = worker_env(kafka=kafka_bootstrap, names=test_topics, run_id=run_id, port=free_port(),
                         sms_url=sms.url, clock_file=clock_file, WENZHENG_NOTIFIER_WECHAT_URL=wechat.url,
                         WENZHENG_NOTIFIER_MAX_ATTEMPTS=str(ATTEMPTS))
        worker = WorkerProcess(env, tmp_path / "worker.log").start()
        try:
            for i, s in enumerate(sms_cases):
                await publisher.publish(s.contact(now, phone=f"1390000{i:04d}"))
            for s in wechat_cases:
                await publisher.publish(CaseContact(case_id=s.case_id, tracking_number=s.tracking,
                                                    wechat_openid=f"openid-{s.case_id}", preferred_channel="wechat",
                                                    recorded_at=now))
            await producer.send_and_wait(test_topics.case_events, b"not an event", key=b"junk")  # dead-lettered
            for s in sms_cases + wechat_cases:
                await publisher.publish(s.submitted(now))
                await publisher.publish(s.assigned(now, deadline, township=f"镇{s.case_id}"))
            await wait_for(worker.readyz, "worker ready")
            clock_file.write_text(str((deadline + timedelta(hours=1) - utcnow()).total_seconds()))

            async def dead_letters() -> list[dict]:
                return [e["data"] for _, e in await read_topic(kafka_bootstrap, test_topics.dead_letter)]

            await wait_for(lambda: len(wechat.accepted) >= 2 * len(wechat_cases), "wechat deliveries")
            letters = await wait_for(lambda: _at_least(dead_letters(), 2 * len(sms_cases) + 1), "dead letters")

            async def alerts() -> list[dict]:
                return [e["data"] for _, e in await read_topic(kafka_bootstrap, test_topics.alerts)]

            raised = await wait_for(lambda: _at_least(alerts(), 2 * 6), "unsigned and overdue alerts")
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{worker.port}") as http:
                assert (await http.get("/healthz")).status_code == 200
                metrics = (await wait_for(lambda: _metrics_with(http, 'kind="overdue"} 6.0'), "metrics")).text
        finally:
            worker.stop()
            await producer.stop()

    sms_ids = {f"{k}:{s.case_id}" + (":1" if k == "assigned" else "")
               for s in sms_cases for k in ("received", "assigned")}
    assert sms.accepted == Counter()
    assert set(sms.requests) == sms_ids and set(sms.requests.values()) == {ATTEMPTS}  # retried, then given up
    assert {letter["service"] for letter in letters} == {"notifier"}
    invalid = [letter for letter in letters if letter["original_topic"] == test_topics.case_events]
    assert len(invalid) == 1 and invalid[0]["value"] == "not an event" and "JSON" in invalid[0]["reason"]
    letters = [letter for letter in letters if letter is not invalid[0]]
    assert len(letters) == 2 * len(sms_cases)
    assert all("after 3 attempts" in letter["reason"] for letter in letters)
    assert all("1390000" not in letter["value"] for letter in letters)  # the phone is masked there too
    assert len(wechat.accepted) == 2 * len(wechat_cases)
    assert wechat.bodies[f"received:{wechat_cases[0].case_id}"]["touser"] == f"openid-{wechat_cases[0].case_id}"
    assert Counter(a["kind"] for a in raised) == {"unsigned": 6, "overdue": 6}
    assert 'wenzheng_notifier_notifications_total{channel="sms",outcome="dead_lettered"} 6.0' in metrics
    assert 'wenzheng_notifier_notifications_total{channel="wechat",outcome="delivered"} 6.0' in metrics
    assert 'wenzheng_notifier_dead_letters_total{reason="delivery"} 6.0' in metrics
    for name in ("wenzheng_notifier_open_cases", "wenzheng_notifier_delivery_seconds_bucket",
                 "wenzheng_notifier_consumer_lag_messages", "wenzheng_notifier_last_event_applied_timestamp_seconds"):
        assert name in metrics
    log_text = (tmp_path / "worker.log").read_text(errors="replace")
    assert "1390000" not in log_text  # no phone in any log line


async def _metrics_with(http: httpx.AsyncClient, needle: str) -> httpx.Response | None:
    response = await http.get("/metrics")
    return response if needle in response.text else None


async def _at_least(items: Awaitable[list[dict]], n: int) -> list[dict] | None:
    found = await items
    return found if len(found) >= n else None
