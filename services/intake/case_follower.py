"""Keeps this replica's list index current with the writes of the other intake replicas.

Every write intake makes leaves on the public case-events topic with the case id and the case's version
after it. Each replica reads that topic on its own (no consumer group, nothing committed: it reads every
partition from where the topic ended just before its start-up load), and for each case whose version is
newer than the one its index holds, reads the case's summary by ``_id`` and puts it. Its own writes are
already in the index at that version, so they cost nothing; an event seen twice changes nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from typing import Any

from aiokafka import AIOKafkaConsumer, ConsumerRecord

from services.common.kafka import new_consumer
from services.common.logging import get_logger
from services.intake.store import CaseStore

log = get_logger(__name__)


def newer_versions(records: list[ConsumerRecord], known: Any) -> dict[str, int]:
    """The cases these events moved past what ``known(case_id)`` (the index's version, or None) holds."""
    latest: dict[str, int] = {}
    for record in records:
        try:
            data = json.loads(record.value or b"")["data"]
            case_id, version = data["case_id"], int(data["version"])
        except (ValueError, KeyError, TypeError):
            continue  # not a case event (the decision consumer's dead-letter handling is elsewhere)
        if not isinstance(case_id, str):
            continue
        have = known(case_id)
        if (have is None or version > have) and version > latest.get(case_id, 0):
            latest[case_id] = version
    return latest


class CaseFollower:
    def __init__(self, store: CaseStore, topic: str, bootstrap: str) -> None:
        self.store = store
        self.topic = topic
        self.bootstrap = bootstrap
        self.consumer: AIOKafkaConsumer | None = None
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
        except BaseException:
            await consumer.stop()
            raise
        self.consumer = consumer

    async def run(self) -> None:
        assert self.consumer is not None, "start() first"
        stale: dict[str, int] = {}  # read but not yet refreshed (kept across a database outage)
        while True:
            try:
                batches = await self.consumer.getmany(timeout_ms=500, max_records=2000)
                records = [record for batch in batches.values() for record in batch]
                for case_id, version in newer_versions(records, self.store.index.version_of).items():
                    stale[case_id] = max(version, stale.get(case_id, 0))
                if stale:
                    self.refreshed += await self.store.refresh_index(list(stale))
                    stale.clear()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the database or Kafka is away for a moment: try again
                log.warning("case_follower_error", error=f"{type(exc).__name__}: {exc}"[:300], pending=len(stale))
                await asyncio.sleep(1)

    async def stop(self) -> None:
        if self.consumer is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.consumer.stop(), 5)
            self.consumer = None
