"""Exactly once against the real broker: kill -9 of a real worker process, restart, and a rebalance between
two workers. Every (case, kind, round) alert is on the alerts topic once, in the case's partition, and every
notification reaches the gateway once."""

from __future__ import annotations

from collections import Counter
from datetime import timedelta

import pytest

from harness.ports import free_port
from services.common.events import utcnow
from services.common.kafka import EventPublisher, new_producer
from services.common.workdays import default_calendar
from tests.notifier.fakes import CaseScript
from tests.notifier.harness import FakeGateway, WorkerProcess, read_topic, wait_for, worker_env

pytestmark = pytest.mark.integration
DAY = 86400


async def publish_cases(publisher: EventPublisher, prefix: str, count: int, *, contact: str) -> list[CaseScript]:
    """``count`` new cases assigned now with a 1-working-day deadline; contacts before, after or never."""
    now = utcnow()
    deadline = default_calendar().add_working_days(now, 1)
    scripts = [CaseScript(f"{prefix}-{i}", tracking=f"WZ-{prefix}-{i:04d}") for i in range(count)]
    for s in scripts:
        if contact == "before":
            await publisher.publish(s.contact(now, phone=f"139{i_to_digits(s)}"))
        await publisher.publish(s.submitted(now))
        await publisher.publish(s.assigned(now, deadline, township=f"镇{s.case_id}"))  # no hotspot here
    return scripts


def i_to_digits(script: CaseScript) -> str:
    return f"{abs(hash(script.case_id)) % 10**8:08d}"


def alert_counts(events: list[tuple[int, dict]]) -> Counter[str]:
    return Counter(e["data"]["alert_id"] for _, e in events)


async def test_alerts_and_notifications_once_across_kill9_restart_and_rebalance(
        kafka_bootstrap, test_topics, run_id, tmp_path):
    clock_file = tmp_path / "clock_offset"
    clock_file.write_text("0")
    producer = new_producer(kafka_bootstrap)
    await producer.start()
    publisher = EventPublisher(producer, source="/test/intake", names=test_topics)
    workers: list[WorkerProcess] = []
    with FakeGateway() as gateway:
        def spawn(name: str) -> WorkerProcess:
            env = worker_env(kafka=kafka_bootstrap, names=test_topics, run_id=run_id,
                             port=free_port(), sms_url=gateway.url, clock_file=clock_file)
            worker = WorkerProcess(env, tmp_path / f"{name}.log").start()
            workers.append(worker)
            return worker

        try:
            first = await publish_cases(publisher, "a", 12, contact="before")
            late_contact = await publish_cases(publisher, "b", 6, contact="after")
            a = spawn("a")
            await wait_for(a.readyz, "worker a ready")
            now = utcnow()
            for s in late_contact:  # contacts arriving after the case events: the notifications waited
                await publisher.publish(s.contact(now, phone=f"137{i_to_digits(s)}"))
            cases = first + late_contact
            # just past the deadline: unsigned + overdue due for all 18 cases; kill -9 as soon as alerts flow
            deadline = default_calendar().add_working_days(now, 1)
            clock_file.write_text(str((deadline + timedelta(hours=1) - utcnow()).total_seconds()))

            async def alerts_seen() -> int:
                return len(await read_topic(kafka_bootstrap, test_topics.alerts))

            await wait_for(alerts_seen, "first alerts")
            a.kill9()
            a2 = spawn("a2")
            await wait_for(lambda: len(gateway.accepted) >= 2 * len(cases), "received+assigned delivered")
            await wait_for(lambda: _count_at_least(kafka_bootstrap, test_topics.alerts, 2 * len(cases)),
                           "unsigned+overdue for every case")
            # a second worker joins: the partitions are split; forty days on, escalations are due
            b = spawn("b")
            clock_file.write_text(str(40 * DAY))
            more = await publish_cases(publisher, "c", 6, contact="before")
            cases += more
            await wait_for(lambda: _count_at_least(kafka_bootstrap, test_topics.alerts, 3 * len(cases)),
                           "unsigned, overdue and escalated for every case")
            await wait_for(lambda: len(gateway.accepted) >= 2 * len(cases), "every notification delivered")
            # a2 leaves gracefully: b takes over every partition, and must not repeat anything
            assert a2.stop() == 0
            await wait_for(lambda: _owns_all(b), "b owns every partition")
            final = await publish_cases(publisher, "d", 3, contact="before")
            cases += final
            await wait_for(lambda: _count_at_least(kafka_bootstrap, test_topics.alerts, 3 * len(cases)),
                           "alerts of the cases published after the rebalance")
            await wait_for(lambda: len(gateway.accepted) >= 2 * len(cases), "their notifications")
        finally:
            for worker in workers:
                worker.stop()
            await producer.stop()

        alerts = await read_topic(kafka_bootstrap, test_topics.alerts)
        counts = alert_counts(alerts)
        assert len(counts) == 3 * len(cases)
        assert max(counts.values()) == 1, [k for k, n in counts.items() if n > 1]
        assert Counter(k.split(":")[0] for k in counts) == {"unsigned": len(cases), "overdue": len(cases),
                                                            "escalated": len(cases)}
        case_partitions = {e["subject"]: p for p, e in await read_topic(kafka_bootstrap, test_topics.case_events)}
        assert all(case_partitions[e["data"]["case_id"]] == p for p, e in alerts)  # co-partitioned
        expected_ids = {f"{kind}:{s.case_id}" + (":1" if kind == "assigned" else "")
                        for s in cases for kind in ("received", "assigned")}
        assert set(gateway.accepted) == expected_ids and max(gateway.accepted.values()) == 1
        # only a request in flight when the worker was killed may be repeated (and the gateway dedupes it)
        assert sum(gateway.requests.values()) - len(expected_ids) <= 4
        notifications = Counter(e["data"]["notification_id"]
                                for _, e in await read_topic(kafka_bootstrap, test_topics.notifications))
        assert set(notifications) == expected_ids and max(notifications.values()) == 1
        assert all("139" not in e["data"]["message"] for _, e in alerts)


async def _count_at_least(bootstrap: str, topic: str, n: int) -> bool:
    return len(await read_topic(bootstrap, topic)) >= n


async def _owns_all(worker: WorkerProcess) -> bool:
    ready = await worker.readyz()
    return bool(ready) and ready["caught_up"] == [0, 1, 2]
