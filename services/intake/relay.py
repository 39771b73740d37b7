"""The outbox relay: publishes every writer's groups in order, then moves each writer's watermark once.

A pass reads the writers' watermarks and the next groups of each (two finds), publishes the settled ones
(:func:`services.intake.outbox.plan_publication`), waits for Kafka's acknowledgements, then advances one
watermark per writer and deletes what it published. At-least-once: a crash between the send and the
watermark publishes those events again on restart, so consumers dedupe by event id (and case version).
Per-case order holds because one relay per deployment (a lease in MongoDB) publishes, keyed by case id,
one case's events by version.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import time
from collections.abc import Callable
from datetime import UTC, datetime

from aiokafka import AIOKafkaProducer

from services.common.config import TopicSettings
from services.common.kafka import new_producer
from services.common.logging import get_logger
from services.intake import metrics
from services.intake.outbox import Plan, plan_publication, publication_order, window_ids
from services.intake.store import CaseStore

log = get_logger(__name__)
LEASE = "outbox-relay"


class OutboxRelay:
    def __init__(self, store: CaseStore, names: TopicSettings, bootstrap: str, *, window: int = 64,
                 idle_seconds: float = 0.2, lease_seconds: float = 10.0, min_interval_seconds: float = 0.0,
                 abandon_seconds: float = 30.0, now: Callable[[], datetime] | None = None) -> None:
        self.store = store
        self.log = store.outbox_log
        self.window = window
        self.abandon_seconds = abandon_seconds
        self.names = names
        self.bootstrap = bootstrap
        self.idle_seconds = idle_seconds
        self.min_interval_seconds = min_interval_seconds
        self.lease_seconds = lease_seconds
        self.owner = f"relay-{secrets.token_hex(6)}"
        self.now = now or (lambda: datetime.now(UTC))
        self.producer: AIOKafkaProducer | None = None
        self.wakeup = asyncio.Event()
        self.stopping = asyncio.Event()
        self.published_total = 0
        self.last_error: str | None = None
        self.healthy = False
        self.oldest_age_seconds = 0.0  # while this relay holds the lease
        self._migrated = False  # the outboxes a deployment from before the outbox collection left behind
        self._lease_until = 0.0

    def falling_behind_seconds(self) -> float:
        """The oldest unpublished event's age while this relay publishes but cannot keep up (load shedding
        reads it). 0 while Kafka is away: posts are stored safely then, and go out when it is back."""
        return self.oldest_age_seconds if self.healthy else 0.0

    def notify(self) -> None:
        self.wakeup.set()

    def use_bootstrap(self, bootstrap: str) -> None:
        """Point the relay at another broker (the next attempt recreates the producer)."""
        self.bootstrap = bootstrap
        self.wakeup.set()

    async def run(self) -> None:
        backoff = 0.2
        while not self.stopping.is_set():
            try:
                if not await self._hold_lease():
                    self.oldest_age_seconds = 0.0  # another replica's relay publishes: its backlog, not ours
                    await self._idle(self.lease_seconds / 3)
                    continue
                if not self._migrated:
                    moved = await self.store.migrate_legacy_outboxes()
                    if moved:
                        log.info("legacy_outboxes_moved", events=moved)
                    self._migrated = True
                sent = await self.drain_once()
                backoff = 0.2
                self.healthy = True
                if sent == 0:
                    await self._idle(self.idle_seconds)
                elif self.min_interval_seconds:
                    # coalesce: under load one drain carries many posts, and the database scans less often
                    await asyncio.sleep(self.min_interval_seconds)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self.healthy = False
                self.last_error = f"{type(exc).__name__}: {exc}"[:300]
                metrics.RELAY_ERRORS.inc()
                log.warning("relay_error", error=self.last_error, retry_in=backoff)
                await self._drop_producer()
                await self._idle(backoff)
                backoff = min(backoff * 2, 5.0)

    async def stop(self) -> None:
        self.stopping.set()
        self.wakeup.set()
        await self._drop_producer()
        with contextlib.suppress(Exception):
            await self.store.release_lease(LEASE, self.owner)

    async def drain_once(self) -> int:
        """Publish the groups that are ready; returns how many events were sent (at least 1 when groups moved
        on without events, so that the loop looks again at once)."""
        marks = await self.log.marks()
        docs = await self.log.read(window_ids(marks, self.window))
        now_ms = int(time.time() * 1000)
        plan = plan_publication(marks, docs, window=self.window, now_ms=now_ms,
                                abandon_ms=int(self.abandon_seconds * 1000))
        reached = await self.log.reached(plan.to_check) if plan.to_check else {}
        events = publication_order([e for g in plan.ready for e in g.events(reached.get(g.ref))])
        self._update_gauges(plan, now_ms)
        if not plan.ready and not plan.retired:
            return 0
        if events:
            producer = await self._producer()
            futures = []
            for entry in events:
                topic = getattr(self.names, entry["topic"])
                value = entry["value"].encode() if entry["value"] is not None else None  # None: a tombstone
                futures.append((topic, await producer.send(topic, value, key=entry["key"].encode())))
            await asyncio.gather(*(f for _, f in futures))
            for topic, _ in futures:
                metrics.PUBLISHED.labels(topic).inc()
        await self.log.advance(plan, self.now())
        self.published_total += len(events)
        return max(len(events), 1) if plan.ready else 0

    def _update_gauges(self, plan: Plan, now_ms: int) -> None:
        metrics.OUTBOX_BACKLOG.set(plan.backlog + sum(len(g.events()) for g in plan.ready))
        oldest = min([plan.oldest_at_ms or now_ms, *(int(g.intent.get("at_ms", now_ms)) for g in plan.ready)])
        self.oldest_age_seconds = max(0.0, (now_ms - oldest) / 1000)
        metrics.OUTBOX_OLDEST_AGE.set(self.oldest_age_seconds)

    async def _hold_lease(self) -> bool:
        if time.monotonic() < self._lease_until:
            return True
        if await self.store.acquire_lease(LEASE, self.owner, self.now(), self.lease_seconds):
            self._lease_until = time.monotonic() + self.lease_seconds / 3
            return True
        self._lease_until = 0.0
        return False

    async def _producer(self) -> AIOKafkaProducer:
        if self.producer is None:
            producer = new_producer(self.bootstrap, request_timeout_ms=10000)
            try:
                await producer.start()
            except BaseException:
                with contextlib.suppress(Exception):
                    await producer.stop()
                raise
            self.producer = producer
        return self.producer

    async def _drop_producer(self) -> None:
        producer, self.producer = self.producer, None
        if producer is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(producer.stop(), 5)

    async def _idle(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.wakeup.wait(), seconds)
        self.wakeup.clear()
