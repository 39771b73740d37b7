"""Restore time of the router's Kafka-held state: a real worker process started on changelogs that already hold
100,000 cases and their posters' recent posts, against the local Kafka.

    .venv/bin/python -m bench.router_restore [--cases 100000] [--posters 60000] [--posts 1000]

Writes the ``case-routing`` and ``poster-posts`` changelogs of a fresh app id directly (the rows a worker
would have written: raw keys, JSON rows, the producer's default partitioner, as the worker writes them), then
starts ``python -m services.router worker`` and times it to ``/readyz`` 200, which waits for the tables'
recovery (a start on empty changelogs gives the start-up time without a restore: loading the model, joining
the group), and reads the worker's own figure, ``wenzheng_router_table_restore_seconds`` (from the partitions'
assignment to the table restored) and the rows it holds. Then it checks that the state is really there (a return of a
restored case is re-routed to a unit not yet tried; a repeat post of a restored poster is linked to the
restored post as a duplicate) and counts the database commands the worker sent while it routed ``--posts``
new posts (timers included). Prints the figures and writes var/bench/router_restore.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import shutil
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from bench.router_latency import (
    Decisions,
    Posts,
    delete_topics,
    endpoints,
    example_posts,
    private_names,
    produce,
    run_bench,
    start_worker,
    stop_worker,
    worker_env,
)
from services.common.config import TopicSettings
from services.common.events import CaseContact, CaseReturned, CaseSubmitted, make_event
from services.common.kafka import new_producer
from services.common.mongo import new_client
from services.common.topics import create_topics
from services.router.assignment import Assigner
from services.router.domain import CaseRouting, PosterPosts, RecentPost, RoutingPolicy

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "var" / "bench" / "router_restore.json"
PARTITIONS = 6  # the platform's default (WENZHENG_TOPIC_PARTITIONS)


def restored_rows(cases: int, posters: int, now: datetime, seed: int = 11) -> tuple[list[CaseRouting], dict]:
    """Assigned cases of the last six days, 80% with one of ``posters`` poster keys; and each poster's row."""
    rng = random.Random(seed)
    texts = example_posts()
    units = sorted(Assigner.default().units)
    rows, by_poster = [], {}
    window = RoutingPolicy().duplicate_window
    for i in range(cases):
        poster = f"restore-poster-{rng.randrange(posters)}" if rng.random() < 0.8 else None
        case = CaseRouting(case_id=f"restore-{i}", text=rng.choice(texts), poster_ref=poster,
                           submitted_at=now - timedelta(seconds=rng.randrange(6 * 86400)), last_version=2,
                           tried=[rng.choice(units)], category="urban_management", contact_seen=True,
                           submission_event_id=str(uuid.uuid4()))
        rows.append(case)
        if poster:
            by_poster.setdefault(poster, PosterPosts()).remember(
                RecentPost(case.case_id, case.text, case.submitted_at), window)
    return rows, by_poster


async def write_changelogs(bootstrap: str, app_id: str, rows: list[CaseRouting], posters: dict) -> float:
    """Both changelogs (created as faust creates them: compacted, the platform's partitions), as the worker
    writes them; returns the seconds it took."""
    started = time.perf_counter()
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=30000)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(name=f"{app_id}-{table}-changelog", num_partitions=PARTITIONS,
                                            replication_factor=1, topic_configs={"cleanup.policy": "compact"})
                                   for table in ("case-routing", "poster-posts")])
    finally:
        await admin.close()
    producer = new_producer(bootstrap, linger_ms=20)
    await producer.start()
    try:
        pending = []
        for case in rows:
            pending.append(await producer.send(f"{app_id}-case-routing-changelog", json.dumps(case.to_dict()).encode(),
                                               key=case.case_id.encode()))
        for poster, posts in posters.items():
            pending.append(await producer.send(f"{app_id}-poster-posts-changelog",
                                               json.dumps(posts.to_dict()).encode(), key=poster.encode()))
        await asyncio.gather(*pending)
    finally:
        await producer.stop()
    return time.perf_counter() - started


async def seconds_to_ready(port: int, process, log_path: Path, started: float, timeout: float = 600) -> float:
    async with httpx.AsyncClient() as client:
        while time.monotonic() - started < timeout:
            if process.poll() is not None:
                break
            try:
                if (await client.get(f"http://127.0.0.1:{port}/readyz")).status_code == 200:
                    return time.monotonic() - started
            except httpx.HTTPError:
                pass
            await asyncio.sleep(0.1)
    raise RuntimeError(f"router worker not ready; see {log_path}")


async def metric(port: int, name: str) -> dict[str, float]:
    """The worker's samples of one metric: the first label's value (or "") → value."""
    async with httpx.AsyncClient() as client:
        text = (await client.get(f"http://127.0.0.1:{port}/metrics")).text
    samples = {}
    for line in text.splitlines():
        if line.startswith(name + "{") or line.startswith(name + " "):
            labels, _, value = line.rpartition(" ")
            samples[labels.split('"')[1] if '"' in labels else ""] = float(value)
    return samples


async def db_commands(port: int) -> float:
    return sum((await metric(port, "wenzheng_router_db_commands_total")).values())


async def start_and_time(env: dict[str, str], port: int, workdir: Path, name: str):
    log_path = workdir / f"{name}.log"
    started = time.monotonic()
    process = start_worker(env, log_path)
    try:
        return process, await seconds_to_ready(port, process, log_path, started)
    except BaseException:
        stop_worker(process)
        raise


async def check_state(bootstrap: str, names: TopicSettings, decisions: Decisions, rows: list[CaseRouting],
                      now: datetime) -> dict:
    """A return of a restored case and a repeat post of a restored poster: decided from the restored rows."""
    case = rows[0]
    repeat_of = next(c for c in rows if c.poster_ref)
    returned = make_event(CaseReturned(case_id=case.case_id, tracking_number=f"WZ-{case.case_id}", version=3,
                                       occurred_at=now, actor="department", department_id=case.tried[0],
                                       reason="不属于本单位", return_count=1), source="/bench/router_restore")
    repeat = make_event(CaseSubmitted(case_id="restore-repeat", tracking_number="WZ-restore-repeat", version=1,
                                      occurred_at=now, actor="citizen", channel="web", title=repeat_of.text[:20],
                                      body=repeat_of.text), source="/bench/router_restore")
    contact = make_event(CaseContact(case_id="restore-repeat", tracking_number="WZ-restore-repeat",
                                     poster_ref=repeat_of.poster_ref, recorded_at=now), source="/bench/router_restore")
    producer = new_producer(bootstrap)
    await producer.start()
    try:
        for topic, event in ((names.case_events, returned), (names.case_events, repeat),
                             (names.case_contacts, contact)):
            await producer.send_and_wait(topic, event.to_json(), key=event.key)
    finally:
        await producer.stop()
    await decisions.wait_for({returned.id, repeat.id}, timeout=120)
    rerouted, linked = decisions.decided.get(returned.id), decisions.decided.get(repeat.id)
    return {
        "return_rerouted_from_restored_row": bool(rerouted and rerouted.routing_round == 2
                                                  and rerouted.tried_departments == case.tried
                                                  and rerouted.department_id not in case.tried),
        "repeat_linked_to_restored_post": bool(linked and linked.outcome.value == "duplicate"
                                               and linked.linked_case_id is not None
                                               and linked.linked_case_id.startswith("restore-")),
    }


async def route_new_posts(bootstrap: str, names: TopicSettings, decisions: Decisions, port: int, count: int,
                          run_id: str) -> dict:
    """``count`` new posts with their contacts: the database commands the worker sent while routing them."""
    before = await db_commands(port)
    started = time.perf_counter()
    producer = new_producer(bootstrap)
    await producer.start()
    try:
        sent = await produce(producer, names.case_events, Posts(run_id, names.case_contacts), count, None)
        await producer.flush()
    finally:
        await producer.stop()
    await decisions.wait_for(set(sent), timeout=300)
    routed = len(set(sent) & decisions.decided.keys())
    commands = await db_commands(port) - before
    return {"posts": count, "routed": routed, "seconds": round(time.perf_counter() - started, 2),
            "db_commands": commands, "db_commands_per_post": round(commands / max(routed, 1), 4)}


async def run(args: argparse.Namespace) -> dict:
    run_id = uuid.uuid4().hex[:8]
    bootstrap, mongo_url = endpoints()
    prefix = f"bench.restore.{run_id}."
    names = private_names(prefix)
    await create_topics(bootstrap, PARTITIONS, names)
    workdir = ROOT / "var" / "bench" / f"router-restore-{run_id}"
    workdir.mkdir(parents=True, exist_ok=True)
    empty_app, full_app = f"bench-restore-empty-{run_id}", f"bench-restore-{run_id}"
    database = f"wenzheng_router_restore_{run_id}"
    now = datetime.now(UTC)
    rows, posters = restored_rows(args.cases, args.posters, now)
    decisions = Decisions(bootstrap, names.routing_decisions)
    process = None
    try:
        env = {"database": database, "port": args.port, "workdir": workdir, "partitions": PARTITIONS}
        process, empty_seconds = await start_and_time(worker_env(names, app_id=empty_app, **env), args.port,
                                                      workdir, "empty")
        stop_worker(process)
        write_seconds = await write_changelogs(bootstrap, full_app, rows, posters)
        process, full_seconds = await start_and_time(worker_env(names, app_id=full_app, **env), args.port,
                                                     workdir, "restored")
        restored = {"seconds": await metric(args.port, "wenzheng_router_table_restore_seconds"),
                    "rows": await metric(args.port, "wenzheng_router_table_rows")}
        await decisions.start()
        state = await check_state(bootstrap, names, decisions, rows, now)
        routing = await route_new_posts(bootstrap, names, decisions, args.port, args.posts, run_id)
        if routing["routed"] < routing["posts"] or not all(state.values()):
            raise RuntimeError(f"not every post was routed from the restored state ({routing}, {state}); "
                               f"see {workdir}")
    finally:
        await decisions.stop()
        if process is not None:
            stop_worker(process)
        client = new_client(mongo_url)
        await client.drop_database(database)
        await client.close()
        for topic_prefix in (prefix, empty_app, full_app):
            await delete_topics(bootstrap, topic_prefix)
    shutil.rmtree(workdir, ignore_errors=True)  # kept (with the workers' logs) on failure
    return {
        "bench": "router_restore",
        "measured_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "partitions": PARTITIONS,
        "cases": len(rows),
        "posters": len(posters),
        "changelog_records": len(rows) + len(posters),
        "changelogs_written_seconds": round(write_seconds, 2),
        "ready_seconds_empty_changelogs": round(empty_seconds, 2),
        "ready_seconds_restoring": round(full_seconds, 2),
        "ready_difference_seconds": round(full_seconds - empty_seconds, 2),
        "worker_restore_seconds": {table: round(v, 2) for table, v in restored["seconds"].items()},
        "worker_rows_restored": {table: int(v) for table, v in restored["rows"].items()},
        "state_restored": state,
        "routing_after_restore": routing,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.router_restore", description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=int, default=100_000)
    parser.add_argument("--posters", type=int, default=60_000, help="distinct poster keys among the cases")
    parser.add_argument("--posts", type=int, default=1000, help="new posts routed after the restore")
    print(json.dumps(run_bench(parser, argv, run, OUT), ensure_ascii=False))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
