"""Readiness probe for the local infrastructure: a Kafka metadata request and a MongoDB ``ping``."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
import time

from aiokafka import AIOKafkaClient
from pymongo import AsyncMongoClient


async def kafka_ready(bootstrap: str) -> None:
    client = AIOKafkaClient(bootstrap_servers=bootstrap, request_timeout_ms=5000)
    try:
        await client.bootstrap()
        metadata = await client.fetch_all_metadata()
        if not metadata.brokers():
            raise RuntimeError("metadata lists no broker yet")
    finally:
        await client.close()


async def mongo_ready(url: str) -> None:
    client: AsyncMongoClient = AsyncMongoClient(url, serverSelectionTimeoutMS=3000)
    try:
        await client.admin.command("ping")
    finally:
        await client.close()


async def wait(kafka: str | None, mongo: str | None, timeout: float) -> list[str]:
    """Poll until both answer; returns the list of what is still not ready when time runs out."""
    deadline = time.monotonic() + timeout
    pending = {name: (probe, target) for name, probe, target in
               (("kafka", kafka_ready, kafka), ("mongodb", mongo_ready, mongo)) if target}
    last_error: dict[str, str] = {}
    while pending and time.monotonic() < deadline:
        for name, (probe, target) in list(pending.items()):
            try:
                await asyncio.wait_for(probe(target), timeout=10)
                del pending[name]
                print(f"[infra] {name} ready at {target}")
            except Exception as exc:
                last_error[name] = f"{type(exc).__name__}: {exc}"
        if pending:
            await asyncio.sleep(0.5)
    return [f"{name} at {target[1]}: {last_error.get(name, 'no answer')}" for name, target in pending.items()]


def main(argv: list[str] | None = None) -> int:
    logging.getLogger("aiokafka").setLevel(logging.CRITICAL)  # refused connections are expected while starting
    parser = argparse.ArgumentParser(prog="python -m services.common.infra_check")
    parser.add_argument("--kafka")
    parser.add_argument("--mongo")
    parser.add_argument("--timeout", type=float, default=60)
    args = parser.parse_args(argv)
    failures = asyncio.run(wait(args.kafka, args.mongo, args.timeout))
    for failure in failures:
        print(f"[infra] not ready after {args.timeout:.0f}s: {failure}", file=sys.stderr)
    return 1 if failures else 0


if __name__ == "__main__":
    raise SystemExit(main())
