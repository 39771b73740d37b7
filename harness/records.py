"""A Kafka record as a consumer hands it over, for pure tests of what reads records (no broker)."""

from __future__ import annotations

from aiokafka import ConsumerRecord


def consumer_record(topic: str, partition: int, offset: int, key: bytes, value: bytes | None) -> ConsumerRecord:
    return ConsumerRecord(topic=topic, partition=partition, offset=offset, timestamp=0, timestamp_type=0, key=key,
                          value=value, checksum=None, serialized_key_size=len(key),
                          serialized_value_size=len(value or b""), headers=())
