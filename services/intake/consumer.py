"""Applies the router's decisions (wenzheng.routing-decisions.v1) to the cases, in a consumer group.

Idempotent: a decision already applied, or made for an outdated case version, is skipped (the case keeps
the ids of the decisions it applied and the version that asked for routing). A message that is not a
valid decision, or one that cannot be applied (unknown case, missing unit), goes to the dead-letter topic.
"""

from __future__ import annotations

import asyncio
import contextlib

from aiokafka import AIOKafkaConsumer, ConsumerRecord

from services.common.config import TopicSettings
from services.common.events import Event, RoutingDecision
from services.common.kafka import EventPublisher, consume_events, end_offsets_lag, new_consumer, new_producer
from services.common.logging import get_logger
from services.intake import metrics
from services.intake.domain import MalformedDecision
from services.intake.handlers import IntakeService

log = get_logger(__name__)
CONCURRENT_CASES = 32  # decisions for different cases are applied side by side; one case's stay in order


class DecisionConsumer:
    def __init__(self, service: IntakeService, names: TopicSettings, bootstrap: str, group_id: str,
                 source: str) -> None:
        self.service = service
        self.names = names
        self.bootstrap = bootstrap
        self.group_id = group_id
        self.source = source
        self.stop_event = asyncio.Event()
        self.consumer: AIOKafkaConsumer | None = None
        self.publisher: EventPublisher | None = None
        self.running = False
        self.applied = 0
        self.dead_lettered = 0

    async def handle(self, event: Event, record: ConsumerRecord) -> None:
        assert self.publisher is not None
        if not isinstance(event.data, RoutingDecision):  # pragma: no cover - parse_event checks the topic
            return
        try:
            outcome = await self.service.apply_decision(event.data)
        except MalformedDecision as exc:
            self.dead_lettered += 1
            await self.publisher.dead_letter(record, exc, service="intake")
            return
        if outcome == "applied":
            self.applied += 1
        metrics.CONSUMER.applied()

    async def run(self) -> None:
        backoff = 0.5
        while not self.stop_event.is_set():
            producer = new_producer(self.bootstrap)
            consumer = new_consumer(self.names.routing_decisions, group_id=self.group_id, bootstrap=self.bootstrap)
            try:
                await producer.start()
                await consumer.start()
                self.consumer = consumer
                self.publisher = EventPublisher(producer, source=self.source, names=self.names)
                self.running = True
                lag_task = asyncio.create_task(self._report_lag(consumer))
                try:
                    await consume_events(consumer, self.handle, publisher=self.publisher, service="intake",
                                         expected_topic_key="routing_decisions", stop=self.stop_event,
                                         on_dead_letter=lambda *_: self._count_dead_letter(),
                                         concurrent_keys=CONCURRENT_CASES)
                finally:
                    lag_task.cancel()
                backoff = 0.5
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("decision_consumer_error", error=f"{type(exc).__name__}: {exc}"[:300], retry_in=backoff)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 10)
            finally:
                self.running = False
                self.consumer = None
                for client in (consumer, producer):
                    with contextlib.suppress(Exception):
                        await asyncio.wait_for(client.stop(), 5)

    def _count_dead_letter(self) -> None:
        self.dead_lettered += 1

    async def _report_lag(self, consumer: AIOKafkaConsumer) -> None:
        while True:
            await asyncio.sleep(5)
            with contextlib.suppress(Exception):
                lag = await end_offsets_lag(consumer)
                metrics.CONSUMER.lag.labels(self.names.routing_decisions).set(sum(lag.values()))

    async def stop(self) -> None:
        self.stop_event.set()
