"""Events applied per second by the stats projector against the local MongoDB-wire server.

Measures the apply path the consumer runs (facts -> ledger read by ids -> journal -> ledger swap; rollup
flushes, one log entry each, every --flush-seconds, and a last flush included in the time; folds into the
rollup documents as they fall due, every --fold-seconds, the first one at the first flush), the part that
bounds a consumer instance; Kafka fetch and parse are excluded (they run at >50k events/s here). The fold
still pending at the end is timed apart (``last_fold_seconds``): in a steady stream it is spread over
--fold-seconds. Database commands are counted as the service counts them (``new_client(service="stats")``,
``wenzheng_stats_db_commands_total``), by operation, for the first pass and for a replay of every event.

    .venv/bin/python -m bench.stats_apply [--cases 5000] [--batch 2000] [--flush-seconds 2] [--fold-seconds 30]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
import uuid
from pathlib import Path

from harness.simulate import simulate
from services.common.mongo import db_commands_counter, new_client
from services.stats.domain import fact_from_event
from services.stats.handlers import Projector
from services.stats.store import StatsStore

OUT = Path(__file__).resolve().parents[1] / "var" / "bench" / "stats_apply.json"


async def run(cases: int, batch: int, flush_seconds: float, fold_seconds: float) -> dict:
    sim = simulate(cases, seed=99)
    facts = [f for _t, e in sim.events if (f := fact_from_event(e)) is not None]
    client = new_client(service="stats")
    name = f"wenzheng_stats_bench_{uuid.uuid4().hex[:8]}"
    try:
        store = StatsStore(client[name])
        await store.ensure_indexes()
        projector = Projector(store, "bench", flush_seconds=flush_seconds, fold_seconds=fold_seconds)
        await projector.start()
        before = commands_sent()
        started = time.perf_counter()
        for i in range(0, len(facts), batch):  # as the consumer does: flushes run when due, in the background
            await projector.apply(facts[i:i + batch], flush=False)
        await projector.flush()
        elapsed = time.perf_counter() - started
        fold_started = time.perf_counter()
        await projector.fold()
        last_fold = time.perf_counter() - fold_started
        applied = commands_since(before)
        rollups = projector.rollups_flushed
        before = commands_sent()
        replay_started = time.perf_counter()
        for i in range(0, len(facts), batch):
            await projector.apply(facts[i:i + batch], flush=False)
        await projector.flush()
        replay = time.perf_counter() - replay_started
        replayed = commands_since(before)
    finally:
        await client.drop_database(name)
        await client.close()
    return {"cases": cases, "events": len(facts), "batch": batch,
            "seconds": round(elapsed, 2), "events_per_second": round(len(facts) / elapsed, 1),
            "flush_seconds": flush_seconds, "fold_seconds": fold_seconds, "rollup_increments": rollups,
            "last_fold_seconds": round(last_fold, 2),
            "replay_events_per_second": round(len(facts) / replay, 1),
            "db_commands": applied, "db_commands_per_event": round(sum(applied.values()) / len(facts), 4),
            "replay_db_commands": replayed,
            "replay_db_commands_per_event": round(sum(replayed.values()) / len(facts), 4)}


def commands_sent() -> dict[str, float]:
    """What ``wenzheng_stats_db_commands_total`` holds now, by operation."""
    return {sample.labels["operation"]: sample.value for metric in db_commands_counter("stats").collect()
            for sample in metric.samples if sample.name.endswith("_total")}


def commands_since(before: dict[str, float]) -> dict[str, int]:
    now = commands_sent()
    return {op: int(n - before.get(op, 0)) for op, n in sorted(now.items()) if n > before.get(op, 0)}


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.stats_apply")
    parser.add_argument("--cases", type=int, default=5000)
    parser.add_argument("--batch", type=int, default=2000)
    parser.add_argument("--flush-seconds", type=float, default=2.0)
    parser.add_argument("--fold-seconds", type=float, default=30.0)
    args = parser.parse_args()
    result = asyncio.run(run(args.cases, args.batch, args.flush_seconds, args.fold_seconds))
    print(json.dumps(result, indent=2))
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
