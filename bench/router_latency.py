"""Routing latency under load: a real router worker process against the local Kafka and MongoDB-wire server.

    .venv/bin/python -m bench.router_latency [--rates 50 100 200 400 800] [--seconds 8] [--burst 3000]

Starts ``python -m services.router worker`` (the shipped model) on private topics, consumer group and
database, produces realistic posts (``submitted`` case events of the project's own example posts, some with a
county, each with its private contact, most with a poster reference so duplicate detection runs) at each rate
in turn, then a burst of posts sent as fast as possible, and reads the routing decisions. The case-events and
decisions topics are created with ``message.timestamp.type=LogAppendTime``, so both timestamps are the
broker's own clock: the latency of a decision is the decision's append time minus its submission's append
time, i.e. from the submission reaching the broker to the decision being on the output topic (its contact
is sent right after it). Prints figures and writes var/bench/router_latency.json.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import csv
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import numpy as np
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from harness.ports import free_port
from services.common.config import TopicSettings
from services.common.events import CaseContact, CaseSubmitted, Event, Location, make_event, parse_event
from services.common.kafka import new_consumer, new_producer
from services.common.mongo import new_client
from services.common.reference import load_reference
from services.common.topics import TOPIC_SPECS, create_topics, topic_name

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "var" / "bench" / "router_latency.json"
EXAMPLES = ROOT / "services" / "router" / "training_data" / "examples.csv"
PARTITIONS = 3
TIMED_TOPICS = ("case_events", "routing_decisions")


def example_posts() -> list[str]:
    with EXAMPLES.open(encoding="utf-8", newline="") as handle:
        return [row["text"] for row in csv.DictReader(handle)]


class Posts:
    """Posts as intake publishes them: the public submission (example texts, 30% with a county) and, on the
    private contacts topic, its contact (80% with one of 5,000 poster references). A submission is routed when
    its contact has been read."""

    def __init__(self, run_id: str, contacts_topic: str, seed: int = 7) -> None:
        self.rng = random.Random(seed)
        self.contacts_topic = contacts_topic
        self.texts = example_posts()
        self.counties = [d.name for d in load_reference().gazetteer.divisions][:18]
        self.run_id = run_id
        self.count = 0

    def next(self) -> tuple[Event, Event]:
        self.count += 1
        text = self.rng.choice(self.texts)
        title, _, body = text.partition(" ")
        location = Location(county=self.rng.choice(self.counties)) if self.rng.random() < 0.3 else None
        poster = f"poster-{self.rng.randrange(5000)}" if self.rng.random() < 0.8 else None
        payload = CaseSubmitted(case_id=f"bench-{self.run_id}-{self.count}", tracking_number=f"WZ{self.count:010d}",
                                version=1, occurred_at=datetime.now(UTC), actor="citizen", channel="web",
                                title=(title or text)[:100], body=(body or text)[:5000], location=location)
        contact = CaseContact(case_id=payload.case_id, tracking_number=payload.tracking_number, poster_ref=poster,
                              recorded_at=payload.occurred_at)
        return make_event(payload, source="/bench/router_latency"), make_event(contact, source="/bench/router_latency")


async def make_topics(bootstrap: str, names: TopicSettings) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=30000)
    await admin.start()
    try:
        timed = [NewTopic(name=topic_name(spec, names), num_partitions=PARTITIONS, replication_factor=1,
                          topic_configs={**spec.config, "message.timestamp.type": "LogAppendTime"})
                 for spec in TOPIC_SPECS if spec.key in TIMED_TOPICS]
        await admin.create_topics(timed)
    finally:
        await admin.close()
    await create_topics(bootstrap, PARTITIONS, names)


async def delete_topics(bootstrap: str, prefix: str) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=30000)
    await admin.start()
    try:
        mine = [t for t in await admin.list_topics() if t.startswith(prefix)]
        if mine:
            await admin.delete_topics(mine)
    finally:
        await admin.close()


def start_worker(env: dict[str, str], log_path: Path) -> subprocess.Popen:
    with log_path.open("wb") as log:
        return subprocess.Popen([sys.executable, "-m", "services.router", "worker"], env=env, stdout=log,
                                stderr=subprocess.STDOUT, start_new_session=True, cwd=ROOT)


def stop_worker(process: subprocess.Popen) -> None:
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=30)


async def wait_ready(port: int, process: subprocess.Popen, log_path: Path) -> None:
    async with httpx.AsyncClient() as client:
        for _ in range(240):
            if process.poll() is not None:
                break
            try:
                if (await client.get(f"http://127.0.0.1:{port}/readyz")).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            await asyncio.sleep(0.5)
    raise RuntimeError(f"router worker not ready; see {log_path}")


async def worker_batches(port: int) -> dict:
    """The worker's batch histograms so far (cumulative): how many batches, their mean size and time."""
    async with httpx.AsyncClient() as client:
        text = (await client.get(f"http://127.0.0.1:{port}/metrics")).text
    values = {"db_commands": 0.0}
    for line in text.splitlines():
        name, _, value = line.partition(" ")
        if name in ("wenzheng_router_batch_seconds_sum", "wenzheng_router_batch_seconds_count",
                    "wenzheng_router_batch_events_sum"):
            values[name] = float(value)
        elif name.startswith("wenzheng_router_db_commands_total{"):
            values["db_commands"] += float(value)
    batches = values.get("wenzheng_router_batch_seconds_count", 0)
    return {"batches": int(batches),
            "mean_batch_events": round(values.get("wenzheng_router_batch_events_sum", 0) / max(batches, 1), 1),
            "mean_batch_ms": round(1000 * values.get("wenzheng_router_batch_seconds_sum", 0) / max(batches, 1), 1),
            "db_commands": int(values["db_commands"])}


class Decisions:
    """Reads the decisions topic in the background: source event id → broker append time (ms), and the decision."""

    def __init__(self, bootstrap: str, topic: str) -> None:
        self.consumer = new_consumer(topic, group_id=None, bootstrap=bootstrap)
        self.appended: dict[str, int] = {}
        self.decided: dict[str, Any] = {}
        self.task: asyncio.Task | None = None
        self.arrived = asyncio.Event()

    async def start(self) -> None:
        await self.consumer.start()
        self.task = asyncio.create_task(self._read())

    async def _read(self) -> None:
        while True:
            for records in (await self.consumer.getmany(timeout_ms=200)).values():
                for record in records:
                    try:
                        decision = parse_event(record.value).data
                        self.appended[decision.source_event_id] = record.timestamp
                        self.decided[decision.source_event_id] = decision
                    except Exception as exc:  # a bench must say what it could not read, and go on
                        print(f"unreadable decision at offset {record.offset}: {exc}", file=sys.stderr)
                self.arrived.set()

    async def wait_for(self, event_ids: set[str], timeout: float) -> None:
        """Until a decision for each event id is read, or ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        while not event_ids <= self.appended.keys() and time.monotonic() < deadline:
            self.arrived.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.arrived.wait(), max(deadline - time.monotonic(), 0.01))

    async def stop(self) -> None:
        if self.task:
            self.task.cancel()
        await self.consumer.stop()


async def produce(producer, topic: str, posts: Posts, count: int, rate: float | None) -> dict[str, asyncio.Future]:
    """``count`` posts at ``rate`` per second (None: as fast as the producer takes them), each with its contact
    on ``posts.contacts_topic``; submission event id → the future of its record metadata (whose timestamp is the
    broker's append time)."""
    sent: dict[str, asyncio.Future] = {}
    started = time.perf_counter()
    for i in range(count):
        if rate:
            delay = started + i / rate - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
        event, contact = posts.next()
        sent[event.id] = await producer.send(topic, event.to_json(), key=event.key)
        await producer.send(posts.contacts_topic, contact.to_json(), key=contact.key)
    return sent


async def step(producer, decisions: Decisions, topic: str, posts: Posts, count: int, rate: float | None,
               timeout: float) -> dict:
    sent = await produce(producer, topic, posts, count, rate)
    appended_in = {event_id: (await future).timestamp for event_id, future in sent.items()}
    await decisions.wait_for(set(appended_in), timeout)
    done = [e for e in appended_in if e in decisions.appended]
    latencies = np.array([decisions.appended[e] - appended_in[e] for e in done], dtype=float)
    first_in = min(appended_in.values())
    last_out = max((decisions.appended[e] for e in done), default=first_in)
    result = {
        "target_rate": rate or "burst",
        "events": count,
        "decisions": len(done),
        "produced_per_second": round(count / max((max(appended_in.values()) - first_in) / 1000, 1e-3), 1),
        "decisions_per_second": round(len(done) / max((last_out - first_in) / 1000, 1e-3), 1),
    }
    if len(done):
        result.update({f"p{q}_ms": round(float(np.percentile(latencies, q)), 1) for q in (50, 95, 99)})
        result["max_ms"] = float(latencies.max())
    return result


def endpoints() -> tuple[str, str]:
    """The local Kafka bootstrap and MongoDB URL."""
    return (os.environ.get("WENZHENG_KAFKA_BOOTSTRAP", "127.0.0.1:9092"),
            os.environ.get("WENZHENG_MONGO_URL", "mongodb://127.0.0.1:27017/"))


def private_names(prefix: str) -> TopicSettings:
    return TopicSettings(**{key: prefix + default for key, default in TopicSettings().model_dump().items()})


def worker_env(names: TopicSettings, *, app_id: str, database: str, port: int, workdir: Path,
               partitions: int) -> dict[str, str]:
    """The environment of a router worker on private topics, consumer group, database and data folder."""
    bootstrap, mongo_url = endpoints()
    env = {**os.environ, "WENZHENG_KAFKA_BOOTSTRAP": bootstrap, "WENZHENG_MONGO_URL": mongo_url,
           "WENZHENG_TOPIC_PARTITIONS": str(partitions), "WENZHENG_ROUTER_APP_ID": app_id,
           "WENZHENG_ROUTER_DATABASE": database, "WENZHENG_PORT": str(port),
           "WENZHENG_ROUTER_DATA_DIR": str(workdir), "WENZHENG_LOG_LEVEL": "WARNING"}
    env.update({f"WENZHENG_TOPIC_{k.upper()}": v for k, v in names.model_dump().items()})
    return env


async def run(args: argparse.Namespace) -> dict:
    run_id = uuid.uuid4().hex[:8]
    bootstrap, mongo_url = endpoints()
    prefix = f"bench.router.{run_id}."
    names = private_names(prefix)
    await make_topics(bootstrap, names)
    workdir = ROOT / "var" / "bench" / f"router-{run_id}"
    workdir.mkdir(parents=True, exist_ok=True)
    app_id, database = f"bench-router-{run_id}", f"wenzheng_router_bench_{run_id}"
    env = worker_env(names, app_id=app_id, database=database, port=args.port, workdir=workdir,
                     partitions=PARTITIONS)
    log_path = workdir / "worker.log"
    process = start_worker(env, log_path)
    producer = new_producer(bootstrap)
    decisions = Decisions(bootstrap, names.routing_decisions)
    steps = []
    try:
        await wait_ready(args.port, process, log_path)
        await producer.start()
        await decisions.start()
        posts = Posts(run_id, names.case_contacts)
        warm = await step(producer, decisions, names.case_events, posts, 50, 50, timeout=60)  # warm-up
        if warm["decisions"] < warm["events"]:
            raise RuntimeError(f"{warm['decisions']} of {warm['events']} warm-up events routed; see {log_path}")
        for rate in args.rates:
            result = await step(producer, decisions, names.case_events, posts, int(rate * args.seconds), rate,
                                timeout=120)
            result["worker"] = await worker_batches(args.port)
            steps.append(result)
            print(json.dumps(result), flush=True)
        if args.burst:
            result = await step(producer, decisions, names.case_events, posts, args.burst, None, timeout=300)
            result["worker"] = await worker_batches(args.port)
            steps.append(result)
            print(json.dumps(result), flush=True)
    finally:
        await decisions.stop()
        await producer.stop()
        stop_worker(process)
        client = new_client(mongo_url)
        await client.drop_database(database)
        await client.close()
        await delete_topics(bootstrap, prefix)
        await delete_topics(bootstrap, app_id)
    shutil.rmtree(workdir, ignore_errors=True)  # faust's local data; kept (with the worker's log) on failure
    paced = [s for s in steps if s["target_rate"] != "burst" and s.get("p99_ms") is not None]
    under_200 = [s["target_rate"] for s in paced if s["p99_ms"] < 200 and s["decisions"] == s["events"]]
    return {
        "bench": "router_latency",
        "measured_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "partitions": PARTITIONS,
        "latency": "decision append time - event append time, both broker LogAppendTime (ms)",
        "steps": steps,
        "highest_rate_with_p99_under_200ms": max(under_200, default=None),
        "burst_decisions_per_second": next((s["decisions_per_second"] for s in steps
                                            if s["target_rate"] == "burst"), None),
    }


def run_bench(parser: argparse.ArgumentParser, argv: list[str] | None, run, out: Path) -> dict:
    """Parse the arguments (plus ``--port``, a free one by default), run the worker bench, write its figures."""
    parser.add_argument("--port", type=int, default=0, help="the worker's HTTP port (0: a free one)")
    args = parser.parse_args(argv)
    args.port = args.port or free_port()
    result = asyncio.run(run(args))
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.router_latency", description=__doc__.splitlines()[0])
    parser.add_argument("--rates", type=float, nargs="+", default=[50, 100, 200, 400, 800])
    parser.add_argument("--seconds", type=float, default=8.0, help="how long each rate is held")
    parser.add_argument("--burst", type=int, default=3000, help="events sent at once after the rates (0: none)")
    result = run_bench(parser, argv, run, OUT)
    print(json.dumps({k: v for k, v in result.items() if k != "steps"}, ensure_ascii=False))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
