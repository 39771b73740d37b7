"""Citizen posts per second through a real intake process (uvicorn, MongoDB-wire server, outbox relay to Kafka).

N concurrent httpx clients post realistic posts for a fixed time after a warm-up; prints accepted posts/s,
p50/p95/p99 latency, how long the relay took to publish the backlog, and what an accepted post cost intake:
database commands (``wenzheng_intake_db_commands_total``, relay included) and CPU milliseconds (psutil), from
the start of the measured window until the relay has published everything. A shed post (503) waits for its
``Retry-After`` before the client goes on. Rate limits are switched off.

    .venv/bin/python -m bench.intake_posts [--clients 32] [--seconds 15] [--workers 1]

The clients run in this process and share the machine's two cores with intake, the relay, Kafka and the
database server: the figures are for the whole machine, not intake alone.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import httpx
import psutil

from harness.costs import Reading, cost_per_post, cpu_seconds, db_commands, retry_after_seconds
from harness.ports import free_port
from services.common.config import TopicSettings, common_settings
from services.common.mongo import new_client
from services.common.topics import create_topics
from services.intake.auth import ensure_credentials_file
from services.intake.outbox import OutboxLog

ROOT = Path(__file__).resolve().parents[1]
PLACES = [("章贡区", "水西镇"), ("南康区", "唐江镇"), ("赣县区", "梅林镇"), ("于都县", "贡江镇"), ("瑞金市", "象湖镇")]
TOPICS = ["小区门口路灯坏了半个月，晚上很黑", "楼下烧烤店油烟太大，每天营业到凌晨", "公交站台顶棚破损，下雨漏水",
          "孩子入学报名系统一直打不开", "工地夜间施工噪音扰民", "农村道路坑洼不平，雨天无法通行",
          "医保异地结算手续太复杂", "公司拖欠工资三个月"]


def realistic_post(rng: random.Random) -> dict:
    county, township = rng.choice(PLACES)
    subject = rng.choice(TOPICS)
    phone = f"1{rng.choice('3456789')}{rng.randrange(10**9):09d}"
    return {
        "channel": rng.choice(["web", "wechat", "app"]),
        "title": f"{township}{subject[:20]}",
        "body": f"{county}{township}{subject}。已经反映过多次，希望相关部门尽快处理。" * rng.randint(1, 4),
        "contact_phone": phone,
        "name": rng.choice(["张先生", "李女士", None]),
        "anonymous": rng.random() < 0.2,
        "location": {"county": county, "township": township, "address": f"{rng.randint(1, 300)}号"},
    }


async def client_loop(url: str, stop_at: float, warm_until: float, latencies: list[float], codes: dict[int, int],
                      seed: int) -> None:
    rng = random.Random(seed)
    limits = httpx.Limits(max_connections=1, max_keepalive_connections=1)
    async with httpx.AsyncClient(base_url=url, timeout=30, limits=limits) as client:
        while (now := time.perf_counter()) < stop_at:
            body = realistic_post(rng)
            started = time.perf_counter()
            try:
                response = await client.post("/v1/posts", json=body)
                code = response.status_code
            except httpx.HTTPError:
                code = 0
            elapsed = time.perf_counter() - started
            if now >= warm_until:
                codes[code] = codes.get(code, 0) + 1
                if code == 201:
                    latencies.append(elapsed)
            if code == 503:
                await asyncio.sleep(retry_after_seconds(response.headers))


async def _reading_at(when: float, url: str, process: psutil.Process) -> Reading:
    """Intake's CPU and database commands at the start of the measured window."""
    await asyncio.sleep(max(0.0, when - time.perf_counter()))
    return Reading(cpu_seconds(process), await db_commands(url))


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    return statistics.quantiles(values, n=1000, method="inclusive")[int(q * 1000) - 1]


async def wait_ready(url: str, process: subprocess.Popen, log_path: Path) -> None:
    async with httpx.AsyncClient() as client:
        for _ in range(600):
            if process.poll() is not None:
                raise SystemExit(f"intake exited; see {log_path}")
            try:
                if (await client.get(f"{url}/healthz", timeout=1)).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            await asyncio.sleep(0.1)
    raise SystemExit("intake did not start")


async def backlog(mongo_url: str, database: str) -> int:
    client = new_client(mongo_url)
    try:
        return await OutboxLog(client[database]).backlog()
    finally:
        await client.close()


async def run(clients: int, seconds: float, warmup: float, workers: int, drain_limit: float = 60,
              relay: bool = True) -> dict:
    common = common_settings()
    run_id = uuid.uuid4().hex[:8]
    database = f"wenzheng_intake_bench_{run_id}"
    names = TopicSettings(**{k: f"bench.{run_id}.{v}" for k, v in TopicSettings().model_dump().items()})
    await create_topics(common.kafka_bootstrap, partitions=6, names=names)
    workdir = Path(tempfile.mkdtemp(prefix="intake-bench-"))
    credentials = workdir / "credentials.json"
    ensure_credentials_file(credentials)
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("WENZHENG_INTAKE_")}
    env.update({
        "WENZHENG_PORT": str(port), "WENZHENG_KAFKA_BOOTSTRAP": common.kafka_bootstrap,
        "WENZHENG_MONGO_URL": common.mongo_url, "WENZHENG_ENVIRONMENT": "test", "WENZHENG_LOG_LEVEL": "WARNING",
        "WENZHENG_INTAKE_DATABASE": database, "WENZHENG_INTAKE_CREDENTIALS_FILE": str(credentials),
        "WENZHENG_INTAKE_RATE_LIMIT_ENABLED": "false", "WENZHENG_INTAKE_CONSUMER_GROUP": f"bench-{run_id}",
        "WENZHENG_INTAKE_RELAY_ENABLED": str(relay).lower(),
    })
    env.update({f"WENZHENG_TOPIC_{k.upper()}": v for k, v in names.model_dump().items()})
    log_path = workdir / "intake.log"
    url = f"http://127.0.0.1:{port}"
    with log_path.open("wb") as log:
        process = subprocess.Popen(  # noqa: ASYNC220 - the server under test, started before measuring
            [sys.executable, "-m", "services.intake", "serve", "--workers", str(workers)],
            cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            await wait_ready(url, process, log_path)
            latencies: list[float] = []
            codes: dict[int, int] = {}
            start = time.perf_counter()
            warm_until, stop_at = start + warmup, start + warmup + seconds
            intake = psutil.Process(process.pid)
            measuring = asyncio.create_task(_reading_at(warm_until, url, intake))
            await asyncio.gather(*(client_loop(url, stop_at, warm_until, latencies, codes, seed)
                                   for seed in range(clients)))
            before = await measuring
            measured = time.perf_counter() - warm_until
            drain_started = time.perf_counter()
            left = await backlog(common.mongo_url, database)
            while relay and left > 0 and time.perf_counter() - drain_started < drain_limit:
                await asyncio.sleep(0.5)
                left = await backlog(common.mongo_url, database)
            drain_seconds = time.perf_counter() - drain_started
            after = Reading(cpu_seconds(intake), await db_commands(url))
        finally:
            os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
    mongo = new_client(common.mongo_url)
    await mongo.drop_database(database)
    await mongo.close()
    return {
        "clients": clients, "workers": workers, "seconds": round(measured, 2),
        "accepted": len(latencies), "posts_per_second": round(len(latencies) / measured, 1),
        "status_codes": {str(k): v for k, v in sorted(codes.items())},
        "latency_ms": {"p50": round(percentile(latencies, 0.50) * 1000, 1),
                       "p95": round(percentile(latencies, 0.95) * 1000, 1),
                       "p99": round(percentile(latencies, 0.99) * 1000, 1),
                       "max": round(max(latencies, default=float("nan")) * 1000, 1)},
        "relay_drain_after_load_seconds": round(drain_seconds, 2), "outbox_left": left,
        "relay_during_load": relay, "cpus": os.cpu_count(),
        "intake_cost_per_accepted_post": cost_per_post(before, after, len(latencies)),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.intake_posts")
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--seconds", type=float, default=15)
    parser.add_argument("--warmup", type=float, default=3)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--no-relay", action="store_true", help="measure the API and database without the relay")
    args = parser.parse_args(argv)
    result = asyncio.run(run(args.clients, args.seconds, args.warmup, args.workers, relay=not args.no_relay))
    cost = result["intake_cost_per_accepted_post"]
    print(f"[bench] intake posts: {result['posts_per_second']} accepted posts/s with {args.clients} clients, "
          f"{args.workers} worker(s); latency p50 {result['latency_ms']['p50']} ms, p95 {result['latency_ms']['p95']}"
          f" ms, p99 {result['latency_ms']['p99']} ms; status codes {result['status_codes']}; relay drained the "
          f"backlog {result['relay_drain_after_load_seconds']} s after the load stopped; per accepted post intake "
          f"sent {cost['db_commands_per_post']} database commands and used {cost['cpu_ms_per_post']} ms CPU")
    out = ROOT / "var" / "bench" / "intake_posts.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, ensure_ascii=False, indent=2), encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
