"""The projector against the real MongoDB-wire server: replays, crashes between steps, reconcile."""

from __future__ import annotations

import random

import pytest

from harness.simulate import simulate
from services.common.mongo import new_client
from services.stats.handlers import Projector
from services.stats.store import StatsStore, rollup_location
from tests.stats.integration.support import TODAY, apply_in_batches, facts_of, measured

pytestmark = pytest.mark.integration


@pytest.fixture
async def store(mongo_url: str, run_id: str):
    client = new_client(mongo_url)
    name = f"wenzheng_stats_{run_id}"
    store = StatsStore(client[name])
    await store.ensure_indexes()
    yield store
    await client.drop_database(name)
    await client.close()


async def rollup_snapshot(store: StatsStore) -> dict[str, dict[str, int]]:
    """Every stored rollup document's counters, by rollup id."""
    return {rid: c for doc in await store.rollup_documents() for rid, c in doc.rollups.items() if c}


async def test_replaying_the_same_stream_twice_changes_nothing(store: StatsStore) -> None:
    sim = simulate(120, seed=11, duplicate_rate=0.1)
    projector = Projector(store, "test", fold_seconds=0)
    facts = facts_of(sim)
    await apply_in_batches(projector, facts, 300)
    first = await rollup_snapshot(store)
    first_rates = await measured(projector)
    await apply_in_batches(projector, facts, 170)  # a full replay, cut into different batches
    assert await rollup_snapshot(store) == first
    assert await measured(projector) == first_rates
    assert first_rates == {k: v for k, v in sim.truth(TODAY).items() if v["received"] or k == "all"
                           } | {k: v for k, v in first_rates.items() if k not in sim.truth(TODAY)}


class CrashAfter(StatsStore):
    """The real adapter, made to die at a chosen step of a batch or of a fold (like kill -9 between two writes);
    the projectors fold after every flush, so both happen in every batch."""

    crash_at: str | None = None

    async def replace_cases(self, docs, existing=None):
        if self.crash_at == "mid_ledger":  # the old documents are deleted, the new ones not yet written
            await self.ledger.delete_many({"_id": {"$in": [d["_id"] for d in docs]}})
            raise SystemExit("crash")
        await super().replace_cases(docs, existing)

    async def increment_once(self, increments, marker, owner, recovering=False):
        if self.crash_at == "before_rollups":
            raise SystemExit("crash")
        if self.crash_at == "half_rollups":  # half of the documents (one document's update is all or nothing)
            docs = sorted({rollup_location(rid)[:2] for rid in increments})
            first = set(docs[: len(docs) // 2])
            half = {rid: c for rid, c in increments.items() if rollup_location(rid)[:2] in first}
            await super().increment_once(half, marker, owner, recovering)
            raise SystemExit("crash")
        await super().increment_once(increments, marker, owner, recovering)

    async def close_batches(self, batch_ids):
        if self.crash_at == "before_close":
            raise SystemExit("crash")
        await super().close_batches(batch_ids)


@pytest.mark.parametrize("step", ["mid_ledger", "before_rollups", "half_rollups", "before_close"])
async def test_a_crash_inside_a_batch_is_recovered_exactly(mongo_url: str, run_id: str, step: str) -> None:
    client = new_client(mongo_url)
    name = f"wenzheng_stats_{run_id}_{step}"
    try:
        store = CrashAfter(client[name])
        sim = simulate(60, seed=21)
        facts = facts_of(sim)
        rng = random.Random(step)
        cut = sorted(rng.sample(range(1, len(facts)), 3))
        batches = [facts[a:b] for a, b in zip([0, *cut], [*cut, len(facts)], strict=True)]
        for i, batch in enumerate(batches):
            store.crash_at = step if i % 2 == 0 else None
            projector = Projector(store, "test", fold_seconds=0)
            try:
                await projector.apply(batch)
            except SystemExit:
                # the process died; a new one recovers, then Kafka redelivers the uncommitted batch
                store.crash_at = None
                restarted = Projector(StatsStore(client[name]), "test", fold_seconds=0)
                await restarted.recover_all()
                await restarted.apply(batch)
        check = Projector(StatsStore(client[name]), "test", fold_seconds=0)
        truth = sim.truth(TODAY)
        got = await measured(check)
        assert got == {k: v for k, v in truth.items() if k in got}
        assert set(got) == {k for k, v in truth.items() if v["received"]}
        report = await check.reconcile(fix=False)
        assert report["differences"] == 0
    finally:
        await client.drop_database(name)
        await client.close()


async def test_reconcile_reports_and_fixes_a_damaged_rollup(store: StatsStore) -> None:
    sim = simulate(50, seed=3)
    projector = Projector(store, "test", fold_seconds=0)
    await apply_in_batches(projector, facts_of(sim), 500)
    before = await measured(projector)
    await store.db["rollup_m"].find_one_and_update({"_id": {"$regex": "^all\\|all\\|"}}, {"$inc": {"received": 7}})
    damaged = await projector.reconcile(fix=True)
    assert damaged["differences"] == 1
    assert damaged["examples"][0]["missing"] == {"received": -7}
    assert await measured(projector) == before
    assert (await projector.reconcile(fix=False))["differences"] == 0


async def test_reconcile_leaves_another_replicas_work_in_flight_alone(store: StatsStore) -> None:
    sim = simulate(60, seed=4)
    facts = facts_of(sim)
    cases = sorted({f["case_id"] for f in facts})
    mine = set(cases[::2])
    projector = Projector(store, "test", fold_seconds=0)
    other = Projector(StatsStore(store.db), "other", flush_seconds=3600)
    await projector.apply([f for f in facts if f["case_id"] in mine])
    await other.apply([f for f in facts if f["case_id"] not in mine], flush=False)  # in the ledger, not yet counted
    report = await projector.reconcile(fix=True)
    assert report["differences"] == 0 and report["in_flight"] > 0
    await other.flush()
    assert await measured(projector) == {k: v for k, v in sim.truth(TODAY).items() if v["received"] or k == "all"}
    assert (await projector.reconcile(fix=False))["differences"] == 0


@pytest.mark.parametrize("step", ["before_rollups", "half_rollups", "before_close"])
async def test_a_crash_in_a_deferred_flush_of_several_batches_is_recovered_exactly(
        mongo_url: str, run_id: str, step: str) -> None:
    client = new_client(mongo_url)
    name = f"wenzheng_stats_{run_id}_group_{step}"
    try:
        store = CrashAfter(client[name])
        sim = simulate(60, seed=22, duplicate_rate=0.05)
        facts = facts_of(sim)
        projector = Projector(store, "test", flush_seconds=3600, fold_seconds=0)
        for start in range(0, len(facts), 50):  # the consumer's way: journal now, flush later
            await projector.apply(facts[start:start + 50], flush=False)
        assert await store.batches.count_documents({}) > 1
        store.crash_at = step
        with pytest.raises(SystemExit):
            await projector.flush()
        fold_in_progress = (await store.fold_state("test"))[1] is not None
        restarted = Projector(StatsStore(client[name]), "test", fold_seconds=0)
        recovered = await restarted.recover_all()
        if step == "before_close":  # the log entry is written, the journals are not closed yet
            assert recovered > 1 and not fold_in_progress
        else:  # the flush finished; its fold died after noting its entries
            assert recovered == 0 and fold_in_progress
        assert (await restarted.store.fold_state("test"))[1] is None
        await restarted.apply(facts[-50:])  # redelivered: all duplicates now
        truth = sim.truth(TODAY)
        got = await measured(restarted)
        assert got == {k: v for k, v in truth.items() if k in got}
        assert set(got) == {k for k, v in truth.items() if v["received"]}
        assert (await restarted.reconcile(fix=False))["differences"] == 0
    finally:
        await client.drop_database(name)
        await client.close()
