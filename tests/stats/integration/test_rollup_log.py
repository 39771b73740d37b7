"""The rollup log and the in-memory view, against the real MongoDB-wire server: several instances, a view that
falls behind the trimmed log, a log number taken by another process, and a view loaded mid-flush."""

from __future__ import annotations

import pytest

from harness.simulate import simulate
from services.common.mongo import new_client
from services.stats.domain import fact_from_event
from services.stats.handlers import Projector
from services.stats.store import StatsStore, pack, rollup_location
from services.stats.view import RollupView
from tests.stats.integration.support import TODAY, apply_in_batches, facts_of, measured

pytestmark = pytest.mark.integration


@pytest.fixture
async def db(mongo_url: str, run_id: str):
    client = new_client(mongo_url)
    name = f"wenzheng_stats_log_{run_id}"
    yield client[name]
    await client.drop_database(name)
    await client.close()


def expected(sim) -> dict:
    truth = sim.truth(TODAY)
    return {k: v for k, v in truth.items() if v["received"] or k == "all"}


async def stored_rollups(store: StatsStore) -> dict[str, dict[str, int]]:
    return {rid: c for doc in await store.rollup_documents() for rid, c in doc.rollups.items() if c}


async def test_instances_sharing_a_database_see_each_others_flushes(db) -> None:
    sim = simulate(120, seed=31)
    facts = facts_of(sim)
    cases = sorted({f["case_id"] for f in facts})
    first_half = set(cases[::2])  # as Kafka would split them: each case on one instance
    a, b = Projector(StatsStore(db), "a"), Projector(StatsStore(db), "b")
    await a.start()
    await b.start()
    for start in range(0, len(facts), 200):
        chunk = facts[start:start + 200]
        await a.apply([f for f in chunk if f["case_id"] in first_half])
        await b.apply([f for f in chunk if f["case_id"] not in first_half])
    assert await measured(a) == await measured(b) == expected(sim)
    await a.fold()
    assert await store_has_folded(a.store, "a")
    fresh = RollupView(StatsStore(db))
    await fresh.load()
    assert fresh.rollups() == a.view.rollups() != await stored_rollups(a.store)  # b has not folded yet
    await b.fold()
    assert await stored_rollups(a.store) == a.view.rollups()
    assert fresh.heads == a.view.heads and set(fresh.heads) == {"a", "b"}


async def store_has_folded(store: StatsStore, owner: str) -> bool:
    folded, in_progress = await store.fold_state(owner)
    return in_progress is None and folded == len(await store.read_log(owner, 0))


async def test_a_view_behind_the_trimmed_log_reloads_and_stays_exact(db) -> None:
    sim = simulate(80, seed=32)
    facts = facts_of(sim)
    store = StatsStore(db)
    reader = RollupView(StatsStore(db))
    writer = Projector(store, "w", log_keep=2, trim_every=1, fold_seconds=0)
    await writer.start()
    await reader.load()
    await apply_in_batches(writer, facts, 40)  # one flush, so one log entry, per batch
    floor = (await store.log_floors())["w"]
    assert floor > reader.heads.get("w", 0)  # the reader's next entries are gone
    assert await store.log.count_documents({}) <= 3
    await reader.catch_up()
    assert reader.rollups() == writer.view.rollups() == await stored_rollups(store)
    assert reader.heads["w"] == writer.view.heads["w"]


async def test_a_log_number_taken_by_another_process_is_not_counted_twice(db) -> None:
    sim = simulate(40, seed=33)
    facts = facts_of(sim)
    store = StatsStore(db)
    projector = Projector(store, "p")
    await projector.start()
    half = len(facts) // 2
    await projector.apply(facts[:half])
    taken = projector.view.heads["p"] + 1
    # e.g. another replica finished this instance's old journals under that number while it restarted
    await store.append_log("p", taken, "someone-else", {})
    await projector.apply(facts[half:])
    assert await measured(projector) == expected(sim)
    assert await store.batches.count_documents({}) == 0
    entries = await store.read_log("p", 0)
    assert [e.seq for e in entries] == list(range(1, taken + 2))
    assert entries[taken - 1].group == "someone-else"
    fresh = Projector(StatsStore(db), "checker")
    assert await measured(fresh) == expected(sim)


class HalfIncrements(StatsStore):
    """Dies after half of a fold's $inc (like kill -9 mid-fold)."""

    async def increment_once(self, increments, marker, owner, recovering=False):
        docs = sorted({rollup_location(rid)[:2] for rid in increments})
        first = set(docs[: len(docs) // 2])
        await super().increment_once({rid: c for rid, c in increments.items() if rollup_location(rid)[:2] in first},
                                     marker, owner, recovering)
        raise SystemExit("crash")


async def test_a_view_loaded_in_the_middle_of_a_fold_counts_each_entry_once(db, mongo_url: str,
                                                                                    run_id: str) -> None:
    sim = simulate(60, seed=34)
    facts = [f for _t, e in sim.events if (f := fact_from_event(e)) is not None]
    half = len(facts) // 2
    clean = Projector(StatsStore(db), "clean")
    await clean.apply(facts[:half])
    crashing = Projector(HalfIncrements(db), "clean", fold_seconds=0)
    crashing._started, crashing.view = True, clean.view
    crashing._next_seq = clean.view.heads["clean"] + 1
    with pytest.raises(SystemExit):
        await crashing.apply(facts[half:])
    stored = await stored_rollups(StatsStore(db))
    loaded = RollupView(StatsStore(db))
    await loaded.load()
    assert loaded.rollups() != stored  # the documents hold half the last fold, the view all of it
    reference_db = db.client[f"wenzheng_stats_log_ref_{run_id}"]
    try:
        reference = Projector(StatsStore(reference_db), "ref")
        await reference.apply(facts)
        assert loaded.rollups() == reference.view.rollups()
    finally:
        await db.client.drop_database(reference_db.name)
    restarted = Projector(StatsStore(db), "clean")
    assert (await restarted.store.fold_state("clean"))[1] is not None  # a fold in progress
    await restarted.start()  # finishes it, with the same entries
    assert await stored_rollups(restarted.store) == loaded.rollups()
    assert await store_has_folded(restarted.store, "clean")


async def test_a_reader_follows_head_hints_and_finds_an_unhinted_entry_on_a_full_probe(db) -> None:
    store = StatsStore(db)
    reader = RollupView(StatsStore(db))
    await store.register_owner("x")
    await reader.load()
    await store.append_log("x", 1, "g1", {"all|all|2025-06": {"received": 2}})
    await reader.catch_up(probe_all=False)
    assert reader.heads["x"] == 1 and reader.rollup("all", "all", "2025-06").get("received") == 2
    # the owner died between writing its entry and its head hint
    await store.log.insert_one({"_id": "x:000000000002", "owner": "x", "seq": 2, "group": "g2",
                                "deltas": pack({"all|all|2025-06": {"received": 3}})})
    await reader.catch_up(probe_all=False)
    assert reader.heads["x"] == 1
    await reader.catch_up(probe_all=True)
    assert reader.heads["x"] == 2 and reader.rollup("all", "all", "2025-06").get("received") == 5
