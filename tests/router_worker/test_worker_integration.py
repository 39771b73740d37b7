"""The router worker as a real process against the real broker: decisions for submitted and returned
cases, duplicate events ignored, a malformed event dead-lettered while the worker goes on."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from datetime import UTC, datetime

import httpx
import pytest

from services.common.events import (
    CaseAssigned,
    CaseContact,
    CaseReturned,
    CaseSubmitted,
    Location,
    make_event,
    parse_event,
)
from services.common.kafka import new_consumer, new_producer

pytestmark = pytest.mark.integration
T0 = datetime(2026, 9, 28, 2, 0, tzinfo=UTC)
PORT = 18911


def submitted(case_id: str, text: str, location: Location | None = None) -> CaseSubmitted:
    return CaseSubmitted(case_id=case_id, tracking_number=f"WZ-{case_id}", version=1, occurred_at=T0,
                         actor="citizen", channel="web", title=text[:20], body=text, location=location)


def start_worker(env: dict[str, str], log_path) -> subprocess.Popen:
    with log_path.open("wb") as log:
        return subprocess.Popen([sys.executable, "-m", "services.router", "worker"], env=env, stdout=log,
                                stderr=subprocess.STDOUT, start_new_session=True)


@pytest.fixture
async def worker(kafka_bootstrap, mongo_url, test_topics, run_id, tmp_path):
    env = {**os.environ, "WENZHENG_KAFKA_BOOTSTRAP": kafka_bootstrap, "WENZHENG_MONGO_URL": mongo_url,
           "WENZHENG_TOPIC_PARTITIONS": "3", "WENZHENG_ROUTER_APP_ID": f"router-test-{run_id}",
           "WENZHENG_ROUTER_DATABASE": f"wenzheng_router_{run_id}", "WENZHENG_PORT": str(PORT),
           "WENZHENG_ROUTER_DATA_DIR": str(tmp_path)}
    env.update({f"WENZHENG_TOPIC_{k.upper()}": v for k, v in test_topics.model_dump().items()})
    process = start_worker(env, tmp_path / "log")
    async with httpx.AsyncClient() as client:
        for _ in range(120):
            try:
                if (await client.get(f"http://127.0.0.1:{PORT}/readyz")).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            await asyncio.sleep(0.5)
        else:
            process.kill()
            pytest.fail("router worker not ready: " + (tmp_path / "log").read_text(errors="replace")[-3000:])
    yield process
    os.killpg(process.pid, signal.SIGTERM)
    process.wait(timeout=30)


async def read_until(bootstrap: str, topic: str, count: int, timeout: float = 60) -> list:
    consumer = new_consumer(topic, group_id=None, bootstrap=bootstrap)
    await consumer.start()
    found = []
    try:
        async with asyncio.timeout(timeout):
            while len(found) < count:
                for records in (await consumer.getmany(timeout_ms=500)).values():
                    found.extend(parse_event(r.value) for r in records)
    finally:
        await consumer.stop()
    return found


async def test_worker_routes_reroutes_and_dead_letters(worker, kafka_bootstrap, test_topics):
    producer = new_producer(kafka_bootstrap)
    await producer.start()
    lamp = submitted("c-lamp", "我住在水西镇，村口的路灯坏了半个月，晚上出行很不安全，请尽快维修")
    water = submitted("c-water", "小区停水两天了没有通知，请水务公司尽快恢复供水", Location(county="瑞金市"))
    try:
        for payload in (lamp, water):
            event = make_event(payload, source="/tests")
            await producer.send_and_wait(test_topics.case_events, event.to_json(), key=event.key)
            await producer.send_and_wait(test_topics.case_events, event.to_json(), key=event.key)  # redelivery
            # the poster's key comes privately; an erased contact (a tombstone) is skipped
            contact = make_event(CaseContact(case_id=payload.case_id, tracking_number=payload.tracking_number,
                                             poster_ref=f"poster-{payload.case_id}", recorded_at=T0), source="/tests")
            await producer.send_and_wait(test_topics.case_contacts, contact.to_json(), key=contact.key)
            await producer.send_and_wait(test_topics.case_contacts, None, key=contact.key)
        await producer.send_and_wait(test_topics.case_events, b"{not json", key=b"c-bad")
        decisions = await read_until(kafka_bootstrap, test_topics.routing_decisions, 2)
        by_case = {d.data.case_id: d.data for d in decisions}
        assert by_case["c-lamp"].department_id == "zhanggong_gov"  # the township alone names the county
        assert by_case["c-lamp"].outcome.value == "assigned" and by_case["c-lamp"].deadline is not None
        assert any("水西镇" in r for r in by_case["c-lamp"].reasons)
        # the city water group does not serve 瑞金市: the county's government answers for its own supplier
        assert by_case["c-water"].department_id == "ruijin_gov"
        assert any("赣州市水务集团不服务瑞金市" in r for r in by_case["c-water"].reasons)
        dead = await read_until(kafka_bootstrap, test_topics.dead_letter, 1)
        assert dead[0].data.service == "router" and "JSON" in dead[0].data.reason

        first = by_case["c-lamp"]
        assigned = CaseAssigned(case_id="c-lamp", tracking_number="WZ-c-lamp", version=2, occurred_at=T0,
                                actor="router", decision_id=first.decision_id, category=first.category,
                                category_name=first.category_name, department_id=first.department_id,
                                department_name=first.department_name, deadline=first.deadline,
                                working_days=first.working_days, confidence=first.confidence,
                                model_version=first.model_version)
        returned = CaseReturned(case_id="c-lamp", tracking_number="WZ-c-lamp", version=3, occurred_at=T0,
                                actor="department", department_id=first.department_id, reason="不属于本单位",
                                return_count=1)
        for payload in (assigned, returned):
            event = make_event(payload, source="/tests")
            await producer.send_and_wait(test_topics.case_events, event.to_json(), key=event.key)
    finally:
        await producer.stop()
    decisions = await read_until(kafka_bootstrap, test_topics.routing_decisions, 3)
    rerouted = [d.data for d in decisions if d.data.case_id == "c-lamp" and d.data.routing_round == 2]
    assert len(rerouted) == 1
    assert rerouted[0].department_id != "zhanggong_gov" and rerouted[0].tried_departments == ["zhanggong_gov"]
    assert len(decisions) == 3  # the redelivered submissions made no second decision
