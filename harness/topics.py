"""Reading a topic back, as a subscriber would, for end-to-end checks."""

from __future__ import annotations

from aiokafka import ConsumerRecord

from services.common.kafka import new_consumer


async def read_topic(bootstrap: str, topic: str, *, idle_polls: int = 3, poll_ms: int = 1000) -> list[ConsumerRecord]:
    """Every record from the beginning, until ``idle_polls`` polls in a row bring nothing new."""
    consumer = new_consumer(topic, group_id=None, bootstrap=bootstrap)
    await consumer.start()
    records: list[ConsumerRecord] = []
    idle = 0
    try:
        while idle < idle_polls:
            batch = await consumer.getmany(timeout_ms=poll_ms)
            idle = 0 if batch else idle + 1
            for part in batch.values():
                records.extend(part)
        return records
    finally:
        await consumer.stop()
