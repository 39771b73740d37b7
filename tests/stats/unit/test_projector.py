"""The projector's use cases over an in-memory fake of the store: exactly once per event id across replays
and re-cut batches, one journal and one ledger swap per batch (never a statement per event), and a batch
interrupted after its journal finished by recovery with the same figures. No database."""

from __future__ import annotations

from datetime import date

import pytest

from harness.simulate import simulate
from services.stats.domain import Summary, fact_from_event
from services.stats.handlers import Projector
from tests.stats.unit.fakes import FakeStatsStore

TODAY = date(2026, 11, 27)  # after every simulated deadline


def facts_of(sim) -> list[dict]:
    return [f for _topic, event in sim.events if (f := fact_from_event(event)) is not None]


def totals(projector: Projector) -> dict:
    view = projector.view
    summary = view.summaries("all", view.months(), []).get("all", Summary())
    rates = summary.rates(TODAY)
    return {k: rates[k] for k in ("received", "replied", "rated", "satisfied", "returns", "second_handling")}


async def apply_in(projector: Projector, facts: list[dict], size: int) -> None:
    for start in range(0, len(facts), size):
        await projector.apply(facts[start:start + size])


async def test_each_event_counts_once_whatever_the_replays_and_the_batches() -> None:
    sim = simulate(90, seed=4, duplicate_rate=0.1)
    facts = facts_of(sim)
    store = FakeStatsStore()
    projector = Projector(store, "unit", fold_seconds=0)  # type: ignore[arg-type]
    await apply_in(projector, facts, 250)
    first = totals(projector)
    truth = sim.truth(TODAY)["all"]
    assert first["received"] == truth["received"] and first["replied"] == truth["replied"]
    assert first["satisfied"] == truth["satisfied"]
    documents = {k: dict(v["rollups"]) for k, v in store.documents.items()}

    await apply_in(projector, facts[::-1], 70)  # the whole stream again, backwards, in other batches
    assert totals(projector) == first
    assert {k: dict(v["rollups"]) for k, v in store.documents.items()} == documents
    assert not store.journal

    reader = Projector(store, "reader")  # type: ignore[arg-type]
    await reader.start()  # another replica loads the documents and the log: the same figures
    assert totals(reader) == first


async def test_a_batch_is_one_journal_and_one_ledger_swap_however_many_events() -> None:
    facts = facts_of(simulate(300, seed=8))
    store = FakeStatsStore()
    projector = Projector(store, "unit", fold_seconds=0)  # type: ignore[arg-type]
    await projector.start()
    store.calls.clear()
    result = await projector.apply(facts)
    assert len(facts) > 1000 and result.cases_changed == 300
    writes = [c for c in store.calls if c != "load_cases"]
    assert writes == ["open_batch", "replace_cases", "append_log", "close_batches", "increment_once"]
    store.calls.clear()
    again = await projector.apply(facts)
    assert again.duplicates == len(facts) and store.calls == ["load_cases"]  # a replay only reads


class CrashAfterJournal(FakeStatsStore):
    crash = True

    async def append_log(self, *args, **kwargs):
        if self.crash:
            raise SystemExit("killed between the ledger and the rollup log")
        return await super().append_log(*args, **kwargs)


async def test_a_batch_killed_after_its_journal_is_finished_by_recovery() -> None:
    sim = simulate(40, seed=6)
    facts = facts_of(sim)
    store = CrashAfterJournal()
    projector = Projector(store, "unit", fold_seconds=0)  # type: ignore[arg-type]
    with pytest.raises(SystemExit):
        await projector.apply(facts)
    assert store.journal and store.ledger  # the ledger has the cases, the rollups do not yet
    store.crash = False
    restarted = Projector(store, "unit", fold_seconds=0)  # type: ignore[arg-type]
    assert await restarted.start() == 1
    assert not store.journal
    assert totals(restarted)["received"] == sim.truth(TODAY)["all"]["received"]
    await restarted.apply(facts)  # and the stream, redelivered from the last commit, changes nothing
    assert totals(restarted)["received"] == sim.truth(TODAY)["all"]["received"]

