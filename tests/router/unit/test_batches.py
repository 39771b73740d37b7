"""The worker's micro-batches, through both steps (the case's partition, then the poster's) with the tables
in memory: a batch decides what handling its events one at a time decides (several events of one case in one
batch, duplicates of a post earlier in the same batch or in an earlier batch, a closed case no longer a
duplicate target), a replayed batch changes nothing, and an erased contact drops the poster's posts."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from services.common.events import CaseAssigned, CaseClosed, CaseContact, CaseReturned, CaseSubmitted, make_event
from services.router.domain import ContactErased, PosterChange, PosterPosts, RecentPost, RoutingPolicy
from services.router.handlers import RouterWorker

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
    """The agents' tables as they use them, in memory: the case rows (the dict itself), the poster rows, and
    the poster topic between the two steps. ``run`` handles a batch as the agents do (the case step, then
    the poster messages it sent, as one batch of the poster step) and returns, per event, the decision it
    led to (None: none)."""

    def __init__(self) -> None:
        super().__init__()
        self.posters: dict[str, dict] = {}
        self.corrections: list = []

    def __eq__(self, other: object) -> bool:
        return (isinstance(other, Table) and dict.__eq__(self, other) and self.posters == other.posters
                and self.corrections == other.corrections)

    async def run(self, worker: RouterWorker, events) -> list:
        steps = worker.handle_cases(events, self.get)
        decisions = [step.decision for step in steps]
        for event, step in zip(events, steps, strict=True):
            if step.state is not None:
                self[event.subject] = step.state
            if step.correction is not None:
                self.corrections.append(step.correction)
        sent = [(index, step.poster) for index, step in enumerate(steps) if step.poster is not None]
        batch = worker.handle_posters([message for _, message in sent], self.posters.get)
        routed = [index for index, message in sent if message.change is PosterChange.ROUTE]
        for index, decision in zip(routed, batch.decisions, strict=True):
            decisions[index] = decision
        for poster, row in batch.posters.items():
            if row is None:
                self.posters.pop(poster, None)
            else:
                self.posters[poster] = row
        return decisions


async def test_a_batch_decides_like_one_event_at_a_time(worker, engine):
    events = [*posted("b-1", LAMP, "p1"), *posted("b-2", WATER, "p2", contact_first=True),
              *posted("b-3", LAMP + "!", "p1", 5), *posted("b-4", LAMP, "p3", 6)]
    table = Table()
    decisions = made(await table.run(worker, events))
    assert [d.outcome.value for d in decisions] == ["assigned", "assigned", "duplicate", "assigned"]
    assert decisions[2].linked_case_id == "b-1"  # a post earlier in the same batch, same poster
    assert decisions[0].department_id == "zhanggong_gov" and decisions[1].department_id == "ent_water"

    one_by_one = Table()
    alone = RouterWorker(engine, RoutingPolicy())
    singles = made([(await one_by_one.run(alone, [event]))[0] for event in events])
    assert [d.model_dump() for d in singles] == [d.model_dump() for d in decisions]
    assert one_by_one == table

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
    stored = [c for c in table.corrections if c.case_id == "r-1" and c.kind == "returned"]
    assert len(stored) == 2


async def test_a_closed_case_is_no_longer_a_duplicate_target(worker):
    table = Table()
    await table.run(worker, posted("d-1", LAMP, "p9"))
    decisions = await table.run(worker, [closed("d-1", 2), *posted("d-2", LAMP, "p9", 10)])
    assert decisions[2].outcome.value == "assigned"
    posts = PosterPosts.from_dict(table.posters["p9"]).posts
    assert {(p.case_id, p.open) for p in posts} == {("d-1", False), ("d-2", True)}


def test_a_poster_keeps_the_posts_of_the_window():
    """(Was: the day documents of MongoDB cover the window.) A post is kept until a newer post of the poster is
    more than the window after it."""
    posts = PosterPosts()
    window = timedelta(days=7)
    for day in (1, 3, 8, 9):
        posts.remember(RecentPost(f"k-{day}", LAMP, datetime(2026, 10, day, 1, tzinfo=UTC)), window)
    assert [p.case_id for p in posts.posts] == ["k-3", "k-8", "k-9"]


async def test_a_replayed_post_is_kept_once(worker):
    """(Was: a day document created meanwhile is updated, not lost, and a replay adds nothing.) Two posts of a
    poster in separate batches are both kept; the second replayed (its submission handled again on the
    poster's partition) adds nothing."""
    table = Table()
    await table.run(worker, posted("m-1", LAMP, "p7"))
    second = posted("m-2", WATER, "p7", 1)
    await table.run(worker, second)
    steps = worker.handle_cases(second, {}.get)  # as if the case's partition replayed before its commit
    replay = worker.handle_posters([s.poster for s in steps if s.poster is not None], table.posters.get)
    assert sorted(p.case_id for p in PosterPosts.from_dict(replay.posters["p7"]).posts) == ["m-1", "m-2"]
    assert replay.decisions[0].decision_id == worker.handle_posters(
        [s.poster for s in steps if s.poster is not None], table.posters.get).decisions[0].decision_id
    posts = PosterPosts.from_dict(table.posters["p7"]).posts
    assert sorted(p.case_id for p in posts) == ["m-1", "m-2"]


async def test_an_erased_contact_drops_the_posters_posts(worker):
    """The contacts topic's tombstone (the contact erased after its retention period): the case forgets the
    poster's key and the poster's row is dropped, so nothing links the poster's posts any more."""
    table = Table()
    await table.run(worker, [*posted("e-1", LAMP, "p8"), *posted("e-2", WATER, "p8", 1)])
    assert "p8" in table.posters
    assert await table.run(worker, [ContactErased("e-1")]) == [None]
    assert table["e-1"]["poster_ref"] is None and table["e-2"]["poster_ref"] == "p8"
    assert "p8" not in table.posters
    # a later post of the same poster is not linked to the erased ones
    again = made(await table.run(worker, posted("e-3", LAMP, "p8", 2)))
    assert again[0].outcome.value == "assigned"
    assert await table.run(worker, [ContactErased("unknown-case")]) == [None]
