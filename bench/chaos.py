"""`make chaos`: the platform under a steady load while its parts die, then a check against the generator's
own record of what it did.

Faults, in order: kill -9 intake, both router replicas, notifier, then a router and a notifier killed again while
they restore their Kafka-held state, stats (each restarted); restart the
Kafka broker once; pause the MongoDB-wire server (SIGSTOP/SIGCONT). Malformed messages are injected into
every consumed topic. After the load, the platform drains and the script checks:
  lost              accepted posts that intake cannot show, or that never reached the public topic or stats
  duplicated        cases with more than one distinct `submitted` event, or stats counting more than accepted
  rate_mismatches   stats' overview fields that differ from the ground truth (received, replied, rated, satisfied)
  duplicate_alerts  alert ids published more than once
  dead_letters_unexpected  dead letters for anything but the injected messages (each consumer of a topic
                    dead-letters each injected message; malformed_not_dead_lettered counts any it missed)
Writes var/chaos/latest.json and exits non-zero if any is not zero.

    .venv/bin/python -m bench.chaos [--seconds 90] [--rate 40]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import signal
import subprocess
import time
import uuid
from collections import Counter
from pathlib import Path

import httpx

from harness.people import platform_tokens
from harness.platform import ROOT, Platform
from harness.posts import realistic_post
from harness.topics import read_topic
from services.common.events import parse_event
from services.common.kafka import new_consumer, new_producer

OUT = Path("var/chaos/latest.json")
MALFORMED = [b"not json at all", b'{"specversion": "1.0"}', b"\xff\xfe\x00", b"[]",
             json.dumps({"specversion": "1.0", "id": "x", "source": "/evil", "type": "gov.wenzheng.case.submitted",
                         "subject": "c", "time": "2026-01-01T00:00:00Z", "data": {"case_id": "c"}}).encode(),
             b"{" + b"x" * 200_000 + b"}"]


class Truth:
    def __init__(self) -> None:
        self.accepted: dict[str, str] = {}  # tracking -> rating token
        self.replied: set[str] = set()
        self.rated: dict[str, str] = {}
        self.http_errors: Counter = Counter()


async def citizen_load(platform: Platform, truth: Truth, seconds: float, rate: float, rng: random.Random) -> None:
    deadline = time.monotonic() + seconds
    async with httpx.AsyncClient(base_url=platform.url("intake"), timeout=10) as client:
        while time.monotonic() < deadline:
            post = realistic_post(rng)
            key = uuid.uuid4().hex
            for _attempt in range(20):  # a client retries with the same Idempotency-Key until it gets an answer
                try:
                    response = await client.post("/v1/posts", json=post, headers={"Idempotency-Key": key})
                except httpx.HTTPError:
                    truth.http_errors["connect"] += 1
                    await asyncio.sleep(0.5)
                    continue
                if response.status_code == 201:
                    body = response.json()
                    truth.accepted[body["tracking_number"]] = body["rating_token"]
                elif response.status_code >= 500:
                    truth.http_errors[str(response.status_code)] += 1
                    await asyncio.sleep(0.5)
                    continue
                break
            await asyncio.sleep(1 / rate)


async def departments(platform: Platform, truth: Truth, stop: asyncio.Event, rng: random.Random) -> None:
    """Units sign and reply to 70% of what they are assigned; citizens rate half of the replies."""
    signed_in = await asyncio.to_thread(platform_tokens, platform.url("intake"), platform.credentials())
    tokens = signed_in["departments"]  # a staff member of each unit, signed in
    consumer = new_consumer(platform.topics.case_events, group_id=None, bootstrap=platform.kafka_bootstrap)
    await consumer.start()
    handled: set[str] = set()
    try:
        async with httpx.AsyncClient(base_url=platform.url("intake"), timeout=10) as client:
            while not stop.is_set():
                batches = await consumer.getmany(timeout_ms=300)
                for records in batches.values():
                    for message in records:
                        if b"case.assigned" not in (message.value or b""):
                            continue
                        try:
                            event = parse_event(message.value)
                        except ValueError:
                            continue
                        data = event.data
                        if data.case_id in handled or rng.random() > 0.7:
                            continue
                        handled.add(data.case_id)
                        await act(client, tokens.get(data.department_id), data, truth, rng)
    finally:
        await consumer.stop()


async def act(client: httpx.AsyncClient, token: str | None, data, truth: Truth, rng: random.Random) -> None:
    if token is None:
        return
    auth = {"Authorization": f"Bearer {token}"}
    for path, body, done_states in (
            (f"/v1/cases/{data.case_id}/sign", {}, {"signed"}),
            (f"/v1/cases/{data.case_id}/reply", {"text": "已安排人员处理。"}, {"replied", "rated", "closed"})):
        if not await landed(client, path, body, auth, done_states):
            return
    truth.replied.add(data.tracking_number)
    if rng.random() < 0.5:
        rating = rng.choice(["satisfied", "basically_satisfied", "unsatisfied"])
        token_for_rating = truth.accepted.get(data.tracking_number)
        if await landed(client, f"/v1/posts/{data.tracking_number}/rating",
                        {"rating": rating, "rating_token": token_for_rating}, {}, {"rated", "closed"}):
            truth.rated[data.tracking_number] = rating


async def landed(client: httpx.AsyncClient, path: str, body: dict, headers: dict, done_states: set[str]) -> bool:
    """Send a command until it is answered. After a lost answer (the server died mid-request) a retry may meet
    409 because the first attempt was stored: the 409 names the case's state, which tells whether it landed."""
    retried = False
    for _ in range(20):
        try:
            response = await client.post(path, json=body, headers=headers)
        except httpx.HTTPError:
            retried = True
            await asyncio.sleep(0.5)
            continue
        if response.status_code >= 500:
            retried = True
            await asyncio.sleep(0.5)
            continue
        if response.status_code in (200, 201):
            return True
        if retried and response.status_code == 409:
            return response.json().get("error", {}).get("status") in done_states
        return False
    return False


async def inject_malformed(platform: Platform) -> set[tuple[str, int, int]]:
    """Returns (topic, partition, offset) of every injected message."""
    producer = new_producer(platform.kafka_bootstrap, max_request_size=1_048_576)
    await producer.start()
    injected = set()
    try:
        for topic in (platform.topics.case_events, platform.topics.routing_decisions, platform.topics.alerts):
            for value in MALFORMED:
                meta = await producer.send_and_wait(topic, value, key=b"chaos-malformed")
                injected.add((topic, meta.partition, meta.offset))
    finally:
        await producer.stop()
    return injected


def kill_while_restoring(platform: Platform, name: str) -> str:
    """kill -9 a replica, start it, and kill it again as soon as it is alive but not yet ready (restoring its
    Kafka-held state); then start it once more and wait until everything is ready. Says which moment it hit."""
    platform.kill(name, 0)
    replica = platform.start(name, 0)
    deadline, moment = time.monotonic() + 60, "before it answered at all"
    while time.monotonic() < deadline:
        try:
            if httpx.get(replica.url + "/readyz", timeout=1).status_code == 200:
                moment = "after its restore had finished (it was faster than the poll)"
                break
            moment = "while it was restoring (alive, not ready)"
            break
        except httpx.HTTPError:
            time.sleep(0.05)
    platform.kill(name, 0)
    platform.start(name, 0)
    platform.wait_ready()
    return f"  {name}: second kill -9 {moment}"


def infra(command: str) -> None:
    subprocess.run([str(ROOT / "deploy" / "local" / "infra.sh"), command], check=True, cwd=ROOT)


def ferretdb_pid() -> int:
    return int((ROOT / "var" / "ferretdb" / "ferretdb.pid").read_text().strip())


async def faults(platform: Platform, log: list[str], spacing: float, malformed: dict) -> None:
    async def step(what: str, action) -> None:
        await asyncio.sleep(spacing)
        log.append(f"{time.strftime('%H:%M:%S')} {what}")
        print(f"[chaos] {what}")
        await asyncio.to_thread(action)

    await step("inject malformed messages", lambda: malformed.update(injected=asyncio.run(inject_malformed(platform))))
    await step("kill -9 intake", lambda: platform.restart("intake"))
    await step("kill -9 router (both replicas)", lambda: (platform.kill("router", 0), platform.kill("router", 1),
                                                          platform.start("router", 0), platform.start("router", 1),
                                                          platform.wait_ready()))
    await step("kill -9 notifier", lambda: platform.restart("notifier"))
    await step("kill -9 router while it restores its tables",
               lambda: log.append(kill_while_restoring(platform, "router")))
    await step("kill -9 notifier while it restores its state",
               lambda: log.append(kill_while_restoring(platform, "notifier")))
    await step("kill -9 stats", lambda: platform.restart("stats"))
    await step("restart the Kafka broker", lambda: infra("kafka-restart"))

    def pause_mongo() -> None:
        pid = ferretdb_pid()
        platform.pause(pid)
        time.sleep(5)
        platform.resume(pid)

    await step("pause the MongoDB-wire server for 5 s", pause_mongo)


async def verify(platform: Platform, truth: Truth, injected: set[tuple[str, int, int]]) -> dict:
    events = await read_topic(platform.kafka_bootstrap, platform.topics.case_events)
    submitted_ids: dict[str, set[str]] = {}
    for message in events:
        try:
            event = parse_event(message.value)
        except ValueError:
            continue
        if event.short_type == "case.submitted":
            submitted_ids.setdefault(event.data.tracking_number, set()).add(event.id)
    alerts = await read_topic(platform.kafka_bootstrap, platform.topics.alerts)
    alert_ids = Counter()
    for message in alerts:
        try:
            alert_ids[parse_event(message.value).data.alert_id] += 1
        except ValueError:
            continue
    dead = await read_topic(platform.kafka_bootstrap, platform.topics.dead_letter)
    dead_letters = [parse_event(m.value).data for m in dead]
    # every consumer of a topic dead-letters each injected message once; anything else is unexpected
    dead_where = Counter((d.service, d.original_topic, d.partition, d.offset) for d in dead_letters)
    unexpected = [k for k in dead_where if (k[1], k[2], k[3]) not in injected]
    repeated = [k for k, n in dead_where.items() if n > 1]
    not_dead_lettered = [i for i in injected if not any((k[1], k[2], k[3]) == i for k in dead_where)]

    missing_in_intake = 0
    async with httpx.AsyncClient(base_url=platform.url("intake"), timeout=10) as client:
        for tracking in truth.accepted:
            if (await client.get(f"/v1/posts/{tracking}")).status_code != 200:
                missing_in_intake += 1
        overview = (await httpx.AsyncClient(base_url=platform.url("stats"), timeout=10).get(
            "/v1/stats/overview")).json()
    not_published = [t for t in truth.accepted if t not in submitted_ids]
    expected = {
        "received": len(truth.accepted),
        "replied": len(truth.replied),
        "rated": len(truth.rated),
        "satisfied": sum(1 for r in truth.rated.values() if r in ("satisfied", "basically_satisfied")),
    }
    mismatches = {k: {"expected": v, "stats": overview.get(k)} for k, v in expected.items() if overview.get(k) != v}
    lost = missing_in_intake + len(not_published) + max(0, len(truth.accepted) - int(overview.get("received", 0)))
    duplicated = sum(1 for ids in submitted_ids.values() if len(ids) > 1) + max(
        0, int(overview.get("received", 0)) - len(truth.accepted))
    return {
        "accepted": len(truth.accepted),
        "lost": lost,
        "duplicated": duplicated,
        "rate_mismatches": len(mismatches),
        "rate_mismatch_detail": mismatches,
        "duplicate_alerts": sum(1 for n in alert_ids.values() if n > 1),
        "alerts_published": len(alert_ids),
        "dead_letters": len(dead_letters),
        "malformed_injected": len(injected),
        "malformed_not_dead_lettered": len(not_dead_lettered),
        "dead_letters_by_service": dict(Counter(d.service for d in dead_letters)),
        "dead_letters_unexpected": len(unexpected),
        "dead_letters_repeated": len(repeated),
        "stats_overview": {k: overview.get(k) for k in ("received", "replied", "rated", "satisfied",
                                                         "reply_rate", "satisfaction_rate")},
        "http_errors_retried": dict(truth.http_errors),
    }


async def run(seconds: float, rate: float, drain: float) -> dict:
    platform = Platform(run_id=f"chaos{uuid.uuid4().hex[:6]}", base_port=18300,
                        extra_env={"WENZHENG_INTAKE_RATE_LIMIT_ENABLED": "false"})
    platform.start_all(counts={"router": 2})
    truth, stop, log, malformed = Truth(), asyncio.Event(), [], {"injected": set()}
    rng = random.Random(7)
    try:
        load = asyncio.create_task(citizen_load(platform, truth, seconds, rate, rng))
        units = asyncio.create_task(departments(platform, truth, stop, random.Random(8)))
        await faults(platform, log, spacing=seconds / 10, malformed=malformed)
        await load
        print(f"[chaos] load done: {len(truth.accepted)} accepted; draining up to {drain:.0f}s")
        deadline = time.monotonic() + drain
        async with httpx.AsyncClient(base_url=platform.url("stats"), timeout=5) as client:
            while time.monotonic() < deadline:
                try:
                    received = (await client.get("/v1/stats/overview")).json().get("received", 0)
                except (httpx.HTTPError, ValueError):
                    received = -1
                if received >= len(truth.accepted):
                    break
                await asyncio.sleep(1)
        await asyncio.sleep(5)  # let replies and ratings settle
        platform.advance_clock(30 * 86400)  # a month on: every unreplied case climbs the alert ladder
        await asyncio.sleep(20)
        stop.set()
        await units
        result = await verify(platform, truth, malformed["injected"])
        result["faults"] = log
        return result
    finally:
        stop.set()
        platform.stop_all()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.chaos")
    parser.add_argument("--seconds", type=float, default=90)
    parser.add_argument("--rate", type=float, default=40, help="posts per second")
    parser.add_argument("--drain", type=float, default=120)
    args = parser.parse_args(argv)
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    result = asyncio.run(run(args.seconds, args.rate, args.drain))
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(result, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    print(json.dumps(result, indent=2, ensure_ascii=False))
    bad = [k for k in ("lost", "duplicated", "rate_mismatches", "duplicate_alerts", "dead_letters_unexpected",
                       "malformed_not_dead_lettered") if result[k]]
    print("chaos: OK" if not bad else f"chaos: FAILED on {', '.join(bad)}")
    return 1 if bad else 0


if __name__ == "__main__":
    raise SystemExit(main())
