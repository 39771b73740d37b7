"""The stats consumer on the platform's one consumer loop, against the real broker and MongoDB-wire server:
each event applied once (duplicates in the stream and a replay by another group change nothing), a malformed
message dead-lettered with its reason, and the rates current when the stream pauses (the idle flush), with no
rollup flush due by time."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator

import pytest
from aiokafka import TopicPartition

from harness.simulate import simulate
from harness.waiting import wait_until
from services.common.consumer import read_to_end
from services.common.kafka import EventPublisher, new_producer
from services.common.mongo import new_client
from services.stats import metrics
from services.stats.consumer import StatsConsumer
from services.stats.handlers import Projector
from services.stats.store import StatsStore
from tests.stats.integration.support import TODAY, facts_of, measured

pytestmark = pytest.mark.integration


async def _publish(bootstrap: str, names, sim, raw: list[tuple[str, bytes]]) -> None:
    producer = new_producer(bootstrap)
    await producer.start()
    try:
        await EventPublisher(producer, source="urn:test", names=names).send_events(
            (getattr(names, key), event) for key, event in sim.events)
        for topic, value in raw:
            await producer.send_and_wait(topic, value, key=b"c-bad")
    finally:
        await producer.stop()


def received(projector: Projector) -> int:
    """Cases the projector's own view counts now (what its API would answer, without reading the database)."""
    everything = projector.view.summaries("all", projector.view.months(), []).get("all")
    return everything.rates(TODAY)["received"] if everything else 0


@contextlib.asynccontextmanager
async def consuming(consumer: StatsConsumer) -> AsyncIterator[None]:
    """The consumer running in a task of this test until the block ends."""
    stop = asyncio.Event()
    task = asyncio.create_task(consumer.run(stop))
    try:
        yield
    finally:
        stop.set()
        await asyncio.wait_for(task, 60)


async def test_each_event_once_a_bad_message_dead_lettered_and_the_rates_current_when_the_stream_pauses(
        kafka_bootstrap: str, mongo_url: str, run_id: str, test_topics) -> None:
    sim = simulate(80, seed=17, duplicate_rate=0.05)
    facts = facts_of(sim)
    unique = len({f["id"] for f in facts})
    await _publish(kafka_bootstrap, test_topics, sim, raw=[(test_topics.case_events, b"{not json")])
    truth = {k: v for k, v in sim.truth(TODAY).items() if v["received"] or k == "all"}
    client = new_client(mongo_url)
    name = f"wenzheng_stats_{run_id}"
    store = StatsStore(client[name])
    try:
        # no flush is due by time or size: only the idle flush can make the rates current
        projector = Projector(store, f"consumer-{run_id}", flush_seconds=3600, flush_facts=10**9, fold_seconds=0)
        applied_before = metrics.EVENTS_APPLIED._value.get()
        async with consuming(StatsConsumer(projector, test_topics, group_id=f"stats-{run_id}",
                                           bootstrap=kafka_bootstrap, max_batch=40)):
            await wait_until(lambda: received(projector) == truth["all"]["received"] and not projector.pending(),
                             "the idle flush to publish every case")
        assert metrics.EVENTS_APPLIED._value.get() - applied_before == unique
        assert await measured(projector) == truth

        letters = []
        await read_to_end(kafka_bootstrap, [TopicPartition(test_topics.dead_letter, p) for p in range(3)],
                          lambda _tp, records: letters.extend(records))
        bodies = [json.loads(r.value) for r in letters]
        assert len(bodies) == 1 and bodies[0]["data"]["service"] == "stats" and bodies[0]["data"]["reason"]

        # another group reads the whole topic again: every event is recognised, nothing changes
        replayer = Projector(store, f"replay-{run_id}", fold_seconds=0)
        duplicates_before = metrics.DUPLICATES._value.get()
        applied_before = metrics.EVENTS_APPLIED._value.get()
        async with consuming(StatsConsumer(replayer, test_topics, group_id=f"replay-{run_id}",
                                           bootstrap=kafka_bootstrap, max_batch=500)):
            await wait_until(lambda: metrics.DUPLICATES._value.get() - duplicates_before >= len(facts),
                             "the replay to read every event")
        assert metrics.EVENTS_APPLIED._value.get() == applied_before
        assert await measured(replayer) == truth
        assert (await replayer.reconcile(fix=False))["differences"] == 0
    finally:
        await client.drop_database(name)
        await client.close()
