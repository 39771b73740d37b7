"""`make bench`: the whole platform under increasing load, measured end to end.

Starts the four services as separate processes (harness/platform.py, same commands as `make run`,
private topics and databases), then, in the same run:
  1. the reference ceiling: raw aiokafka produce/consume throughput on the same broker;
  2. an open-loop load of realistic posts at increasing rates through intake's public API;
  3. per post: submit → assigned (seen on the public case-events topic) and submit → counted in stats
     (stats' `received` counter polled; the k-th accepted post is counted once received ≥ k);
  4. per process (the load generator, each service, the broker and the database server): CPU milliseconds
     and database commands (``wenzheng_<service>_db_commands_total``) per accepted post, consumer lag at the end.
A post that intake sheds (503, or 429) is tried again after its ``Retry-After``, as a well-behaved client would;
shed answers are counted apart from errors.
Prints a summary and writes var/bench/latest.json. No pass/fail: figures for people to read.

    .venv/bin/python -m bench.platform_load [--rates 25,50,100,200,400,800,1200] [--stage-seconds 10]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import statistics
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import httpx
import psutil
from aiokafka.admin import AIOKafkaAdminClient

from bench.kafka_reference import measure as kafka_reference
from harness.costs import Reading, cost_per_post, cpu_seconds, db_commands, retry_after_seconds
from harness.platform import TEST_SHED_BOUNDS, Platform
from harness.posts import realistic_post
from services.common.kafka import new_consumer
from services.intake.config import IntakeSettings

OUT = Path("var/bench/latest.json")
MAX_IN_FLIGHT = 128
RETRIES_AFTER_SHEDDING = 3  # a shed post is tried again after Retry-After, at most this many times


def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))
    return round(ordered[index], 4)


@dataclass
class Record:
    submitted: dict[str, float] = field(default_factory=dict)  # tracking number -> monotonic submit time
    accepted_order: list[str] = field(default_factory=list)
    assigned: dict[str, float] = field(default_factory=dict)
    latencies_http: list[float] = field(default_factory=list)
    http_by_post: dict[str, float] = field(default_factory=dict)
    errors: dict[str, int] = field(default_factory=dict)
    shed: int = 0  # answers 503/429 with Retry-After (each attempt)
    counted_polls: list[tuple[float, int]] = field(default_factory=list)


async def watch_assignments(platform: Platform, record: Record, stop: asyncio.Event) -> None:
    consumer = new_consumer(platform.topics.case_events, group_id=None, bootstrap=platform.kafka_bootstrap,
                            auto_offset_reset="latest")
    await consumer.start()
    try:
        while not stop.is_set():
            for records in (await consumer.getmany(timeout_ms=200, max_records=2000)).values():
                now = time.monotonic()
                for message in records:
                    if b"case.assigned" not in message.value and b"case.triaged" not in message.value:
                        continue
                    # plain JSON, not the validated event model: the watcher runs on the platform's two cores
                    tracking = json.loads(message.value)["data"]["tracking_number"]
                    record.assigned.setdefault(tracking, now)
    finally:
        await consumer.stop()


async def poll_stats(platform: Platform, record: Record, stop: asyncio.Event) -> None:
    async with httpx.AsyncClient(base_url=platform.url("stats"), timeout=5) as client:
        while not stop.is_set():
            try:
                response = await client.get("/v1/stats/overview")
                if response.status_code == 200:
                    record.counted_polls.append((time.monotonic(), int(response.json()["received"])))
            except httpx.HTTPError:
                pass
            await asyncio.sleep(0.1)


async def submit_stage(client: aiohttp.ClientSession, rate: float, seconds: float, record: Record,
                       rng: random.Random) -> dict:
    interval = 1 / rate
    start = time.monotonic()
    tasks: list[asyncio.Task] = []
    accepted_before = len(record.accepted_order)
    sent = 0

    shed_before = record.shed

    async def one(post: dict) -> None:
        for attempt in range(RETRIES_AFTER_SHEDDING + 1):
            t0 = time.monotonic()
            try:
                async with client.post("/v1/posts", json=post) as response:
                    status, headers = response.status, response.headers
                    body = await response.json() if status == 201 else None
            except (TimeoutError, aiohttp.ClientError) as exc:
                record.errors[type(exc).__name__] = record.errors.get(type(exc).__name__, 0) + 1
                return
            elapsed = time.monotonic() - t0
            if status in (429, 503) and "Retry-After" in headers:
                record.shed += 1
                if attempt < RETRIES_AFTER_SHEDDING:
                    await asyncio.sleep(retry_after_seconds(headers))
                continue
            if status == 201:
                tracking = body["tracking_number"]
                record.submitted[tracking] = t0
                record.accepted_order.append(tracking)
                record.latencies_http.append(elapsed)
                record.http_by_post[tracking] = elapsed
            else:
                key = f"http_{status}"
                record.errors[key] = record.errors.get(key, 0) + 1
            return
        record.errors["gave_up_after_shedding"] = record.errors.get("gave_up_after_shedding", 0) + 1

    in_flight = asyncio.Semaphore(MAX_IN_FLIGHT)
    skipped = 0

    async def bounded(post: dict) -> None:
        try:
            await one(post)
        finally:
            in_flight.release()

    while (now := time.monotonic()) - start < seconds:
        due = int((now - start) / interval) + 1
        while sent + skipped < due:
            if in_flight.locked():  # the platform is not keeping up: an open-loop client would give up here
                skipped += 1
                continue
            await in_flight.acquire()
            tasks.append(asyncio.create_task(bounded(realistic_post(rng))))
            sent += 1
        await asyncio.sleep(min(interval, 0.005))
    await asyncio.gather(*tasks)
    elapsed = time.monotonic() - start
    accepted = len(record.accepted_order) - accepted_before
    return {"offered_per_second": rate, "sent": sent, "not_sent_backpressure": skipped, "accepted": accepted,
            "accepted_per_second": round(accepted / elapsed, 1), "shed_answers": record.shed - shed_before,
            "seconds": round(elapsed, 2)}


def counted_latencies(record: Record) -> dict[str, float]:
    """Per post: the k-th accepted post counts as counted when stats first reports received ≥ k."""
    latencies, poll_index = {}, 0
    polls = record.counted_polls
    ordered = sorted(record.accepted_order, key=lambda t: record.submitted[t])
    for k, tracking in enumerate(ordered, start=1):
        while poll_index < len(polls) and polls[poll_index][1] < k:
            poll_index += 1
        if poll_index == len(polls):
            break
        latencies[tracking] = max(0.0, polls[poll_index][0] - record.submitted[tracking])
    return latencies


def stage_latencies(record: Record, posts: list[str], counted: dict[str, float]) -> dict[str, float | None]:
    """p50/p99 of one stage's own posts: the overall percentiles mix a sustainable stage with an overloaded one."""
    http = [record.http_by_post[t] for t in posts if t in record.http_by_post]
    assigned = [record.assigned[t] - record.submitted[t] for t in posts if t in record.assigned]
    in_stats = [counted[t] for t in posts if t in counted]
    return {"http_p50": percentile(http, 0.5), "http_p99": percentile(http, 0.99),
            "assigned_p50": percentile(assigned, 0.5), "assigned_p99": percentile(assigned, 0.99),
            "counted_p50": percentile(in_stats, 0.5), "counted_p99": percentile(in_stats, 0.99)}


async def consumer_lag(platform: Platform) -> dict[str, int]:
    admin = AIOKafkaAdminClient(bootstrap_servers=platform.kafka_bootstrap)
    await admin.start()
    consumer = new_consumer(group_id=None, bootstrap=platform.kafka_bootstrap)
    await consumer.start()
    try:
        lags = {}
        for group_id, _protocol in await admin.list_consumer_groups():
            if not isinstance(group_id, str):
                continue
            offsets = await admin.list_consumer_group_offsets(group_id)
            mine = {tp: meta.offset for tp, meta in offsets.items() if tp.topic.startswith(f"e2e.{platform.run_id}.")}
            if not mine:
                continue
            ends = await consumer.end_offsets(list(mine))
            lags[group_id] = int(sum(max(0, ends[tp] - off) for tp, off in mine.items() if off >= 0))
        return lags
    finally:
        await consumer.stop()
        await admin.close()


INFRA_PID_FILES = {"infra:kafka": Path("var/kafka/kafka.pid"),
                   "infra:mongodb-wire (ferretdb)": Path("var/ferretdb/ferretdb.pid")}


LOAD_GENERATOR = "bench:load generator"


def process_usage(platform: Platform) -> dict[str, psutil.Process]:
    """The four services' processes, and the local broker and database server when `make infra-up` runs
    them: their CPU is where the benchmark shows the platform's bottleneck. The load generator too."""
    processes = {r.label: psutil.Process(r.process.pid) for group in platform.replicas.values() for r in group
                 if r.process and r.process.poll() is None}
    processes[LOAD_GENERATOR] = psutil.Process()
    for label, pid_file in INFRA_PID_FILES.items():
        try:
            processes[label] = psutil.Process(int(pid_file.read_text().strip()))
        except (OSError, ValueError, psutil.Error):
            continue
    return processes


async def readings(platform: Platform, processes: dict[str, psutil.Process]) -> dict[str, Reading]:
    """Each process's CPU so far and, for a service, the database commands its /metrics counts."""
    urls = {r.label: r.url for group in platform.replicas.values() for r in group}
    commands = dict(zip(urls, await asyncio.gather(*(db_commands(url) for url in urls.values())), strict=True))
    out = {}
    for label, process in processes.items():
        try:
            if label == LOAD_GENERATOR:  # the services are its children: count the generator alone
                out[label] = Reading(cpu_seconds(process, children=False), 0)
            else:
                out[label] = Reading(cpu_seconds(process), commands.get(label))
        except psutil.Error:
            continue
    return out


async def run(rates: list[float], stage_seconds: float, drain_seconds: float, reference_messages: int) -> dict:
    production_shedding = {f"WENZHENG_INTAKE_{name.upper()}": str(IntakeSettings.model_fields[name].default)
                           for name in TEST_SHED_BOUNDS}
    platform = Platform(run_id=f"bench{uuid.uuid4().hex[:6]}", base_port=18100,
                        extra_env={"WENZHENG_INTAKE_RATE_LIMIT_ENABLED": "false", "WENZHENG_LOG_LEVEL": "WARNING",
                                   **production_shedding})
    reference = await kafka_reference(platform.kafka_bootstrap, reference_messages, 700)
    print(f"reference: raw aiokafka produce {reference['produce_per_second']}/s, "
          f"consume {reference['consume_per_second']}/s")
    platform.start_all()
    record, stop = Record(), asyncio.Event()
    processes = process_usage(platform)
    for p in processes.values():
        p.cpu_percent(None)
    cpu_start = {label: sum(p.cpu_times()[:2]) for label, p in processes.items()}
    cost_start = await readings(platform, processes)
    watchers = [asyncio.create_task(watch_assignments(platform, record, stop)),
                asyncio.create_task(poll_stats(platform, record, stop))]
    await asyncio.sleep(1.0)
    rng = random.Random(20261127)
    stages: list[dict] = []
    stage_posts: list[list[str]] = []
    load_started = time.monotonic()
    # aiohttp, not httpx: httpx's pool scans every connection on each request, and with 128 posts in flight
    # the load generator took more CPU per post than any service, on the same two cores
    connector = aiohttp.TCPConnector(limit=2 * MAX_IN_FLIGHT)
    try:
        async with aiohttp.ClientSession(base_url=platform.url("intake"), connector=connector,
                                         timeout=aiohttp.ClientTimeout(total=30)) as client:
            for rate in rates:
                before = len(record.accepted_order)
                stage = await submit_stage(client, rate, stage_seconds, record, rng)
                stage_posts.append(record.accepted_order[before:])
                print(f"stage {rate:>6.0f}/s offered: {stage['accepted_per_second']}/s accepted "
                      f"({stage['accepted']}/{stage['sent']}), {stage['shed_answers']} shed answers")
                stages.append(stage)
        load_seconds = time.monotonic() - load_started
        drain_deadline = time.monotonic() + drain_seconds
        while time.monotonic() < drain_deadline:
            counted = record.counted_polls[-1][1] if record.counted_polls else 0
            if len(record.assigned) >= len(record.accepted_order) and counted >= len(record.accepted_order):
                break
            await asyncio.sleep(0.5)
        usage = {label: {"cpu_seconds": round(sum(p.cpu_times()[:2]) - cpu_start[label], 2),
                         "cpu_percent_avg": round(100 * (sum(p.cpu_times()[:2]) - cpu_start[label]) / load_seconds, 1),
                         "rss_mib": round(p.memory_info().rss / 2**20, 1)}
                 for label, p in processes.items() if p.is_running()}
        cost_end = await readings(platform, processes)
        lag = await consumer_lag(platform)
    finally:
        stop.set()
        await asyncio.gather(*watchers, return_exceptions=True)
        platform.stop_all()

    assigned = [record.assigned[t] - record.submitted[t] for t in record.accepted_order if t in record.assigned]
    counted_by_post = counted_latencies(record)
    counted = list(counted_by_post.values())
    for stage, posts in zip(stages, stage_posts, strict=True):
        stage["latency_seconds"] = stage_latencies(record, posts, counted_by_post)
    sustained = max((s["accepted_per_second"] for s in stages
                     if s["accepted"] >= 0.99 * (s["sent"] + s["not_sent_backpressure"])), default=0)
    end_to_end_rate = len(record.accepted_order) / max(load_seconds, 1e-9)
    costs = {label: cost_per_post(cost_start[label], cost_end[label], len(record.accepted_order))
             for label in cost_start if label in cost_end}
    result = {
        "run_id": platform.run_id,
        "stages": stages,
        "accepted_total": len(record.accepted_order),
        "errors": record.errors,
        "sustained_accepted_posts_per_second": sustained,
        "http_submit_seconds": {"p50": percentile(record.latencies_http, 0.5),
                                "p95": percentile(record.latencies_http, 0.95),
                                "p99": percentile(record.latencies_http, 0.99)},
        "submit_to_assigned_seconds": {"n": len(assigned), "p50": percentile(assigned, 0.5),
                                       "p95": percentile(assigned, 0.95), "p99": percentile(assigned, 0.99)},
        "submit_to_counted_seconds": {"n": len(counted), "p50": percentile(counted, 0.5),
                                      "p95": percentile(counted, 0.95), "p99": percentile(counted, 0.99)},
        "services": usage,
        "shed_answers": record.shed,
        "cost_per_accepted_post": costs,
        "db_commands_per_accepted_post": round(sum(c["db_commands"] or 0 for c in costs.values())
                                               / max(len(record.accepted_order), 1), 3),
        "busiest_process": max(usage, key=lambda label: usage[label]["cpu_percent_avg"], default=None),
        "consumer_lag_at_end": lag,
        "reference": reference,
        "ratio_posts_to_raw_produce": round(sustained / reference["produce_per_second"], 4),
        "ratio_posts_to_raw_consume": round(sustained / reference["consume_per_second"], 4),
        "overall_accepted_per_second": round(end_to_end_rate, 1),
        "median_http_seconds": round(statistics.median(record.latencies_http), 4) if record.latencies_http else None,
    }
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.platform_load")
    parser.add_argument("--rates", default="25,50,100,200,400,800,1200")
    parser.add_argument("--stage-seconds", type=float, default=10)
    parser.add_argument("--drain-seconds", type=float, default=60)
    parser.add_argument("--reference-messages", type=int, default=50_000)
    args = parser.parse_args(argv)
    rates = [float(r) for r in args.rates.split(",")]
    result = asyncio.run(run(rates, args.stage_seconds, args.drain_seconds, args.reference_messages))
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(result, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    print(json.dumps(result, indent=2, ensure_ascii=False))
    print(f"written to {OUT}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
