"""Issue #17 item 3: the ledger is written in batches. A batch of events costs the same few database commands
however many events and cases it carries (no statement per event or per case), and a replay of every event
reads the ledger and writes nothing. Counted with the same command listener the service's client uses."""

from __future__ import annotations

import pytest
from prometheus_client import CollectorRegistry, Counter

from harness.simulate import simulate
from services.common.mongo import CommandCounter, new_client
from services.stats.handlers import Projector
from services.stats.store import StatsStore
from tests.stats.integration.support import TODAY, facts_of, measured

pytestmark = pytest.mark.integration
WRITES = {"insert", "update", "delete", "findAndModify"}


class Commands:
    """The commands one client sends, by operation (a private registry: nothing else counts here)."""

    def __init__(self) -> None:
        self.counter = Counter("commands", "commands sent", ["operation"], registry=CollectorRegistry())
        self.listener = CommandCounter(self.counter)

    def now(self) -> dict[str, int]:
        return {s.labels["operation"]: int(s.value) for m in self.counter.collect() for s in m.samples
                if s.name.endswith("_total")}

    def since(self, before: dict[str, int]) -> dict[str, int]:
        return {op: n - before.get(op, 0) for op, n in self.now().items() if n > before.get(op, 0)}


@pytest.fixture
async def counted(mongo_url: str, run_id: str):
    commands = Commands()
    client = new_client(mongo_url, event_listeners=[commands.listener])
    name = f"wenzheng_stats_{run_id}"
    yield StatsStore(client[name]), commands
    await client.drop_database(name)
    await client.close()


async def test_a_batch_costs_a_few_commands_whatever_its_size_and_a_replay_writes_nothing(counted) -> None:
    store, commands = counted
    projector = Projector(store, "counted", fold_seconds=0)  # a fold into the rollup documents after each flush
    await projector.start()
    small, large = simulate(20, seed=21), simulate(600, seed=22)
    costs = {}
    for label, sim in (("small", small), ("large", large)):
        facts = facts_of(sim)
        before = commands.now()
        result = await projector.apply(facts)  # one call: ledger, journal, rollup log entry and fold
        costs[label] = commands.since(before)
        assert result.cases_changed == len({f["case_id"] for f in facts}) and result.duplicates == 0
    events, cases = len(facts_of(large)), len({f["case_id"] for f in facts_of(large)})
    assert events > 2000 and cases == 600
    # thirty times the events costs no more statements: nothing per event or per case
    assert sum(costs["large"].values()) <= sum(costs["small"].values()) + 4, costs
    assert sum(costs["large"].values()) <= 30, costs
    assert sum(n for op, n in costs["large"].items() if op in WRITES) <= 15, costs

    # a replay of every event (cut into other batches): read, recognised, nothing written
    everything = facts_of(small) + facts_of(large)
    before = commands.now()
    for start in range(0, len(everything), 700):
        result = await projector.apply(everything[start:start + 700])
        assert result.cases_changed == 0 and result.duplicates == len(everything[start:start + 700])
    replay = commands.since(before)
    assert not set(replay) & WRITES, replay

    # and the rates are the ground truth of both streams, each event counted once, for any reader
    rates = await measured(projector)
    truth = [sim.truth(TODAY)["all"] for sim in (small, large)]
    for figure in ("received", "replied", "on_time", "rated", "satisfied", "returns", "second_handling"):
        assert rates["all"][figure] == sum(t[figure] for t in truth), figure
    fresh = Projector(store, "reader")
    await fresh.start()
    assert await measured(fresh) == rates
