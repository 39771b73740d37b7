"""A transactional ConsumerLoop in its own process, for the kill -9 test (tests/common/test_consumer_loop.py).

Counts the events per case in a KeyedState and writes, per event, one output record naming the input
(partition, offset) and the count after it: outputs, changelog and offsets commit in one transaction, so
after any crash every input is in the output once and the counts run 1..n without a gap or a repeat.

    python -m tests.common.loop_worker BOOTSTRAP INPUT OUTPUT CHANGELOG GROUP TRANSACTIONAL_ID
"""

from __future__ import annotations

import asyncio
import json
import signal
import sys

from services.common.consumer import Batch, ConsumerLoop, KeyedState, Source


async def main(bootstrap: str, source: str, output: str, changelog: str, group: str, txid: str) -> None:
    counts: KeyedState[int] = KeyedState(changelog)
    loop: ConsumerLoop

    async def handle(batch: Batch) -> None:
        for event, record in batch.items:
            assert event is not None
            n = (counts.get(batch.partition, event.subject) or 0) + 1
            counts.put(batch.partition, event.subject, n)
            value = {"case": event.subject, "count": n, "partition": record.partition, "offset": record.offset}
            await loop.send(output, json.dumps(value).encode(), key=record.key, partition=batch.partition)
        await asyncio.sleep(0.05)  # a wide window for the kill to land inside a transaction

    loop = ConsumerLoop([Source(source, "case_events")], handle, service="tests", group_id=group,
                        bootstrap=bootstrap, states=[counts], transactional_id=txid, max_records=20,
                        session_timeout_ms=6000, heartbeat_interval_ms=1000)
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    await loop.run(stop)


if __name__ == "__main__":
    asyncio.run(main(*sys.argv[1:7]))
