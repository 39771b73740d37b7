"""The worker's micro-batches against the real MongoDB-wire server: a batch decides what handling its events
one at a time decides (several events of one case in one batch, duplicates of a post earlier in the same
batch or in an earlier batch, a closed case no longer a duplicate target), and a replayed batch changes
nothing."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from services.common.events import CaseAssigned, CaseClosed, CaseContact, CaseReturned, CaseSubmitted, make_event
from services.common.mongo import new_client
from services.router.agents import RouterWorker
from services.router.policies import CaseRouting, RoutingPolicy
from services.router.store import RouterStore, day_keys

pytestmark = pytest.mark.integration
T0 = datetime(2026, 9, 28, 2, 0, tzinfo=UTC)
LAMP = "水西镇村口的路灯坏了半个月，晚上出行很不安全，请尽快安排维修"
WATER = "小区停水两天了没有任何通知，请水务公司尽快恢复供水"


def submitted(case_id: str, text: str, poster: str | None = None, minutes: int = 0):
    """The public submission (``poster``: the key old events carried on the public topic)."""
    return make_event(CaseSubmitted(case_id=case_id, tracking_number=f"WZ-{case_id}", version=1,
                                    occurred_at=T0 + timedelta(minutes=minutes), actor="citizen", channel="web",
                                    title=text[:20], body=text, poster_ref=poster), source="/tests")


def contact(case_id: str, poster: str | None, minutes: int = 0):
    return make_event(CaseContact(case_id=case_id, tracking_number=f"WZ-{case_id}", phone=None, poster_ref=poster,
                                  recorded_at=T0 + timedelta(minutes=minutes)), source="/tests")


def posted(case_id: str, text: str, poster: str | None, minutes: int = 0, contact_first: bool = False) -> list:
    """What intake publishes for a post: the public submission and, privately, the contact with the key."""
    pair = [submitted(case_id, text, None, minutes), contact(case_id, poster, minutes)]
    return pair[::-1] if contact_first else pair


def made(decisions: list) -> list:
    return [d for d in decisions if d is not None]


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
    events = [*posted("b-1", LAMP, "p1"), *posted("b-2", WATER, "p2", contact_first=True),
              *posted("b-3", LAMP + "!", "p1", 5), *posted("b-4", LAMP, "p3", 6)]
    table = Table()
    decisions = made(await table.run(worker, events))
    assert [d.outcome.value for d in decisions] == ["assigned", "assigned", "duplicate", "assigned"]
    assert decisions[2].linked_case_id == "b-1"  # a post earlier in the same batch, same poster
    assert decisions[0].department_id == "zhanggong_gov" and decisions[1].department_id == "ent_water"

    client = new_client(mongo_url)
    try:
        one_by_one = Table()
        alone = RouterWorker(engine, RouterStore(client[f"wenzheng_router_single_{run_id}"]), RoutingPolicy())
        singles = made([(await one_by_one.run(alone, [event]))[0] for event in events])
        assert [d.model_dump() for d in singles] == [d.model_dump() for d in decisions]
        assert one_by_one == table
    finally:
        await client.drop_database(f"wenzheng_router_single_{run_id}")
        await client.close()

    # a later batch sees the stored posts; a replayed batch is skipped by the per-case versions
    later = made(await table.run(worker, posted("b-5", LAMP + "。", "p1", 30)))
    assert later[0].outcome.value == "duplicate" and later[0].linked_case_id in {"b-1", "b-3"}
    assert await table.run(worker, events) == [None] * len(events)


async def test_a_submission_waits_for_its_private_contact(worker):
    table = Table()
    assert await table.run(worker, [submitted("w-1", LAMP)]) == [None]
    assert table["w-1"]["awaiting_contact"] is True and "poster_ref" not in str(submitted("w-1", LAMP).to_json())
    decision = (await table.run(worker, [contact("w-1", "p5")]))[0]
    assert decision.outcome.value == "assigned" and decision.source_version == 1
    assert decision.source_event_id == table["w-1"]["submission_event_id"]
    assert table["w-1"]["poster_ref"] == "p5" and table["w-1"]["awaiting_contact"] is False
    assert await table.run(worker, [contact("w-1", "p5")]) == [None]  # a replayed contact routes nothing
    # an old event that still carried the key on the public topic routes at once
    assert (await table.run(worker, [submitted("w-2", WATER, "p6")]))[0].outcome.value == "assigned"


async def test_several_events_of_one_case_in_one_batch_apply_in_order(worker):
    table = Table()
    first = made(await table.run(worker, posted("r-1", LAMP, None)))[0]
    decisions = await table.run(worker, [assigned("r-1", first, 2), returned("r-1", first.department_id, 3, 1),
                                         *posted("r-2", WATER, None), returned("r-1", "city_urban_management", 4, 2)])
    assert decisions[0] is None and decisions[2] is None and decisions[3].outcome.value == "assigned"
    reroute, triage = decisions[1], decisions[4]
    assert reroute.routing_round == 2 and reroute.tried_departments == ["zhanggong_gov"]
    assert reroute.department_id not in {"zhanggong_gov", None}
    assert triage.routing_round == 3 and triage.outcome.value == "triage"
    assert table["r-1"]["returns"] == 2 and table["r-1"]["last_version"] == 4
    stored = await worker.store.corrections.count_documents({"case_id": "r-1", "kind": "returned"})
    assert stored == 2


async def test_a_closed_case_is_no_longer_a_duplicate_target(worker):
    table = Table()
    await table.run(worker, posted("d-1", LAMP, "p9"))
    decisions = await table.run(worker, [closed("d-1", 2), *posted("d-2", LAMP, "p9", 10)])
    assert decisions[2].outcome.value == "assigned"
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
