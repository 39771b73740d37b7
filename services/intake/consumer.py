"""Applies the router's decisions (wenzheng.routing-decisions.v1) to the cases, in a consumer group, on the
platform's one consumer loop (:class:`services.common.consumer.ConsumerLoop`).

Idempotent: a decision already applied, or made for an outdated case version, is skipped (the case keeps
the ids of the decisions it applied and the version that asked for routing). A message that is not a
valid decision, or one that cannot be applied (unknown case, missing unit), goes to the dead-letter topic.
The decisions of one poll are applied side by side (in order within a case), so their reads share ``$in``
finds and their writes share the outbox's groups: one bulk write for many decisions.
"""

from __future__ import annotations

import asyncio

from aiokafka import ConsumerRecord

from services.common.config import TopicSettings
from services.common.consumer import ConsumerLoop, KeyedConcurrency, Source
from services.common.events import Event, RoutingDecision
from services.common.logging import get_logger
from services.intake import metrics
from services.intake.domain import MalformedDecision
from services.intake.handlers import IntakeService

log = get_logger(__name__)
CONCURRENT_CASES = 64  # decisions for different cases are applied side by side; one case's stay in order


class DecisionConsumer:
    def __init__(self, service: IntakeService, names: TopicSettings, bootstrap: str, group_id: str,
                 source: str) -> None:
        self.service = service
        self.names = names
        self.bootstrap = bootstrap
        self.group_id = group_id
        self.source = source
        self.stop_event = asyncio.Event()
        self.loop: ConsumerLoop | None = None
        self.applied = 0
        self.dead_lettered = 0

    @property
    def running(self) -> bool:
        return self.loop is not None and self.loop.running

    async def handle(self, event: Event, record: ConsumerRecord) -> None:
        if not isinstance(event.data, RoutingDecision):  # pragma: no cover - parse_event checks the topic
            return
        try:
            outcome = await self.service.apply_decision(event.data)
        except MalformedDecision as exc:
            assert self.loop is not None and self.loop.publisher is not None
            self.dead_lettered += 1
            await self.loop.publisher.dead_letter(record, exc, service="intake")
            return
        if outcome == "applied":
            self.applied += 1

    def _count_dead_letter(self, _record: ConsumerRecord, _exc: Exception) -> None:
        self.dead_lettered += 1

    async def run(self) -> None:
        backoff = 0.5
        while not self.stop_event.is_set():
            self.loop = ConsumerLoop(
                [Source(self.names.routing_decisions, "routing_decisions")],
                KeyedConcurrency(self.handle, CONCURRENT_CASES),
                service="intake", group_id=self.group_id, bootstrap=self.bootstrap, names=self.names,
                health=metrics.CONSUMER, on_dead_letter=self._count_dead_letter, source_name=self.source,
                # decisions are keyed by case: a poll's partitions share the reads and the outbox's groups
                concurrent_partitions=True)
            try:
                await self.loop.run(self.stop_event)
                backoff = 0.5
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # Kafka or the database away: nothing of that poll was committed
                log.warning("decision_consumer_error", error=f"{type(exc).__name__}: {exc}"[:300], retry_in=backoff)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 10)

    async def stop(self) -> None:
        self.stop_event.set()
