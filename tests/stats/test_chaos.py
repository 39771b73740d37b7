"""kill -9 the real service (``python -m services.stats``) at random points while cases flow, restart it, and
compare every rate with the ground truth of the generated cases: equal to the last digit.

Size: WENZHENG_STATS_CHAOS_CASES (default 120). The issue asks for 10,000; on the local FerretDB the
projector applies ~50-100 events/s (see bench/stats_apply.py), so 10,000 cases (~48,000 events) take
~10 minutes: run it by hand with the variable set.
"""

from __future__ import annotations

import asyncio
import os
import random
import signal
import socket
import subprocess
import sys

import httpx
import pytest

from services.common.kafka import EventPublisher, new_producer
from services.common.mongo import new_client
from services.stats.handlers import Projector
from services.stats.simulate import simulate
from services.stats.store import StatsStore
from tests.stats.support import TODAY, facts_of, measured

pytestmark = pytest.mark.integration
CASES = int(os.environ.get("WENZHENG_STATS_CHAOS_CASES", "120"))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start(env: dict[str, str]) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "services.stats"], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)


async def _applied_facts(store: StatsStore) -> int:
    total = 0
    async for doc in store.ledger.find({}, {"events.id": 1}):
        total += len(doc.get("events") or [])
    return total


@pytest.mark.timeout(900)
async def test_kill_minus_nine_during_the_stream_keeps_every_rate_exact(
        kafka_bootstrap: str, mongo_url: str, run_id: str, test_topics) -> None:
    sim = simulate(CASES, seed=int(run_id[:6], 16) % 1000, duplicate_rate=0.02)
    unique_facts = len({f["id"] for f in facts_of(sim)})
    producer = new_producer(kafka_bootstrap)
    await producer.start()
    try:
        publisher = EventPublisher(producer, source="urn:test", names=test_topics)
        await publisher.send_events((getattr(test_topics, key), event) for key, event in sim.events)
    finally:
        await producer.stop()

    db_name = f"wenzheng_stats_{run_id}"
    port = _free_port()
    env = {**os.environ, "WENZHENG_KAFKA_BOOTSTRAP": kafka_bootstrap, "WENZHENG_MONGO_URL": mongo_url,
           "WENZHENG_STATS_DATABASE": db_name, "WENZHENG_STATS_CONSUMER_GROUP": f"stats-{run_id}",
           "WENZHENG_STATS_INSTANCE_ID": f"chaos-{run_id}", "WENZHENG_STATS_MAX_BATCH": "40",
           "WENZHENG_PORT": str(port), "WENZHENG_LOG_LEVEL": "WARNING",
           **{f"WENZHENG_TOPIC_{k.upper()}": v for k, v in test_topics.model_dump().items()}}
    client = new_client(mongo_url)
    store = StatsStore(client[db_name])
    rng = random.Random(run_id)
    proc = _start(env)
    try:
        kills = 0
        while kills < 3:
            await asyncio.sleep(rng.uniform(2.0, 6.0))
            if kills and await _applied_facts(store) >= unique_facts:
                break
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            kills += 1
            proc = _start(env)
        for _ in range(800):  # the pytest timeout bounds this wait, not a speed assertion
            if await _applied_facts(store) >= unique_facts:
                break
            await asyncio.sleep(1.0)
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as http:
            for _ in range(120):
                try:
                    overview = (await http.get("/v1/stats/overview")).json()
                    break
                except httpx.HTTPError:
                    await asyncio.sleep(0.5)
            proc.send_signal(signal.SIGTERM)  # a clean stop, so the running marker is cleared
            proc.wait(timeout=60)
        projector = Projector(StatsStore(client[db_name]), "checker")
        truth = sim.truth(TODAY)
        got = await measured(projector)
        assert got == {k: v for k, v in truth.items() if k in got}
        assert set(got) == {k for k, v in truth.items() if v["received"]}
        assert overview["received"] == truth["all"]["received"]
        assert overview["reply_rate"]["numerator"] == truth["all"]["replied"]
        assert overview["satisfaction_rate"]["numerator"] == truth["all"]["satisfied"]
        assert (await projector.reconcile(fix=False))["differences"] == 0
        assert kills >= 1
        assert await store.meta.find_one({"_id": f"running:chaos-{run_id}"}) is None
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        await client.drop_database(db_name)
        await client.close()
