"""The one consumer loop (services/common/consumer.py) against the real broker: dead letters with their reason,
commit after the batch and resume after a restart, a handler error not swallowed, keyed state restored after a
restart and after a rebalance to a second consumer, and the transactional mode across kill -9."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
from collections import Counter, defaultdict
from pathlib import Path

import pytest
from aiokafka import TopicPartition

from harness.waiting import wait_until as until
from services.common import events as ev
from services.common.consumer import Batch, ConsumerLoop, KeyedState, Source, read_to_end
from services.common.events import make_event
from services.common.kafka import EventPublisher, new_producer
from services.common.metrics import ConsumerHealth
from tests.common.samples import T0, sample_payloads

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]


def signed(case_id: str, version: int) -> ev.Event:
    return make_event(ev.CaseSigned(case_id=case_id, tracking_number="WZ2609-ABCD-EFGH", occurred_at=T0,
                                    version=version, actor="department", actor_id="p-0123456789abcdef",
                                    department_id="zhanggong_gov"), source="/tests")


async def publish(bootstrap: str, topic: str, events: list[ev.Event], raw: list[tuple[bytes, bytes]] = ()) -> None:
    producer = new_producer(bootstrap)
    await producer.start()
    try:
        await EventPublisher(producer, source="/tests").send_events((topic, e) for e in events)
        for key, value in raw:
            await producer.send_and_wait(topic, value, key=key)
    finally:
        await producer.stop()


async def read_all(bootstrap: str, topic: str, partitions: int = 3) -> list:
    out: list = []
    await read_to_end(bootstrap, [TopicPartition(topic, p) for p in range(partitions)],
                      lambda _tp, records: out.extend(records))
    return out


class Running:
    """A loop run in a task of this test."""

    def __init__(self, loop: ConsumerLoop) -> None:
        self.loop, self.stop = loop, asyncio.Event()
        self.task = asyncio.create_task(loop.run(self.stop))

    async def finish(self) -> None:
        self.stop.set()
        await asyncio.wait_for(self.task, 60)


async def test_dead_letters_with_reason_commits_after_the_batch_and_resumes_after_restart(
        kafka_bootstrap, test_topics, run_id):
    topic = test_topics.case_events
    first = [signed(f"c-{i % 4}", i + 1) for i in range(12)]
    decision = next(p for p in sample_payloads("c-0") if isinstance(p, ev.RoutingDecision))
    wrong_topic = make_event(decision, source="/tests")  # a valid event, of the wrong topic
    await publish(kafka_bootstrap, topic, first, raw=[(b"c-1", b"{not json"), (b"c-0", wrong_topic.to_json())])

    seen: list[tuple[int, str, int]] = []
    dead: list[str] = []
    health = ConsumerHealth(f"loop_test_{run_id}")

    async def handle(batch: Batch) -> None:
        assert all(record.partition == batch.partition for _, record in batch.items)
        seen.extend((batch.partition, e.subject, record.offset) for e, record in batch.items)

    def loop() -> ConsumerLoop:
        return ConsumerLoop([Source(topic, "case_events")], handle, service="tests", group_id=f"g-{run_id}",
                            bootstrap=kafka_bootstrap, names=test_topics, health=health, lag_seconds=0.2,
                            on_dead_letter=lambda record, exc: dead.append(str(exc)))

    running = Running(loop())
    await until(lambda: len(seen) == 12 and len(dead) == 2, "every record handled or dead-lettered")
    await until(lambda: _gauge(health, topic) == 0, "lag exported")
    await running.finish()
    by_partition = defaultdict(list)
    for partition, _, offset in seen:
        by_partition[partition].append(offset)
    assert all(offsets == sorted(offsets) for offsets in by_partition.values())  # partition order kept
    assert Counter(subject for _, subject, _ in seen) == Counter(e.subject for e in first)

    letters = [json.loads(r.value)["data"] for r in await read_all(kafka_bootstrap, test_topics.dead_letter)]
    reasons = sorted(letter["reason"] for letter in letters)
    assert reasons[0].startswith("message is not JSON")
    assert "does not belong on topic 'case_events'" in reasons[1]
    assert {letter["original_topic"] for letter in letters} == {topic}
    assert all(letter["service"] == "tests" for letter in letters)

    # committed after the batch: a new member of the group sees only what came after
    later = [signed("c-9", i + 1) for i in range(3)]
    await publish(kafka_bootstrap, topic, later)
    seen.clear()
    running = Running(loop())
    await until(lambda: len(seen) == 3, "the later records")
    await asyncio.sleep(1)  # nothing older arrives after them
    await running.finish()
    assert [subject for _, subject, _ in seen] == ["c-9"] * 3
    assert len(letters) == 2


async def test_concurrent_partitions_handles_a_polls_partitions_side_by_side_each_in_order(
        kafka_bootstrap, test_topics, run_id):
    topic = test_topics.case_events
    await publish(kafka_bootstrap, topic, [signed(f"c-{i % 6}", i + 1) for i in range(30)])

    async def run(concurrent: bool) -> tuple[int, dict[int, list[int]]]:
        active, most, offsets = 0, 0, defaultdict(list)

        async def handle(batch: Batch) -> None:
            nonlocal active, most
            active += 1
            most = max(most, active)
            await asyncio.sleep(0.05)  # a database round trip: the other partitions' batches may start meanwhile
            offsets[batch.partition].extend(record.offset for _, record in batch.items)
            active -= 1

        running = Running(ConsumerLoop([Source(topic, "case_events")], handle, service="tests",
                                       group_id=f"g-{run_id}-{concurrent}", bootstrap=kafka_bootstrap,
                                       names=test_topics, concurrent_partitions=concurrent))
        await until(lambda: sum(map(len, offsets.values())) == 30, "every record handled")
        await running.finish()
        return most, offsets

    sequential, _ = await run(False)
    side_by_side, offsets = await run(True)
    assert sequential == 1
    assert side_by_side > 1  # the records of several partitions came in one poll
    assert len(offsets) > 1 and all(o == sorted(o) for o in offsets.values())


async def test_a_handler_error_is_raised_and_nothing_of_its_poll_is_committed(kafka_bootstrap, test_topics, run_id):
    topic = test_topics.case_events
    await publish(kafka_bootstrap, topic, [signed("c-1", v) for v in (1, 2, 3)])
    calls = 0

    async def failing(batch: Batch) -> None:
        nonlocal calls
        calls += 1
        raise RuntimeError("the store is down")

    loop = ConsumerLoop([Source(topic, "case_events")], failing, service="tests", group_id=f"g-{run_id}",
                        bootstrap=kafka_bootstrap, names=test_topics)
    with pytest.raises(RuntimeError, match="the store is down"):
        await asyncio.wait_for(loop.run(asyncio.Event()), 60)

    seen: list[int] = []

    async def working(batch: Batch) -> None:
        seen.extend(record.offset for _, record in batch.items)

    running = Running(ConsumerLoop([Source(topic, "case_events")], working, service="tests",
                                   group_id=f"g-{run_id}", bootstrap=kafka_bootstrap, names=test_topics))
    await until(lambda: len(seen) == 3, "the records the failed poll left uncommitted")
    await running.finish()
    assert calls == 1


class Counting:
    """A stateful user: events per case, idempotent by input offset (a replay adds nothing)."""

    def __init__(self, changelog: str) -> None:
        self.state: KeyedState[dict] = KeyedState(changelog)
        self.assigned: list[list[int]] = []

    async def handle(self, batch: Batch) -> None:
        for event, record in batch.items:
            known = self.state.get(batch.partition, event.subject) or {"count": 0, "last": -1}
            if record.offset > known["last"]:
                self.state.put(batch.partition, event.subject, {"count": known["count"] + 1, "last": record.offset})

    async def on_assigned(self, tps: list[TopicPartition]) -> None:
        self.assigned.append(sorted(tp.partition for tp in tps))

    def counts(self) -> dict[str, int]:
        return {k: v["count"] for p in self.state.partitions.values() for k, v in p.items()}


async def test_keyed_state_is_restored_after_a_restart_and_after_a_rebalance(kafka_bootstrap, test_topics, run_id):
    topic, changelog = test_topics.case_events, f"test.{run_id}.notifier-state"
    expected: Counter[str] = Counter()

    async def more(n: int, version: int) -> None:
        batch = [signed(f"k-{i % 9}", version) for i in range(n)]
        expected.update(e.subject for e in batch)
        await publish(kafka_bootstrap, topic, batch)

    def member(user: Counting) -> Running:
        return Running(ConsumerLoop([Source(topic, "case_events")], user.handle, service="tests",
                                    group_id=f"g-{run_id}", bootstrap=kafka_bootstrap, names=test_topics,
                                    states=[user.state], on_assigned=user.on_assigned,
                                    session_timeout_ms=6000, heartbeat_interval_ms=1000))

    await more(45, 1)
    a = Counting(changelog)
    first = member(a)
    await until(lambda: a.counts() == expected, "the first worker counted everything")
    await first.finish()
    assert a.counts() == {}  # a stopped loop holds nothing: what follows comes from the changelog

    b = Counting(changelog)
    restarted = member(b)
    await until(lambda: b.assigned, "assignment")
    assert restarted.loop.restored_records >= 9
    await more(18, 2)
    await until(lambda: b.counts() == expected, "counts continued after the restart")

    c = Counting(changelog)
    second = member(c)
    await until(lambda: c.assigned and len(b.assigned) >= 2, "a rebalance to two members")
    await more(27, 3)
    await until(lambda: {**b.counts(), **c.counts()} == expected, "counts split over two members")
    assert not set(b.counts()) & set(c.counts())
    assert set(b.state.partitions) | set(c.state.partitions) == {0, 1, 2}
    assert c.state.partitions and not set(b.state.partitions) & set(c.state.partitions)

    await second.finish()  # b takes over c's partitions from the changelog c wrote
    await until(lambda: b.counts() == expected and set(b.state.partitions) == {0, 1, 2}, "all back on b")
    await more(9, 4)
    await until(lambda: b.counts() == expected, "and it goes on")
    await restarted.finish()


async def test_transactional_mode_leaves_no_output_without_its_offset_across_kill9(
        kafka_bootstrap, test_topics, run_id, tmp_path):
    """kill -9 while batches flow, twice: the committed outputs name every input exactly once, and the counts
    (state restored from the changelog) run 1..n per case without a gap or a repeat."""
    topic, output = test_topics.case_events, test_topics.alerts
    events = [signed(f"t-{i % 12}", i // 12 + 1) for i in range(600)]
    await publish(kafka_bootstrap, topic, events)
    args = [sys.executable, "-m", "tests.common.loop_worker", kafka_bootstrap, topic, output,
            f"test.{run_id}.loop-state", f"g-{run_id}", f"tx-{run_id}"]
    log = tmp_path / "worker.log"

    def spawn() -> subprocess.Popen:
        with open(log, "ab") as out:
            return subprocess.Popen(args, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT)

    async def committed() -> list[dict]:
        return [json.loads(r.value) for r in await read_all(kafka_bootstrap, output)]

    async def wait_outputs(n: int, worker: subprocess.Popen) -> None:
        async with asyncio.timeout(120):
            while len(await committed()) < n:
                assert worker.poll() is None, log.read_text(errors="replace")[-3000:]
                await asyncio.sleep(0.2)

    worker = spawn()
    try:
        await wait_outputs(100, worker)
        worker.send_signal(signal.SIGKILL)
        worker.wait(30)
        worker = spawn()
        await wait_outputs(300, worker)
        worker.send_signal(signal.SIGKILL)
        worker.wait(30)
        worker = spawn()
        await wait_outputs(600, worker)
        await asyncio.sleep(1)
    finally:
        worker.send_signal(signal.SIGTERM)
        try:
            worker.wait(60)
        except subprocess.TimeoutExpired:
            worker.kill()

    outputs = await committed()
    inputs = Counter((o["partition"], o["offset"]) for o in outputs)
    assert len(inputs) == 600 and max(inputs.values()) == 1
    per_case = defaultdict(list)
    for o in outputs:
        per_case[o["case"]].append(o["count"])
    assert {case: sorted(counts) for case, counts in per_case.items()} == {
        f"t-{k}": list(range(1, 51)) for k in range(12)}


def _gauge(health: ConsumerHealth, topic: str) -> float | None:
    for metric in health.lag.collect():
        for sample in metric.samples:
            if sample.labels.get("topic") == topic:
                return sample.value
    return None
