"""Alert evaluation for 100,000 open cases on one worker: memory, a full evaluation, and the periodic scan.

    .venv/bin/python -m bench.notifier_scan [--cases 100000]

Prints figures and writes var/bench/notifier_scan.json. No broker or database: the scan's publisher is a
null one (publishing cost is Kafka's, measured in bench.kafka_reference); this measures the notifier's own work.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import random
import time
import tracemalloc
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psutil

from services.common.clock import FixedClock
from services.common.workdays import default_calendar
from services.notifier.config import LadderSettings, NotifierSettings
from services.notifier.domain import CaseState, due_alerts
from services.notifier.handlers import NotifierService
from services.notifier.store import NotifierState

OUT = Path("var/bench/notifier_scan.json")
START = datetime(2026, 9, 21, 1, tzinfo=UTC)  # a Monday morning in Shanghai, before National Day


class NullPublisher:
    def __init__(self) -> None:
        self.count = 0

    async def alerts(self, items: list) -> list[bool]:
        self.count += len(items)
        return [True] * len(items)

    async def notification(self, notification: object, partition: int) -> None:
        return None

    async def dead_letter(self, letter: object) -> None:
        return None


def make_cases(n: int, rng: random.Random) -> list[CaseState]:
    cal = default_calendar()
    deadlines = {d: cal.add_working_days(START - timedelta(days=d), 5) for d in range(0, 10)}
    cases = []
    for i in range(n):
        age = rng.randrange(0, 10)
        cases.append(CaseState(
            case_id=f"case-{i:07d}", tracking_number=f"WZ{i:010d}", partition=i % 6, version=2,
            department_id=f"dept_{i % 115:03d}", department_name="单位", category=f"cat{i % 12}",
            county="章贡区", township=f"镇{i % 40}", assigned_at=START - timedelta(days=age, hours=rng.random()),
            deadline=deadlines[age], signed=rng.random() < 0.8))
    return cases


def new_service(clock: FixedClock) -> NotifierService:
    return NotifierService(NotifierState("bench", "contacts"), NullPublisher(), default_calendar(), clock,
                           LadderSettings(), NotifierSettings())


def adopt_all(service: NotifierService, cases: list[CaseState]) -> None:
    for p in range(6):
        service.adopt(p, [c for c in cases if c.partition == p], [], [])
        service.caught_up.add(p)


async def run(n: int) -> dict:
    rng = random.Random(7)
    process = psutil.Process()
    gc.collect()
    rss_before = process.memory_info().rss
    tracemalloc.start()
    cases = make_cases(n, rng)
    clock = FixedClock(START)
    service = new_service(clock)
    adopt_all(service, cases)
    traced_now, traced_peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    gc.collect()
    rss_after = process.memory_info().rss
    # timings without tracemalloc's overhead: a fresh worker taking over the same partitions
    del service
    gc.collect()
    service = new_service(clock)
    started = time.perf_counter()
    adopt_all(service, cases)
    adopt_seconds = time.perf_counter() - started

    # naive reference: evaluate every open case's ladder (what a scan without the index would do)
    started = time.perf_counter()
    naive_due = sum(len(due_alerts(c, START, service.calendar, service.ladder_settings)) for c in cases)
    naive_seconds = time.perf_counter() - started

    # the first scan at START publishes the backlog already due, in bounded steps as the worker does
    started = time.perf_counter()
    first_alerts, step_times = 0, []
    while True:
        step_started = time.perf_counter()
        first_alerts += await service.scan()
        step_times.append(time.perf_counter() - step_started)
        if not service.backlog:
            break
    first_scan_seconds = time.perf_counter() - started

    # then a working day of 1-second scans compressed: every 10 minutes of clock, scan
    steady_times, steady_alerts = [], 0
    for _ in range(6 * 24):
        clock.advance(timedelta(minutes=10))
        started = time.perf_counter()
        steady_alerts += await service.scan()
        steady_times.append(time.perf_counter() - started)
    idle = []
    for _ in range(200):  # scans where nothing is due: the common case at a 1 s interval
        started = time.perf_counter()
        await service.scan()
        idle.append(time.perf_counter() - started)
    steady_times.sort()
    idle.sort()
    return {
        "open_cases": n,
        "rss_mib_for_cases": round((rss_after - rss_before) / 2**20, 1),
        "rss_mib_total": round(rss_after / 2**20, 1),
        "tracemalloc_mib": round(traced_now / 2**20, 1),
        "tracemalloc_peak_mib": round(traced_peak / 2**20, 1),
        "bytes_per_case": round((rss_after - rss_before) / n),
        "adopt_and_index_seconds": round(adopt_seconds, 3),
        "full_evaluation_seconds": round(naive_seconds, 3),
        "full_evaluation_due_alerts": naive_due,
        "first_scan_seconds": round(first_scan_seconds, 3),
        "first_scan_alerts": first_alerts,
        "first_scan_alerts_per_second": round(first_alerts / first_scan_seconds) if first_scan_seconds else None,
        "first_scan_steps": len(step_times),
        "first_scan_longest_step_ms": round(max(step_times) * 1000, 1),
        "steady_scans": len(steady_times),
        "steady_alerts": steady_alerts,
        "steady_scan_p50_ms": round(steady_times[len(steady_times) // 2] * 1000, 2),
        "steady_scan_max_ms": round(steady_times[-1] * 1000, 2),
        "idle_scan_p50_us": round(idle[len(idle) // 2] * 1e6, 1),
        "index_size_after": len(service.index),
    }


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.notifier_scan")
    parser.add_argument("--cases", type=int, default=100_000)
    args = parser.parse_args()
    result = asyncio.run(run(args.cases))
    for key, value in result.items():
        print(f"{key:32} {value}")
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(result, indent=2), encoding="utf-8")
    print(f"written {OUT}")


if __name__ == "__main__":
    main()
