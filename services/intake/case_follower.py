"""Keeps this replica's list index current with the writes of the other intake replicas.

Every write intake makes leaves on the public case-events topic with the case id and the case's version
after it. Each replica reads that topic on its own, on the platform's consumer loop without a group and
without commits: it reads every partition from where the topic ended just before its start-up load, and for
each case whose version is newer than the one its index holds, reads the case's summary by ``_id`` and puts
it. Its own writes are already in the index at that version, so they cost nothing; an event seen twice
changes nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Iterable

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from services.common.config import TopicSettings
from services.common.consumer import Batch, ConsumerLoop, Source
from services.common.events import Event
from services.common.kafka import new_consumer, new_producer
from services.common.logging import get_logger
from services.intake.store import CaseStore

log = get_logger(__name__)


def newer_versions(events: Iterable[Event | None], known: Callable[[str], int | None]) -> dict[str, int]:
    """The cases these events moved past what ``known(case_id)`` (the index's version, or None) holds."""
    latest: dict[str, int] = {}
    for event in events:
        data = event.data if event is not None else None
        case_id, version = getattr(data, "case_id", None), getattr(data, "version", None)
        if not isinstance(case_id, str) or not isinstance(version, int):
            continue
        have = known(case_id)
        if (have is None or version > have) and version > latest.get(case_id, 0):
            latest[case_id] = version
    return latest


class CaseFollower:
    def __init__(self, store: CaseStore, topic: str, bootstrap: str, names: TopicSettings | None = None) -> None:
        self.store = store
        self.topic = topic
        self.bootstrap = bootstrap
        self.names = names
        self.consumer: AIOKafkaConsumer | None = None
        self.producer: AIOKafkaProducer | None = None  # the loop's, for a record that is not an event
        self.stale: dict[str, int] = {}  # read but not yet refreshed (kept across a database outage)
        self.refreshed = 0

    async def start(self, wait_seconds: float = 10) -> None:
        """Note where the topic ends now, before the index is loaded: nothing written after is missed. A
        topic that does not exist yet is read from its start once it does (all of it is newer than the load)."""
        consumer = new_consumer(self.topic, group_id=None, bootstrap=self.bootstrap, auto_offset_reset="earliest")
        await consumer.start()
        try:
            for _ in range(int(wait_seconds / 0.05)):  # without a group, all partitions come with the metadata
                if consumer.assignment():
                    break
                await asyncio.sleep(0.05)
            partitions = list(consumer.assignment())
            if partitions:
                await consumer.seek_to_end(*partitions)
                for partition in partitions:
                    await consumer.position(partition)  # fixes the offset now
            self.producer = new_producer(self.bootstrap)
            await self.producer.start()
        except BaseException:
            await consumer.stop()
            raise
        self.consumer = consumer

    async def handle(self, batch: Batch) -> None:
        events = (event for event, _ in batch.items)
        for case_id, version in newer_versions(events, self.store.index.version_of).items():
            self.stale[case_id] = max(version, self.stale.get(case_id, 0))
        await self._refresh()

    async def _refresh(self) -> None:
        if self.stale:
            self.refreshed += await self.store.refresh_index(list(self.stale))
            self.stale.clear()

    async def run(self) -> None:
        assert self.consumer is not None and self.producer is not None, "start() first"
        loop = ConsumerLoop([Source(self.topic, "case_events")], self.handle, service="intake", group_id=None,
                            consumer=self.consumer, producer=self.producer, names=self.names,
                            commit_offsets=False, max_records=2000)
        while True:
            try:
                await self._refresh()  # what a database outage left to do
                await loop.run()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the database or Kafka is away for a moment: try again
                log.warning("case_follower_error", error=f"{type(exc).__name__}: {exc}"[:300], pending=len(self.stale))
                await asyncio.sleep(1)

    async def stop(self) -> None:
        for client in (self.consumer, self.producer):
            if client is not None:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(client.stop(), 5)
        self.consumer = self.producer = None
