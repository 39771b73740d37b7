"""aiokafka helpers: producers and consumers with the platform's settings, and the publisher of validated events
and dead letters (the consumer loop itself is :mod:`services.common.consumer`)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord

from services.common.config import TopicSettings, common_settings, topics
from services.common.events import (
    SPEC_BY_MODEL,
    Contract,
    Event,
    dead_letter_for,
    make_event,
)
from services.common.logging import get_logger

log = get_logger(__name__)


# every producer of the platform batches like this (faust's too: services/router/agents.py): a few
# milliseconds of waiting turn a message per request into a request per poll
PRODUCER_LINGER_MS = 5
PRODUCER_MAX_BATCH_BYTES = 256 * 1024


def new_producer(bootstrap: str | None = None, **overrides: Any) -> AIOKafkaProducer:
    """acks=all and idempotence on: a retried send never duplicates or reorders within a partition."""
    options: dict[str, Any] = {
        "bootstrap_servers": bootstrap or common_settings().kafka_bootstrap,
        "acks": "all",
        "enable_idempotence": True,
        "linger_ms": PRODUCER_LINGER_MS,
        "max_batch_size": PRODUCER_MAX_BATCH_BYTES,
        "compression_type": None,
        "request_timeout_ms": 30000,
    }
    options.update(overrides)
    return AIOKafkaProducer(**options)


def new_consumer(
    *topic_names: str,
    group_id: str | None,
    bootstrap: str | None = None,
    **overrides: Any,
) -> AIOKafkaConsumer:
    """Manual commits (after processing): at-least-once delivery; consumers must be idempotent."""
    options: dict[str, Any] = {
        "bootstrap_servers": bootstrap or common_settings().kafka_bootstrap,
        "group_id": group_id,
        "enable_auto_commit": False,
        "auto_offset_reset": "earliest",
        "max_poll_records": 500,
        "isolation_level": "read_committed",
    }
    options.update(overrides)
    return AIOKafkaConsumer(*topic_names, **options)


class EventPublisher:
    """Publishes payloads as CloudEvents to the topic their type belongs to, keyed by subject."""

    def __init__(self, producer: AIOKafkaProducer, *, source: str, names: TopicSettings | None = None):
        self.producer = producer
        self.source = source
        self.names = names or topics()

    def topic_for(self, data: Contract) -> str:
        return getattr(self.names, SPEC_BY_MODEL[type(data)].topic)

    async def publish(self, data: Contract, **envelope: Any) -> Event:
        event = make_event(data, source=self.source, **envelope)
        await self.send_event(event)
        return event

    async def send_event(self, event: Event, topic: str | None = None) -> None:
        topic = topic or getattr(self.names, SPEC_BY_MODEL[type(event.data)].topic)
        await self.producer.send_and_wait(topic, event.to_json(), key=event.key)

    async def send_events(self, events: Iterable[tuple[str, Event]]) -> None:
        """Send many, then wait for all: far faster than one round trip per event."""
        futures = [
            await self.producer.send(topic, event.to_json(), key=event.key) for topic, event in events
        ]
        if futures:
            await asyncio.gather(*futures)

    async def dead_letter(self, record: ConsumerRecord, error: Exception, *, service: str) -> None:
        letter = dead_letter_for(
            topic=record.topic,
            value=record.value,
            key=record.key,
            partition=record.partition,
            offset=record.offset,
            reason=str(error),
            error_type=type(error).__name__,
            service=service,
        )
        await self.publish(letter)
        log.warning("dead_lettered", topic=record.topic, partition=record.partition,
                    offset=record.offset, reason=str(error)[:300])
