"""kill -9 the real service (``python -m services.stats``) at random points while cases flow, restart it, and
compare every rate with the ground truth of the generated cases: equal to the last digit.

Size: WENZHENG_STATS_CHAOS_CASES (default 300, about a minute in ``make test``) and WENZHENG_STATS_CHAOS_KILLS
(default 3). The issue's run is ``WENZHENG_STATS_CHAOS_CASES=10000 WENZHENG_STATS_CHAOS_KILLS=6``: ~46,000
events, a few minutes on the local FerretDB. Batches and rollup flushes are kept small so kills land inside
every step (ledger swap, journal, flush) many times over.
"""

from __future__ import annotations

import asyncio
import os
import random
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from harness.ports import free_port
from harness.simulate import simulate
from services.common.kafka import EventPublisher, new_producer
from services.common.mongo import new_client
from services.stats.handlers import Projector
from services.stats.store import StatsStore
from tests.stats.integration.support import TODAY, facts_of, measured

pytestmark = pytest.mark.integration
CASES = int(os.environ.get("WENZHENG_STATS_CHAOS_CASES", "300"))
KILLS = int(os.environ.get("WENZHENG_STATS_CHAOS_KILLS", "3"))


def _start(env: dict[str, str], log: Path) -> subprocess.Popen:
    with log.open("ab") as out:  # every run's output, kept for the failure report
        return subprocess.Popen([sys.executable, "-m", "services.stats"], env=env, stdout=out, stderr=out)


async def _applied_facts(store: StatsStore) -> int:
    total = 0
    async for doc in store.ledger.find({}, {"n": 1}):
        total += doc.get("n") or 0
    return total


@pytest.mark.timeout(2400)
async def test_kill_minus_nine_during_the_stream_keeps_every_rate_exact(
        kafka_bootstrap: str, mongo_url: str, run_id: str, test_topics, tmp_path: Path) -> None:
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
    port = free_port()
    env = {**os.environ, "WENZHENG_KAFKA_BOOTSTRAP": kafka_bootstrap, "WENZHENG_MONGO_URL": mongo_url,
           "WENZHENG_STATS_DATABASE": db_name, "WENZHENG_STATS_CONSUMER_GROUP": f"stats-{run_id}",
           "WENZHENG_STATS_INSTANCE_ID": f"chaos-{run_id}", "WENZHENG_STATS_MAX_BATCH": str(max(40, CASES // 20)),
           "WENZHENG_STATS_FLUSH_SECONDS": "0.5", "WENZHENG_STATS_FOLD_SECONDS": "1",
           "WENZHENG_PORT": str(port), "WENZHENG_LOG_LEVEL": "WARNING",
           **{f"WENZHENG_TOPIC_{k.upper()}": v for k, v in test_topics.model_dump().items()}}
    client = new_client(mongo_url)
    store = StatsStore(client[db_name])
    rng = random.Random(run_id)
    log = tmp_path / "stats.log"
    proc = _start(env, log)
    try:
        kills = 0
        while kills < KILLS:
            await asyncio.sleep(rng.uniform(2.0, 6.0))
            if kills and await _applied_facts(store) >= unique_facts:
                break
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            kills += 1
            proc = _start(env, log)
        for _ in range(1800):  # the pytest timeout bounds this wait, not a speed assertion
            # every fact in the ledger and no journal left: the last flush is done, the rates are final
            if await _applied_facts(store) >= unique_facts and not await store.batches.count_documents({}):
                break
            assert proc.poll() is None, "the stats service died on its own (its output is printed below)"
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
        print(f"chaos: {CASES} cases, {unique_facts} distinct facts, {kills} kill -9, every rate equal to the truth")
        assert await store.meta.find_one({"_id": f"running:chaos-{run_id}"}) is None
    finally:
        print("stats service output (tail):\n" + log.read_text(errors="replace")[-6000:])
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        await client.drop_database(db_name)
        await client.close()
