"""The consumer: case events and alerts -> facts -> projector batches, on the platform's one consumer loop
(:class:`services.common.consumer.ConsumerLoop`: parse, dead-letter, per-partition batches, commit, lag).

Each partition's batch of a poll goes to the ledger and the batch journal before the loop commits the poll's
offsets; the rollups follow by a flush every ``flush_seconds``, in the background (the journal makes the
commit safe before it). When the stream pauses, a timer flushes what is waiting, so the published rates are
current without new events. A failed batch is recovered from the journals and consumption resumes from the
last commit (replayed events are recognised by id)."""

from __future__ import annotations

import asyncio
import contextlib
import time

from services.common.config import TopicSettings
from services.common.consumer import Batch, ConsumerLoop, Source
from services.common.logging import get_logger
from services.stats import metrics
from services.stats.domain import fact_from_event
from services.stats.handlers import Projector

log = get_logger(__name__)
SERVICE = "stats"


class StatsConsumer:
    def __init__(self, projector: Projector, names: TopicSettings, *, group_id: str, bootstrap: str,
                 max_batch: int, source: str = "urn:wenzheng:stats", idle_seconds: float = 0.3) -> None:
        self.projector = projector
        self.source = source  # names stats as the source of its dead letters
        self.names = names
        self.group_id = group_id
        self.bootstrap = bootstrap
        self.max_batch = max_batch
        self.idle_seconds = idle_seconds
        self.loop: ConsumerLoop | None = None
        self._last_batch = 0.0

    @property
    def consuming(self) -> bool:
        return self.loop is not None and self.loop.running

    def _new_loop(self) -> ConsumerLoop:
        return ConsumerLoop(
            [Source(self.names.case_events, "case_events"), Source(self.names.alerts, "alerts")], self.apply,
            service=SERVICE, group_id=self.group_id, bootstrap=self.bootstrap, names=self.names,
            source_name=self.source,
            max_records=self.max_batch, timeout_ms=300, health=metrics.CONSUMER,
            on_dead_letter=lambda _record, _error: metrics.DEAD_LETTERS.inc())

    async def run(self, stop: asyncio.Event) -> None:
        """Consume until ``stop``; a failed batch is recovered and consumption resumes from the last commit."""
        while not stop.is_set():
            self.loop = loop = self._new_loop()
            idle = asyncio.create_task(self._flush_when_idle(loop, stop))
            try:
                await loop.run(stop)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the batch was not committed: recover it, then resume from the commit
                log.error("batch_failed", error=str(exc)[:300], error_type=type(exc).__name__)
                await self.projector.recover_all()
                await asyncio.sleep(0.5)
            finally:
                idle.cancel()
                await asyncio.gather(idle, return_exceptions=True)
                try:  # what is journaled but not yet in the rollups: finish it now (else recovery will)
                    await self.projector.flush()
                    await self.projector.fold()
                except Exception as exc:
                    log.error("flush_failed", error=str(exc)[:300], error_type=type(exc).__name__)

    async def apply(self, batch: Batch) -> None:
        """One partition's events of a poll: to the ledger and the journal (the loop commits after this)."""
        facts = []
        newest_event_time = None
        for event, _record in batch.items:
            if event is None or (fact := fact_from_event(event)) is None:
                continue
            facts.append(fact)
            t = event.time.timestamp()
            newest_event_time = max(newest_event_time or t, t)
        if not facts:
            return
        result = await self.projector.apply(facts, flush=False)
        self._last_batch = time.monotonic()
        metrics.EVENTS_APPLIED.inc(result.facts - result.duplicates)
        metrics.DUPLICATES.inc(result.duplicates)
        if newest_event_time is not None:
            metrics.APPLY_LAG.set(max(0.0, time.time() - newest_event_time))

    async def _flush_when_idle(self, loop: ConsumerLoop, stop: asyncio.Event) -> None:
        """Flush the waiting group once no batch came for ``idle_seconds``; never beside a batch (a flush
        takes the open group, which a batch in flight is still adding to)."""
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=self.idle_seconds)
            if not loop.running or not self.projector.pending():
                continue
            if time.monotonic() - self._last_batch < self.idle_seconds:
                continue
            try:
                async with loop.exclusive():
                    await self.projector.flush(wait=False)
            except Exception as exc:  # the loop failed meanwhile: run() recovers
                log.warning("idle_flush_failed", error=str(exc)[:200], error_type=type(exc).__name__)
