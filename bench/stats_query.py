"""Overview and ranking query latency with a large ledger: p50/p95/p99 over repeated API calls.

The ledger and its rollups are written directly with bulk inserts (synthetic case states for a year, rollups
computed by the same domain code the projector uses), then the real FastAPI app answers in-process. Queries
read the app's in-memory rollup view, never the database; a query's result is reused until the rollups
change. So each query is timed three ways: repeated with nothing changing, right after a change (a log
entry appended, as any flush of any instance does, and read by the view before the timed call: the cost a
query pays under live load), and the first call. The figures also give the view's load time and size.

    .venv/bin/python -m bench.stats_query [--cases 1000000] [--units 115] [--queries 200]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import statistics
import time
import uuid
from pathlib import Path

import httpx

from harness.simulate import seed_stats_ledger
from services.common.mongo import new_client

OUT = Path(__file__).resolve().parents[1] / "var" / "bench" / "stats_query.json"
async def live_change(svc) -> None:
    """One more flush by another instance, as under load: a log entry with a replied case for every unit."""
    seq = svc.view.heads.get("bench-live", 0) + 1
    if seq == 1:
        await svc.store.register_owner("bench-live")
    case = {"received": 1, "replied": 1, "on_time": 1, f"rh.{50 + seq % 200}": 1}
    delta = {}
    for key in [("all", "all"), *(("unit", unit) for unit in svc.view.keys("unit"))]:
        for period in ("2025-06", "2025-06-15"):
            delta["|".join((*key, period))] = dict(case, received=len(delta) // 2 + 1)
    await svc.store.append_log("bench-live", seq, f"bench-{seq}", delta)
    await svc.view.catch_up()


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
            started = time.perf_counter()
            await seed_stats_ledger(db, cases, units)
            build_seconds = time.perf_counter() - started
        os.environ["WENZHENG_STATS_DATABASE"] = name
        from services.stats.api import create_app
        from services.stats.config import StatsSettings

        app = create_app(StatsSettings(database=name, consumer_enabled=False, instance_id="bench"))
        results = {}
        started = time.perf_counter()
        async with app.router.lifespan_context(app):
            load_seconds = time.perf_counter() - started
            svc = app.state.runtime
            view_size = len(svc.view.rollups())
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
                    changed = []
                    for _ in range(max(20, queries // 4)):
                        await live_change(svc)
                        changed.append(await timed())
                    results[label] = {"p50_ms": round(statistics.median(times), 2),
                                      "p95_ms": round(pct(times, 0.95), 2), "p99_ms": round(pct(times, 0.99), 2),
                                      "after_change_p50_ms": round(statistics.median(changed), 2),
                                      "after_change_p99_ms": round(pct(changed, 0.99), 2),
                                      "first_call_ms": round(cold, 1)}
        return {"cases": cases, "units": units, "build_seconds": round(build_seconds, 1),
                "view_load_seconds": round(load_seconds, 2), "view_rollups": view_size,
                "process_max_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
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
