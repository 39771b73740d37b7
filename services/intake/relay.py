"""The outbox relay: publishes events stored with each case, then removes exactly those from the outbox.

At-least-once: a crash between a send and the removal publishes those events again on restart, so
consumers dedupe by event id (and case version). Per-case order holds because one relay per deployment
(a lease in MongoDB) publishes a case's outbox in order, keyed by case id, before looking at it again.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from aiokafka import AIOKafkaProducer

from services.common.config import TopicSettings
from services.common.kafka import new_producer
from services.common.logging import get_logger
from services.intake import metrics
from services.intake.store import CaseStore

log = get_logger(__name__)
SWEEP_EVERY_SECONDS = 600.0  # the full scan for outboxes whose pointer a crash lost: first on getting the lease
LEASE = "outbox-relay"


class OutboxRelay:
    def __init__(self, store: CaseStore, names: TopicSettings, bootstrap: str, *, batch: int = 500,
                 idle_seconds: float = 0.2, lease_seconds: float = 10.0, min_interval_seconds: float = 0.0,
                 now: Callable[[], datetime] | None = None) -> None:
        self.store = store
        self.names = names
        self.bootstrap = bootstrap
        self.batch = batch
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
        self._lease_until = 0.0

    def notify(self) -> None:
        self.wakeup.set()

    def use_bootstrap(self, bootstrap: str) -> None:
        """Point the relay at another broker (the next attempt recreates the producer)."""
        self.bootstrap = bootstrap
        self.wakeup.set()

    async def run(self) -> None:
        backoff = 0.2
        next_sweep = 0.0
        while not self.stopping.is_set():
            try:
                if not await self._hold_lease():
                    await self._idle(self.lease_seconds / 3)
                    continue
                if time.monotonic() >= next_sweep:
                    await self.store.sweep_unflagged()
                    next_sweep = time.monotonic() + SWEEP_EVERY_SECONDS
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
        """Publish one batch of pending outboxes; returns how many events were sent."""
        docs = await self.store.pending_outbox(self.batch)
        self._update_gauges(docs)
        if not docs:
            return 0
        producer = await self._producer()
        futures = []
        published: dict[str, list[dict[str, Any]]] = {}
        for doc in docs:
            entries = doc.get("outbox") or []
            for entry in entries:
                topic = getattr(self.names, entry["topic"])
                value = entry["value"].encode() if entry["value"] is not None else None  # None: a tombstone
                futures.append((topic, await producer.send(topic, value,
                                                           key=entry["key"].encode())))
            if entries:
                published[doc["_id"]] = entries
        await asyncio.gather(*(f for _, f in futures))
        await self.store.mark_published(published, {doc["_id"]: doc["pending_seq"] for doc in docs})
        for topic, _ in futures:
            metrics.PUBLISHED.labels(topic).inc()
        self.published_total += len(futures)
        return len(futures)

    def _update_gauges(self, docs: list[dict[str, Any]]) -> None:
        backlog = sum(int(d.get("outbox_count", 0)) for d in docs)
        metrics.OUTBOX_BACKLOG.set(backlog)
        if not docs:
            metrics.OUTBOX_OLDEST_AGE.set(0)
            return
        now_ms = time.time() * 1000
        oldest = min((e.get("at_ms", now_ms) for d in docs for e in (d.get("outbox") or [])), default=now_ms)
        metrics.OUTBOX_OLDEST_AGE.set(max(0.0, (now_ms - oldest) / 1000))

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
