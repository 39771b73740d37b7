"""Hotspots through real worker processes: posts of one place and category spread over the partitions reach
the owner of partition 0 through the hotspot-posts topic, one hotspot alert is raised into alerts partition 0,
and a worker killed and restarted (state restored from the changelogs) does not raise it again, and still
knows the citizens' contacts (restored from the contacts topic)."""

from __future__ import annotations

import asyncio

import pytest

from harness.ports import free_port
from services.common.events import utcnow
from services.common.kafka import EventPublisher, new_producer
from services.common.workdays import default_calendar
from tests.notifier.fakes import CaseScript
from tests.notifier.harness import FakeGateway, WorkerProcess, read_topic, wait_for, worker_env

pytestmark = pytest.mark.integration


async def test_a_burst_over_every_partition_raises_one_hotspot_even_across_a_kill9(
        kafka_bootstrap, test_topics, run_id, tmp_path):
    clock_file = tmp_path / "clock_offset"
    clock_file.write_text("0")
    now = utcnow()
    burst = [CaseScript(f"hot-{i}", tracking=f"WZ-HOT-{i:04d}") for i in range(6)]
    producer = new_producer(kafka_bootstrap)
    await producer.start()
    try:
        raised, again = await _story(kafka_bootstrap, test_topics, run_id, tmp_path, clock_file,
                                     EventPublisher(producer, source="/test/intake", names=test_topics), burst, now)
    finally:
        await producer.stop()

    assert len(raised) == 1 and again == raised
    partition, alert = raised[0]
    assert partition == 0 and sorted(alert["case_ids"]) == sorted(s.case_id for s in burst)
    assert alert["township"] == "水西镇" and alert["audience"] == ["supervisors"]


async def _caught_up(worker: WorkerProcess) -> bool:
    ready = await worker.readyz()
    return bool(ready) and ready["caught_up"] == [0, 1, 2]


async def _story(kafka_bootstrap, test_topics, run_id, tmp_path, clock_file, publisher, burst, now):
    far = default_calendar().add_working_days(now, 20)
    for s in burst:
        await publisher.publish(s.contact(now, phone="13900000001"))
        await publisher.publish(s.submitted(now))
        await publisher.publish(s.assigned(now, far, township="水西镇"))
    case_partitions = {e["subject"]: p for p, e in await read_topic(kafka_bootstrap, test_topics.case_events)}
    assert set(case_partitions.values()) - {0}  # posts of other partitions than the hotspot owner's: a join

    async def hotspots() -> list[tuple[int, dict]]:
        return [(p, e["data"]) for p, e in await read_topic(kafka_bootstrap, test_topics.alerts)
                if e["data"]["kind"] == "hotspot"]

    with FakeGateway() as gateway:
        env = worker_env(kafka=kafka_bootstrap, names=test_topics, run_id=run_id, port=free_port(),
                         sms_url=gateway.url, clock_file=clock_file)
        worker = WorkerProcess(env, tmp_path / "worker.log").start()
        try:
            raised = await wait_for(hotspots, "a hotspot alert")
            worker.kill9()
            worker = WorkerProcess(env, tmp_path / "worker.log").start()
            await wait_for(lambda: _caught_up(worker), "the restarted worker caught up")
            await asyncio.sleep(3)  # three hotspot scans of the restarted worker: time for a repeat, if any
            again = await hotspots()
            # the contacts came back with the state: a reply after the restart reaches the citizen
            await publisher.publish(burst[0].replied(utcnow(), far))
            await wait_for(lambda: f"replied:{burst[0].case_id}:1" in gateway.accepted, "the reply's notification")
        finally:
            worker.stop()
    return raised, again
