"""How long a notifier worker takes to restore its state for 100,000 open cases (issue #17: a bounded restore).

    nice -n 10 .venv/bin/python -m bench.notifier_restore [--cases 100000] [--partitions 6]

Writes, on the real broker under throw-away topic names, what a worker's changelogs hold for that many open
cases (the cases changelog, one published alert for every other case, and the compacted contacts topic with
one contact per case), then starts the worker's deadline loop on a fresh group and times the assignment:
the changelog read (``ConsumerLoop.last_restore_seconds``) and the rebuild of the ladder's index (``adopt``).
Prints the figures and writes var/bench/notifier_restore.json; deletes its topics afterwards.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

from aiokafka.admin import AIOKafkaAdminClient

from services.common.config import CommonSettings, TopicSettings, common_settings
from services.common.consumer import ensure_changelogs
from services.common.events import CaseContact, make_event
from services.common.kafka import new_producer
from services.common.topics import create_topics
from services.common.workdays import default_calendar
from services.notifier.agents import NotifierWorker
from services.notifier.config import NotifierSettings
from services.notifier.domain import CaseState

OUT = Path("var/bench/notifier_restore.json")
START = datetime(2026, 9, 21, 1, tzinfo=UTC)


async def fill(bootstrap: str, worker: NotifierWorker, cases: int, partitions: int) -> None:
    state = worker.state
    await ensure_changelogs(bootstrap, worker.names.case_events, [s.changelog for s in state.all])
    producer = new_producer(bootstrap, linger_ms=50)
    await producer.start()
    deadline = default_calendar().add_working_days(START, 5)
    try:
        futures = []
        for i in range(cases):
            p, case_id = i % partitions, f"case-{i:07d}"
            doc = CaseState(case_id=case_id, tracking_number=f"WZ{i:010d}", partition=p, version=2,
                            department_id=f"dept_{i % 115:03d}", department_name="单位", category=f"cat{i % 12}",
                            county="章贡区", township=f"镇{i % 40}", assigned_at=START, deadline=deadline).to_doc()
            key = case_id.encode()
            futures.append(await producer.send(state.cases.changelog, json.dumps(doc).encode(), key=key, partition=p))
            contact = CaseContact(case_id=case_id, tracking_number=f"WZ{i:010d}", phone=f"139{i:08d}",
                                  recorded_at=START)
            futures.append(await producer.send(worker.names.case_contacts,
                                               make_event(contact, source="/bench").to_json(), key=key, partition=p))
            if i % 2 == 0:
                alert = [{"alert_id": f"unsigned:{case_id}:1:{START.isoformat()}", "kind": "unsigned"}]
                futures.append(await producer.send(state.published.changelog, json.dumps(alert).encode(), key=key,
                                                   partition=p))
            if len(futures) > 20000:
                await asyncio.gather(*futures)
                futures = []
        await asyncio.gather(*futures)
    finally:
        await producer.stop()


async def measure(cases: int, partitions: int) -> dict:
    bootstrap = common_settings().kafka_bootstrap
    run = uuid.uuid4().hex[:8]
    names = TopicSettings(**{k: f"bench.{run}.{v}" for k, v in TopicSettings().model_dump().items()})
    await create_topics(bootstrap, partitions=partitions, names=names)
    settings = NotifierSettings(group_id=f"bench-restore-{run}", port=0)
    worker = NotifierWorker(settings=settings, names=names, common=CommonSettings(kafka_bootstrap=bootstrap))
    try:
        started = time.perf_counter()
        await fill(bootstrap, worker, cases, partitions)
        written = time.perf_counter() - started
        stop = asyncio.Event()
        started = time.perf_counter()
        task = asyncio.create_task(worker.loop.run(stop))
        while len(worker.service.owned) < partitions:
            await asyncio.sleep(0.05)
            if task.done():
                task.result()
        assigned = time.perf_counter() - started
        figures = {
            "open_cases": cases, "partitions": partitions,
            "records_restored": worker.loop.restored_records,
            "restore_seconds": round(worker.loop.last_restore_seconds, 2),
            "start_to_adopted_seconds": round(assigned, 2),
            "cases_in_ladder_index": len(worker.service.states),
            "contacts_held": len(worker.state.contacts),
            "fill_seconds": round(written, 2),
        }
        stop.set()
        await asyncio.wait_for(task, 60)
        return figures
    finally:
        admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
        await admin.start()
        try:
            mine = [t for t in await admin.list_topics() if t.startswith(f"bench.{run}.") or run in t]
            await admin.delete_topics(mine)
        finally:
            await admin.close()


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.notifier_restore")
    parser.add_argument("--cases", type=int, default=100_000)
    parser.add_argument("--partitions", type=int, default=6)
    args = parser.parse_args()
    figures = asyncio.run(measure(args.cases, args.partitions))
    print(json.dumps(figures, ensure_ascii=False, indent=2))
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps({**figures, "measured_at": datetime.now(UTC).isoformat()}, indent=2))


if __name__ == "__main__":
    main()
