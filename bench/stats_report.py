"""Monthly report (月报) latency with a large ledger: JSON, HTML and xlsx, p50/p95 over repeated calls.

Seeds the ledger and its rollups like ``bench.stats_query`` (bulk inserts of synthetic case states for a
year), with some cases flagged as typical (典型案例), overdue-alerted and escalated, then the real FastAPI app
answers in-process. Also times the ledger download (``/v1/ledger?format=csv``) with a filter, which may read
many rows but must never answer 500.

    .venv/bin/python -m bench.stats_report [--cases 100000] [--queries 20] [--keep DBNAME]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import statistics
import time
import uuid
from datetime import timedelta
from pathlib import Path

import httpx

from bench.stats_query import pct
from harness.simulate import seed_stats_ledger, synthetic_state
from services.common.mongo import new_client
from services.common.workdays import local_date
from services.stats.domain import _dt

OUT = Path(__file__).resolve().parents[1] / "var" / "bench" / "stats_report.json"
MONTH = "2025-06"


def flagged_state(rng: random.Random, i: int, units: list[str]) -> dict:
    """A synthetic case; 1 in 100 flagged typical, 1 in 20 overdue-alerted, 1 in 100 escalated."""
    s = synthetic_state(rng, i, units)
    if rng.random() < 0.01:
        at = _dt(s["received_at"]) + timedelta(days=rng.randrange(0, 20))
        s.update(flagged=True, flagged_at=at.isoformat(), flagged_day=local_date(at).isoformat())
    else:
        s.update(flagged_at=None)
    s["overdue_alerted"] = rng.random() < 0.05
    s["escalated"] = s["overdue_alerted"] and rng.random() < 0.2
    return s


async def run(cases: int, queries: int, keep: str | None, ledger: bool) -> dict:
    client = new_client()
    name = keep or f"wenzheng_stats_benchr_{uuid.uuid4().hex[:8]}"
    db = client[name]
    try:
        build_seconds = 0.0
        if await db["ledger"].estimated_document_count() < cases:
            started = time.perf_counter()
            await seed_stats_ledger(db, cases, 115, state=flagged_state)
            build_seconds = time.perf_counter() - started
        from services.stats.api import create_app
        from services.stats.config import StatsSettings

        app = create_app(StatsSettings(database=name, consumer_enabled=False, instance_id="bench"))
        results: dict = {}
        started = time.perf_counter()
        async with app.router.lifespan_context(app):
            start_seconds = time.perf_counter() - started
            transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
            async with httpx.AsyncClient(transport=transport, base_url="http://b", timeout=None) as http:
                calls = [(f"monthly_{fmt}", "/v1/reports/monthly", {"month": MONTH, "format": fmt})
                         for fmt in ("json", "html", "xlsx")]
                if ledger:
                    calls.append(("ledger_csv_unit_month", "/v1/ledger",
                                  {"format": "csv", "unit": "unit_007", "month": MONTH}))
                for label, path, params in calls:
                    times, statuses, sizes = [], [], []
                    for _ in range(queries if label.startswith("monthly") else 1):
                        t = time.perf_counter()
                        response = await http.get(path, params=params)
                        times.append((time.perf_counter() - t) * 1000)
                        statuses.append(response.status_code)
                        sizes.append(len(response.content))
                    entry = {"p50_ms": round(statistics.median(times), 1), "p95_ms": round(pct(times, 0.95), 1),
                             "calls": len(times), "statuses": sorted(set(statuses)), "bytes": sizes[-1]}
                    if label == "monthly_json" and statuses[-1] == 200:
                        body = response.json()
                        entry.update(typical=len(body["typical_cases"]), late=len(body["overdue_and_escalated"]))
                    results[label] = entry
                    print(label, entry, flush=True)
        return {"cases": cases, "month": MONTH, "build_seconds": round(build_seconds, 1),
                "startup_seconds": round(start_seconds, 2), "latency": results, "database": name if keep else None}
    finally:
        if not keep:
            await client.drop_database(name)
        await client.close()


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.stats_report")
    parser.add_argument("--cases", type=int, default=100_000)
    parser.add_argument("--queries", type=int, default=20)
    parser.add_argument("--keep", help="reuse/keep this database (skip the build on a second run)")
    parser.add_argument("--no-ledger", action="store_true", help="skip the ledger download")
    args = parser.parse_args()
    result = asyncio.run(run(args.cases, args.queries, args.keep, not args.no_ledger))
    print(json.dumps(result, indent=2, ensure_ascii=False))
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(result, indent=2, ensure_ascii=False))


if __name__ == "__main__":
    main()
