"""Overview and ranking query latency with a large ledger: p50/p95/p99 over repeated API calls.

The ledger and its rollups are written directly with bulk inserts (synthetic case states for a year, rollups
computed by the same domain code the projector uses), then the real FastAPI app answers in-process. Queries
read rollups only (by _id), never the ledger; a query's result is reused until the rollups change, so the
figures show the first (cold) call of each query apart from the repeated ones.

    .venv/bin/python -m bench.stats_query [--cases 1000000] [--units 115] [--queries 200]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import statistics
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
from prometheus_client import CollectorRegistry

from services.common.mongo import new_client
from services.common.workdays import SHANGHAI, local_date
from services.stats.domain import contributions, merge_counters, reply_tenths
from services.stats.simulate import CATEGORIES
from services.stats.simulate import COUNTIES as SIM_COUNTIES
from services.stats.store import StatsStore

OUT = Path(__file__).resolve().parents[1] / "var" / "bench" / "stats_query.json"
START = datetime(2025, 1, 1, tzinfo=SHANGHAI)


def synthetic_state(rng: random.Random, i: int, units: list[str]) -> dict:
    received = (START + timedelta(minutes=rng.randrange(365 * 24 * 60))).astimezone(UTC)
    deadline = received + timedelta(days=rng.choice((5, 7)))
    deadline = datetime.combine(local_date(deadline), datetime.min.time(), tzinfo=SHANGHAI).astimezone(UTC)
    replied = rng.random() < 0.92
    reply_at = received + timedelta(hours=rng.randrange(1, 200)) if replied else None
    rating = rng.choice(("satisfied", "basically_satisfied", "unsatisfied")) if replied and rng.random() < 0.1 \
        else None
    return {
        "tracking_number": f"GZ{i:010d}", "received_at": received.isoformat(), "unit": rng.choice(units),
        "category": rng.choice(CATEGORIES), "county": rng.choice(SIM_COUNTIES), "deadline": deadline.isoformat(),
        "signed_at": None, "first_reply_at": reply_at.isoformat() if reply_at else None,
        "on_time": bool(reply_at and reply_at <= deadline) if replied else None,
        "reply_tenths": reply_tenths(rng.uniform(0.5, 60)) if replied else None, "rating": rating,
        "rated_round": 1 if rating else None, "second_handling": 0, "returns": 0, "returned_by": {},
        "closed_at": None, "flagged": False, "overdue_alerted": False, "escalated": False,
        "awaiting_reply": not replied, "status": "replied" if replied else "assigned", "version": 3,
        "received_day": local_date(received).isoformat(),
    }


async def build(db, cases: int, units: int) -> float:
    """Seed the ledger (bulk inserts of ledger documents) and the rollups those cases add up to."""
    rng = random.Random(7)
    unit_ids = [f"unit_{i:03d}" for i in range(units)]
    rollups: dict[str, dict[str, int]] = {}
    store = StatsStore(db)
    started = time.perf_counter()
    chunk = []
    for i in range(cases):
        s = synthetic_state(rng, i, unit_ids)
        merge_counters(rollups, contributions(s))
        chunk.append({"_id": f"bench-{i:08d}", "rev": 1, "events": [], "s": s})
        if len(chunk) == 1000:
            await store.replace_cases(chunk, existing=set())
            chunk = []
        if i and i % 100_000 == 0:
            print(f"seeded {i} cases in {time.perf_counter() - started:.0f} s", flush=True)
    if chunk:
        await store.replace_cases(chunk, existing=set())
    await store.insert_rollups(rollups)
    return time.perf_counter() - started


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def run(cases: int, units: int, queries: int, keep: str | None) -> dict:
    client = new_client()
    name = keep or f"wenzheng_stats_benchq_{uuid.uuid4().hex[:8]}"
    db = client[name]
    try:
        build_seconds = 0.0
        if await db["ledger"].estimated_document_count() < cases:
            build_seconds = await build(db, cases, units)
        os.environ["WENZHENG_STATS_DATABASE"] = name
        from services.stats.api import create_app
        from services.stats.config import StatsSettings

        app = create_app(StatsSettings(database=name, consumer_enabled=False, instance_id="bench"),
                         registry=CollectorRegistry())
        results = {}
        async with app.router.lifespan_context(app):
            async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://b") as http:
                for label, path, params in [
                    ("overview_month", "/v1/stats/overview", {"month": "2025-06"}),
                    ("overview_all_time", "/v1/stats/overview", {}),
                    ("ranking_month", "/v1/stats/departments", {"month": "2025-06"}),
                    ("ranking_year", "/v1/stats/departments", {"from": "2025-01-01", "to": "2025-12-31"}),
                    ("overview_partial_period", "/v1/stats/overview", {"from": "2025-03-10", "to": "2025-05-20"}),
                ]:
                    async def timed() -> float:
                        t = time.perf_counter()
                        response = await http.get(path, params=params)  # noqa: B023
                        assert response.status_code == 200, response.text
                        return (time.perf_counter() - t) * 1000

                    cold = await timed()
                    times = [await timed() for _ in range(queries)]
                    uncached = []
                    for _ in range(3):  # as if a flush had just changed the rollups
                        await app.state.svc.store.changed()
                        uncached.append(await timed())
                    results[label] = {"p50_ms": round(statistics.median(times), 2),
                                      "p95_ms": round(pct(times, 0.95), 2), "p99_ms": round(pct(times, 0.99), 2),
                                      "first_call_ms": round(cold, 1),
                                      "after_rollup_change_p50_ms": round(statistics.median(uncached), 1),
                                      "after_rollup_change_max_ms": round(max(uncached), 1)}
        return {"cases": cases, "units": units, "build_seconds": round(build_seconds, 1),
                "queries_each": queries, "latency": results, "database": name if keep else None}
    finally:
        if not keep:
            await client.drop_database(name)
        await client.close()


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.stats_query")
    parser.add_argument("--cases", type=int, default=1_000_000)
    parser.add_argument("--units", type=int, default=115)
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--keep", help="reuse/keep this database (skip the build on a second run)")
    args = parser.parse_args()
    result = asyncio.run(run(args.cases, args.units, args.queries, args.keep))
    print(json.dumps(result, indent=2))
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
