"""The bulletin's case lists (典型案例, overdue and escalated) kept in stats' view, not read from the ledger:
replay-safe, the same in a restarted or second replica, equal to what the ledger says; and a database that
times out or fails answers 503 with the error envelope, never 500."""

from __future__ import annotations

import random
import uuid
from datetime import UTC, datetime, timedelta

import pytest
from pymongo.errors import OperationFailure

from harness.simulate import simulate
from services.common.mongo import new_client
from services.common.workdays import SHANGHAI
from services.stats.domain import month_bounds
from services.stats.handlers import Projector
from services.stats.store import StatsStore
from services.stats.view import RollupView
from tests.stats.integration.support import apply_in_batches, facts_of, serving_stats

# ------------------------------------------------------------------------------------------ real database

@pytest.fixture
async def store(mongo_url: str, run_id: str):
    client = new_client(mongo_url)
    name = f"wenzheng_stats_{run_id}"
    yield StatsStore(client[name])
    await client.drop_database(name)
    await client.close()


def flag_facts(facts: list[dict], share: float, seed: int) -> list[dict]:
    """case.flagged facts for a share of the simulated cases, a few days after each was received."""
    rng = random.Random(seed)
    received = {f["case_id"]: f for f in facts if f["type"] == "case.submitted"}
    out = []
    for case_id, fact in sorted(received.items()):
        if rng.random() < share:
            at = datetime.fromisoformat(fact["at"]) + timedelta(days=rng.randrange(0, 40))
            out.append({"id": uuid.UUID(int=rng.getrandbits(128)).hex, "type": "case.flagged", "case_id": case_id,
                        "version": 50, "at": at.isoformat(), "tracking_number": fact["tracking_number"]})
    return out


async def ledger_lists(store: StatsStore, month: str) -> tuple[set[str], set[str]]:
    """What the ledger says (the filtered scans the report used to run): typical and late cases of a month."""
    first, last = month_bounds(month)
    in_month = {"$gte": first.isoformat(), "$lte": last.isoformat()}
    late = await store.browse({"s.received_day": in_month,
                               "$or": [{"s.overdue_alerted": True}, {"s.escalated": True}]}, 0, 10_000)
    typical = await store.browse({"s.flagged_day": in_month}, 0, 10_000)
    return {d["s"]["tracking_number"] for d in typical}, {d["s"]["tracking_number"] for d in late}


def view_lists(view: RollupView, month: str) -> tuple[set[str], set[str]]:
    return ({s["tracking_number"] for _c, s in view.lists.typical(month)},
            {s["tracking_number"] for _c, s in view.lists.late(month)})


def everything(view: RollupView) -> dict:
    return {m: (view.lists.typical(m), view.lists.late(m)) for m in view.months()}


@pytest.mark.integration
async def test_lists_equal_the_ledger_survive_replays_restarts_and_a_second_replica(store: StatsStore) -> None:
    sim = simulate(150, seed=5, days=70, duplicate_rate=0.05)
    facts = facts_of(sim)
    facts += flag_facts(facts, 0.15, seed=5)
    random.Random(1).shuffle(facts)  # flags and alerts arrive in any order with the rest
    projector = Projector(store, "one", fold_seconds=0, log_keep=0, trim_every=1)
    await apply_in_batches(projector, facts, 200)
    months = projector.view.months()
    assert len(months) >= 2
    listed = 0
    for month in months:
        expected = await ledger_lists(store, month)
        assert view_lists(projector.view, month) == expected
        listed += len(expected[0]) + len(expected[1])
    assert listed > 20  # the stream flags and alerts cases in every month
    first = everything(projector.view)

    await apply_in_batches(projector, facts, 130)  # a full replay, in other batches
    assert everything(projector.view) == first

    # a restarted process and a second replica (log trimmed: only the stored lists have the old entries)
    restarted = RollupView(store)
    await restarted.load()
    assert everything(restarted) == first
    second = Projector(store, "two", fold_seconds=0)
    await second.start()
    assert everything(second.view) == first

    # a new flag applied by the second replica reaches the first one through the log
    case_id, fact = next((f["case_id"], f) for f in facts if f["type"] == "case.submitted"
                         and f["case_id"] not in {c for m in first for c, _s in first[m][0]})
    flag = {**fact, "id": uuid.uuid4().hex, "type": "case.flagged", "version": 60}
    await second.apply([flag])
    await projector.view.catch_up()
    month = datetime.fromisoformat(fact["at"]).astimezone(SHANGHAI).strftime("%Y-%m")
    assert case_id in {c for c, _s in projector.view.lists.typical(month)}
    assert view_lists(projector.view, month) == await ledger_lists(store, month)


@pytest.mark.integration
async def test_a_crash_before_the_flush_is_recovered_and_a_ledger_without_lists_is_rebuilt(store: StatsStore) -> None:
    sim = simulate(80, seed=9, days=40)
    facts = facts_of(sim)
    facts += flag_facts(facts, 0.2, seed=9)
    projector = Projector(store, "crashy", fold_seconds=0)
    await projector.apply(facts[: len(facts) // 2])
    await projector.apply(facts[len(facts) // 2:], flush=False)  # journaled and in the ledger, not flushed
    assert projector.pending()
    restarted = Projector(store, "crashy", fold_seconds=0)  # the process died; the next one recovers
    assert await restarted.recover_all() >= 1
    for month in restarted.view.months():
        assert view_lists(restarted.view, month) == await ledger_lists(store, month)
    kept = everything(restarted.view)

    # a deployment from before the lists: no stored lists; the first start builds them from the ledger
    await store.lists.drop()
    await store.meta.delete_one({"_id": "case_lists"})
    upgraded = Projector(store, "new", fold_seconds=0)
    await upgraded.start()
    fresh = RollupView(store)
    await fresh.load()
    assert everything(fresh) == kept

    # damaged stored lists are found and fixed by reconcile
    stored = await store.case_lists()
    victim, change = next(iter(stored.items()))
    await store.save_case_lists({victim: {"rev": change["rev"] + 100, "s": {**change["s"], "unit": "wrong"}},
                                 "not-a-case": {"rev": 1, "s": {**change["s"], "tracking_number": "GZ-NONE"}}})
    damaged = RollupView(store)
    await damaged.load()
    assert everything(damaged) != kept
    report = await upgraded.reconcile(fix=True)
    assert report["list_differences"] == 2
    again = RollupView(store)
    await again.load()
    assert everything(again) == kept


async def _fill(projector: Projector) -> None:
    sim = simulate(60, seed=3, days=30)
    facts = facts_of(sim)
    await apply_in_batches(projector, facts + flag_facts(facts, 0.3, seed=3), 500)


@pytest.mark.integration
async def test_the_report_reads_no_ledger_and_a_failing_database_answers_503(mongo_url: str, monkeypatch) -> None:
    from tests.stats.integration.support import TODAY
    now = datetime(TODAY.year, TODAY.month, TODAY.day, 4, tzinfo=UTC)
    async with serving_stats(mongo_url, _fill, now=now, min_sample=1) as http:
        svc = http._transport.app.state.runtime  # type: ignore[attr-defined]
        month = svc.view.months()[0]

        async def no_ledger(*_a, **_k):
            raise AssertionError("the report read the ledger")

        with monkeypatch.context() as patch:
            patch.setattr(svc.store, "browse", no_ledger)
            for fmt in ("json", "html", "xlsx", "csv"):
                r = await http.get("/v1/reports/monthly", params={"month": month, "format": fmt})
                assert r.status_code == 200, r.text
        report = (await http.get("/v1/reports/monthly", params={"month": month})).json()
        typical, late = await ledger_lists(svc.store, month)
        assert {c["tracking_number"] for c in report["typical_cases"]} == typical and typical
        assert {c["tracking_number"] for c in report["overdue_and_escalated"]} == late

        # a ledger scan past its time bound (the real server, a bound it cannot meet): 503 query_timeout
        svc.settings.ledger_query_seconds = 0.000_001
        for params in ({"format": "csv", "unit": "unit-001"}, {"format": "json", "flagged": "true"}):
            r = await http.get("/v1/ledger", params=params)
            assert r.status_code == 503, r.text
            assert r.json()["error"]["code"] == "query_timeout" and r.headers["retry-after"]
        svc.settings.ledger_query_seconds = 20.0
        assert (await http.get("/v1/ledger", params={"format": "csv"})).status_code == 200

        async def failing(*_a, **_k):  # any other database error (our adapter made to fail like the server)
            raise OperationFailure("server error", code=1)

        monkeypatch.setattr(svc.store, "browse", failing)
        r = await http.get("/v1/cases")
        assert r.status_code == 503 and r.json()["error"]["code"] == "database_unavailable"
