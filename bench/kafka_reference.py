"""The reference ceiling: raw aiokafka produce and consume throughput on the same broker, same settings
as the services' producers (acks=all, idempotence). End-to-end figures are reported as a ratio of these.

    .venv/bin/python -m bench.kafka_reference [--messages 100000] [--size 700]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
import uuid
from pathlib import Path

from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from services.common.config import common_settings
from services.common.kafka import new_consumer, new_producer


async def measure(bootstrap: str, messages: int, size: int, partitions: int = 6) -> dict[str, float]:
    topic = f"bench.reference.{uuid.uuid4().hex[:8]}"
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    await admin.create_topics([NewTopic(topic, num_partitions=partitions, replication_factor=1)])
    payload = b"x" * size
    producer = new_producer(bootstrap)
    await producer.start()
    try:
        started = time.perf_counter()
        pending = []
        for i in range(messages):
            pending.append(await producer.send(topic, payload, key=str(i % 4096).encode()))
            if len(pending) >= 5000:
                await asyncio.gather(*pending)
                pending.clear()
        await asyncio.gather(*pending)
        produce_seconds = time.perf_counter() - started
    finally:
        await producer.stop()

    consumer = new_consumer(topic, group_id=None, bootstrap=bootstrap, max_poll_records=5000)
    await consumer.start()
    try:
        started, seen = time.perf_counter(), 0
        while seen < messages:
            for records in (await consumer.getmany(timeout_ms=1000, max_records=5000)).values():
                seen += len(records)
        consume_seconds = time.perf_counter() - started
    finally:
        await consumer.stop()
        await admin.delete_topics([topic])
        await admin.close()
    return {
        "messages": messages,
        "message_bytes": size,
        "produce_per_second": round(messages / produce_seconds, 1),
        "consume_per_second": round(messages / consume_seconds, 1),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.kafka_reference")
    parser.add_argument("--bootstrap", default=common_settings().kafka_bootstrap)
    parser.add_argument("--messages", type=int, default=100_000)
    parser.add_argument("--size", type=int, default=700, help="bytes per message (a case event is ~700)")
    args = parser.parse_args(argv)
    result = asyncio.run(measure(args.bootstrap, args.messages, args.size))
    print(json.dumps(result, indent=2))
    out = Path("var/bench/kafka_reference.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
