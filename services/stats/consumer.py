"""The consumer: case events and alerts -> facts -> one projector batch -> commit (consumer group member)."""

from __future__ import annotations

import asyncio
import time

from aiokafka import AIOKafkaConsumer
from aiokafka.structs import TopicPartition

from services.common.config import TopicSettings
from services.common.events import EventValidationError, parse_event
from services.common.kafka import EventPublisher, end_offsets_lag, new_consumer
from services.common.logging import get_logger
from services.stats import metrics
from services.stats.domain import fact_from_event
from services.stats.handlers import Projector

log = get_logger(__name__)
SERVICE = "stats"


class StatsConsumer:
    def __init__(self, projector: Projector, names: TopicSettings, publisher: EventPublisher, *, group_id: str,
                 bootstrap: str, max_batch: int) -> None:
        self.projector = projector
        self.names = names
        self.publisher = publisher
        self.group_id = group_id
        self.bootstrap = bootstrap
        self.max_batch = max_batch
        self.consumer: AIOKafkaConsumer | None = None
        self.consuming = False

    async def run(self, stop: asyncio.Event) -> None:
        """Consume until ``stop``; a failed batch is recovered and consumption resumes from the last commit."""
        while not stop.is_set():
            self.consumer = new_consumer(self.names.case_events, self.names.alerts, group_id=self.group_id,
                                         bootstrap=self.bootstrap, max_poll_records=self.max_batch)
            await self.consumer.start()
            try:
                self.consuming = True
                await self._loop(self.consumer, stop)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the batch was not committed: recover it, then resume from the commit
                log.error("batch_failed", error=str(exc)[:300], error_type=type(exc).__name__)
                await self.projector.recover_all()
                await asyncio.sleep(0.5)
            finally:
                self.consuming = False
                try:  # what is journaled but not yet in the rollups: finish it now (else recovery will)
                    await self.projector.flush()
                    await self.projector.fold()
                except Exception as exc:
                    log.error("flush_failed", error=str(exc)[:300], error_type=type(exc).__name__)
                await self.consumer.stop()

    async def _loop(self, consumer: AIOKafkaConsumer, stop: asyncio.Event) -> None:
        last_lag = 0.0
        while not stop.is_set():
            batches = await consumer.getmany(timeout_ms=300, max_records=self.max_batch)
            facts = []
            newest_event_time = None
            offsets: dict[TopicPartition, int] = {}
            for tp, records in batches.items():
                for record in records:
                    try:
                        event = parse_event(record.value or b"")
                    except EventValidationError as exc:
                        await self.publisher.dead_letter(record, exc, service=SERVICE)
                        metrics.DEAD_LETTERS.inc()
                        continue
                    fact = fact_from_event(event)
                    if fact is not None:
                        facts.append(fact)
                        t = event.time.timestamp()
                        newest_event_time = max(newest_event_time or t, t)
                if records:
                    offsets[tp] = records[-1].offset + 1
            if facts:
                # the ledger and the batch journal are written now; the rollups by a flush every
                # flush_seconds, in the background (the journal makes the commit below safe before it)
                result = await self.projector.apply(facts, flush=False)
                metrics.EVENTS_APPLIED.inc(result.facts - result.duplicates)
                metrics.DUPLICATES.inc(result.duplicates)
                metrics.CONSUMER.applied()
                if newest_event_time is not None:
                    metrics.APPLY_LAG.set(max(0.0, time.time() - newest_event_time))
            elif self.projector.pending():
                await self.projector.flush(wait=False)  # idle: make the rates current now
            if offsets:
                await consumer.commit(offsets)  # only after the batch is durably journaled and in the ledger
            if time.monotonic() - last_lag > 5:
                last_lag = time.monotonic()
                await self._export_lag(consumer)

    async def _export_lag(self, consumer: AIOKafkaConsumer) -> None:
        try:
            lag = await end_offsets_lag(consumer)
        except Exception:
            return
        per_topic: dict[str, int] = {}
        for tp, n in lag.items():
            per_topic[tp.topic] = per_topic.get(tp.topic, 0) + n
        for topic, n in per_topic.items():
            metrics.CONSUMER.lag.labels(topic=topic).set(n)
