"""Topics in tests and benchmarks: reading one back as a subscriber would, and pruning what earlier runs left."""

from __future__ import annotations

import asyncio

from aiokafka import ConsumerRecord
from aiokafka.admin import AIOKafkaAdminClient

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


KEPT_PREFIXES = ("wenzheng", "__", "_confluent", "_schemas")  # the platform's own topics, Kafka's internal ones


async def prune_test_topics(bootstrap: str) -> int:
    """Delete the throw-away topics earlier test and bench runs left on the local broker (each run makes its
    own, under unique names): thousands of partitions hold a file handle each, and the broker stops
    accepting connections when it runs out. The platform's own topics stay."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        doomed = [name for name in await admin.list_topics() if not name.startswith(KEPT_PREFIXES)]
        for start in range(0, len(doomed), 200):
            await admin.delete_topics(doomed[start:start + 200])
        return len(doomed)
    finally:
        await admin.close()


LOCAL_HOSTS = ("127.0.0.1", "localhost", "[::1]")


if __name__ == "__main__":  # `make test`, before the tests: python -m harness.topics
    from services.common.config import common_settings

    bootstrap = common_settings().kafka_bootstrap
    if all(server.rsplit(":", 1)[0] in LOCAL_HOSTS for server in bootstrap.split(",")):
        removed = asyncio.run(prune_test_topics(bootstrap))
        print(f"[test] removed {removed} topics left by earlier test runs")
    else:  # somebody else's broker: its topics are not ours to delete
        print(f"[test] not pruning topics on {bootstrap}: only the project's local broker is pruned")
