"""The router worker as a real process against the real broker: decisions for submitted and returned
cases, duplicate events ignored, a malformed event dead-lettered while the worker goes on; no database
command per routed post; the tables' changelogs on their keys' partitions; corrections stored in batches."""

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
from services.common.mongo import new_client

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
           "WENZHENG_ROUTER_DATA_DIR": str(tmp_path), "WENZHENG_ROUTER_CORRECTIONS_FLUSH_SECONDS": "0.2",
           # no timer touches the database during the test: what it counts is the events' cost
           "WENZHENG_ROUTER_MODEL_POLL_SECONDS": "3600", "WENZHENG_ROUTER_QUALITY_FLUSH_SECONDS": "3600"}
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


async def records_of_keys(bootstrap: str, topic: str, keys: set[bytes], *, until_erased: bool = False,
                          timeout: float = 60) -> dict[bytes, list[tuple[int, bytes | None]]]:
    """(partition, value) of every record of ``keys`` on ``topic``, read from the start until every key is seen
    (``until_erased``: until every key's last record is a tombstone)."""
    consumer = new_consumer(topic, group_id=None, bootstrap=bootstrap)  # every partition, from the start
    await consumer.start()
    found: dict[bytes, list[tuple[int, bytes | None]]] = {}

    def done() -> bool:
        return keys <= set(found) and (not until_erased or all(found[key][-1][1] is None for key in keys))

    try:
        async with asyncio.timeout(timeout):
            while not done():
                for records in (await consumer.getmany(timeout_ms=500)).values():
                    for record in records:
                        found.setdefault(record.key, []).append((record.partition, record.value))
    finally:
        await consumer.stop()
    return found


def partitions(records: dict[bytes, list[tuple[int, bytes | None]]], keys) -> dict[bytes, set[int]]:
    return {key: {partition for partition, _ in records[key]} for key in keys}


async def db_commands() -> dict[str, float]:
    """The worker's ``wenzheng_router_db_commands_total`` by operation."""
    async with httpx.AsyncClient() as client:
        text = (await client.get(f"http://127.0.0.1:{PORT}/metrics")).text
    return {line.split('operation="')[1].split('"')[0]: float(line.rsplit(" ", 1)[1])
            for line in text.splitlines() if line.startswith("wenzheng_router_db_commands_total{")}


async def test_worker_routes_reroutes_and_dead_letters(worker, kafka_bootstrap, mongo_url, test_topics, run_id):
    producer = new_producer(kafka_bootstrap)
    await producer.start()
    lamp = submitted("c-lamp", "我住在水西镇，村口的路灯坏了半个月，晚上出行很不安全，请尽快维修")
    water = submitted("c-water", "小区停水两天了没有通知，请水务公司尽快恢复供水", Location(county="瑞金市"))
    partition_of: dict[bytes, int] = {}
    commands_before = await db_commands()
    try:
        for payload in (lamp, water):
            event = make_event(payload, source="/tests")
            await producer.send_and_wait(test_topics.case_events, event.to_json(), key=event.key)
            sent = await producer.send_and_wait(test_topics.case_events, event.to_json(), key=event.key)  # redelivery
            partition_of[event.key] = sent.partition
            # the poster's key comes privately
            contact = make_event(CaseContact(case_id=payload.case_id, tracking_number=payload.tracking_number,
                                             poster_ref=f"poster-{payload.case_id}", recorded_at=T0), source="/tests")
            await producer.send_and_wait(test_topics.case_contacts, contact.to_json(), key=contact.key)
        await producer.send_and_wait(test_topics.case_events, b"{not json", key=b"c-bad")
        decisions = await read_until(kafka_bootstrap, test_topics.routing_decisions, 2)
        # routing two posts (duplicate detection included) sent no command to the database
        assert await db_commands() == commands_before
        for payload in (lamp, water):  # the contacts erased (tombstones): the posters' rows go too
            await producer.send_and_wait(test_topics.case_contacts, None, key=payload.case_id.encode())
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

    # every row of the case table went to its case's partition of the case events (a restarted worker restores
    # the rows of the partitions it is given), and every poster row to its poster's partition of the internal
    # poster topic that feeds the poster table
    app_id = f"router-test-{run_id}"
    rows = await records_of_keys(kafka_bootstrap, f"{app_id}-case-routing-changelog", set(partition_of))
    assert partitions(rows, partition_of) == {key: {p} for key, p in partition_of.items()}
    poster_keys = {b"poster-c-lamp", b"poster-c-water"}
    fed = partitions(await records_of_keys(kafka_bootstrap, f"{app_id}-poster-posts", poster_keys), poster_keys)
    posters = await records_of_keys(kafka_bootstrap, f"{app_id}-poster-posts-changelog", poster_keys,
                                    until_erased=True)
    assert all(len(fed[key]) == 1 for key in poster_keys)
    assert partitions(posters, poster_keys) == fed
    assert all(value is not None for key in poster_keys for _, value in posters[key][:-1])

    # the return's correction reached the router's database (a batch written by the corrections agent)
    client = new_client(mongo_url)
    try:
        collection = client[f"wenzheng_router_{run_id}"]["corrections"]
        async with asyncio.timeout(60):
            while True:
                stored = [d async for d in collection.find({"case_id": "c-lamp"})]
                if stored:
                    break
                await asyncio.sleep(0.2)
    finally:
        await client.close()
    assert [(d["kind"], d["label"], d["department_id"]) for d in stored] == [
        ("returned", first.category, first.department_id)]
