"""The worker's micro-batches against the real MongoDB-wire server: a batch decides what handling its events
one at a time decides (several events of one case in one batch, duplicates of a post earlier in the same
batch or in an earlier batch, a closed case no longer a duplicate target), and a replayed batch changes
nothing."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from services.common.events import CaseAssigned, CaseClosed, CaseReturned, CaseSubmitted, make_event
from services.common.mongo import new_client
from services.router.agents import RouterWorker
from services.router.policies import CaseRouting, RoutingPolicy
from services.router.store import RouterStore, day_keys

pytestmark = pytest.mark.integration
T0 = datetime(2026, 9, 28, 2, 0, tzinfo=UTC)
LAMP = "水西镇村口的路灯坏了半个月，晚上出行很不安全，请尽快安排维修"
WATER = "小区停水两天了没有任何通知，请水务公司尽快恢复供水"


def submitted(case_id: str, text: str, poster: str | None, minutes: int = 0):
    return make_event(CaseSubmitted(case_id=case_id, tracking_number=f"WZ-{case_id}", version=1,
                                    occurred_at=T0 + timedelta(minutes=minutes), actor="citizen", channel="web",
                                    title=text[:20], body=text, poster_ref=poster), source="/tests")


def returned(case_id: str, department_id: str, version: int, count: int):
    return make_event(CaseReturned(case_id=case_id, tracking_number=f"WZ-{case_id}", version=version,
                                   occurred_at=T0 + timedelta(hours=1), actor="department",
                                   department_id=department_id, reason="不属于本单位", return_count=count),
                      source="/tests")


def assigned(case_id: str, decision, version: int):
    return make_event(CaseAssigned(case_id=case_id, tracking_number=f"WZ-{case_id}", version=version,
                                   occurred_at=T0, actor="router", decision_id=decision.decision_id,
                                   category=decision.category, category_name=decision.category_name,
                                   department_id=decision.department_id, department_name=decision.department_name,
                                   deadline=decision.deadline, working_days=decision.working_days,
                                   confidence=decision.confidence, model_version=decision.model_version),
                      source="/tests")


def closed(case_id: str, version: int):
    return make_event(CaseClosed(case_id=case_id, tracking_number=f"WZ-{case_id}", version=version,
                                 occurred_at=T0 + timedelta(hours=2), actor="supervisor", reason="已办结"),
                      source="/tests")


class Table(dict):
    """The faust table as the agent uses it: rows written after each batch."""

    async def run(self, worker: RouterWorker, events) -> list:
        results = await worker.handle_batch(events, self.get)
        for event, (state, _) in zip(events, results, strict=True):
            if state is not None:
                self[event.subject] = state
        return [decision for _, decision in results]


async def test_a_batch_decides_like_one_event_at_a_time(worker, engine, mongo_url, run_id):
    events = [submitted("b-1", LAMP, "p1"), submitted("b-2", WATER, "p2"), submitted("b-3", LAMP + "!", "p1", 5),
              submitted("b-4", LAMP, "p3", 6)]
    table = Table()
    decisions = await table.run(worker, events)
    assert [d.outcome.value for d in decisions] == ["assigned", "assigned", "duplicate", "assigned"]
    assert decisions[2].linked_case_id == "b-1"  # a post earlier in the same batch, same poster
    assert decisions[0].department_id == "zhanggong_gov" and decisions[1].department_id == "ent_water"

    client = new_client(mongo_url)
    try:
        one_by_one = Table()
        alone = RouterWorker(engine, RouterStore(client[f"wenzheng_router_single_{run_id}"]), RoutingPolicy())
        singles = [(await one_by_one.run(alone, [event]))[0] for event in events]
        assert [d.model_dump() for d in singles] == [d.model_dump() for d in decisions]
        assert one_by_one == table
    finally:
        await client.drop_database(f"wenzheng_router_single_{run_id}")
        await client.close()

    # a later batch sees the stored posts; a replayed batch is skipped by the per-case versions
    later = await table.run(worker, [submitted("b-5", LAMP + "。", "p1", 30)])
    assert later[0].outcome.value == "duplicate" and later[0].linked_case_id in {"b-1", "b-3"}
    assert await table.run(worker, events) == [None, None, None, None]


async def test_several_events_of_one_case_in_one_batch_apply_in_order(worker):
    table = Table()
    first = (await table.run(worker, [submitted("r-1", LAMP, None)]))[0]
    decisions = await table.run(worker, [assigned("r-1", first, 2), returned("r-1", first.department_id, 3, 1),
                                         submitted("r-2", WATER, None), returned("r-1", "city_urban_management", 4, 2)])
    assert decisions[0] is None and decisions[2].outcome.value == "assigned"
    reroute, triage = decisions[1], decisions[3]
    assert reroute.routing_round == 2 and reroute.tried_departments == ["zhanggong_gov"]
    assert reroute.department_id not in {"zhanggong_gov", None}
    assert triage.routing_round == 3 and triage.outcome.value == "triage"
    assert table["r-1"]["returns"] == 2 and table["r-1"]["last_version"] == 4
    stored = await worker.store.corrections.count_documents({"case_id": "r-1", "kind": "returned"})
    assert stored == 2


async def test_a_closed_case_is_no_longer_a_duplicate_target(worker):
    table = Table()
    await table.run(worker, [submitted("d-1", LAMP, "p9")])
    decisions = await table.run(worker, [closed("d-1", 2), submitted("d-2", LAMP, "p9", 10)])
    assert decisions[1].outcome.value == "assigned"
    posts = await worker.store.recent_posts("p9", T0 + timedelta(minutes=10), timedelta(days=7))
    assert {(p.case_id, p.open) for p in posts} == {("d-1", False), ("d-2", True)}


def test_day_keys_cover_the_window():
    keys = day_keys("p", datetime(2026, 10, 8, 1, tzinfo=UTC), timedelta(days=7))
    assert keys[0] == "p|2026-10-01" and keys[-1] == "p|2026-10-08" and len(keys) == 8


async def test_a_day_document_created_meanwhile_is_updated_not_lost(worker):
    first = CaseRouting(case_id="m-1", text=LAMP, poster_ref="p7", submitted_at=T0)
    second = CaseRouting(case_id="m-2", text=WATER, poster_ref="p7", submitted_at=T0 + timedelta(minutes=1))
    await worker.store.remember_posts([first], existing=set())
    await worker.store.remember_posts([second], existing=set())  # believed new, but m-1's document exists
    await worker.store.remember_posts([second], existing=set())  # and a replay adds nothing
    posts = await worker.store.recent_posts("p7", T0 + timedelta(minutes=5), timedelta(days=7))
    assert sorted(p.case_id for p in posts) == ["m-1", "m-2"]
