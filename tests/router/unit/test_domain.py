"""Routing policies with a fake engine: triage on low confidence, re-route to an untried unit,
triage after two returns, near-duplicates linked, deadlines in working days."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

from services.common.events import Location, PostKind, RoutingOutcome
from services.common.workdays import default_calendar
from services.router.domain import (
    CaseRouting,
    PosterPosts,
    Proposal,
    RecentPost,
    RoutingPolicy,
    decision_id_for,
    route,
    similarity,
)

T0 = datetime(2026, 9, 30, 2, 0, tzinfo=UTC)  # Wednesday before the National Day holiday (Shanghai 10:00)
UNITS = ["zhanggong_gov", "city_urban_management", "city_housing"]


class FakeEngine:
    def __init__(self, confidence: float = 0.9) -> None:
        self.confidence = confidence

    def propose(self, text, location, exclude):
        unit = next((u for u in UNITS if u not in exclude), None)
        return Proposal(category="urban_management", category_name="城市管理", confidence=self.confidence,
                        unit_id=unit, unit_name=unit, working_days=3, kind=PostKind.COMPLAINT,
                        county=location.county if location else None, township=None,
                        reasons=("关键词: 路灯",), top_features=("路灯",), model_version="fake-1")


def case(**overrides) -> CaseRouting:
    base = CaseRouting(case_id="c1", text="水西镇路灯坏了半个月, 晚上出行很不安全", location=Location(county="章贡区"),
                       poster_ref="p1", submitted_at=T0, last_version=1)
    return replace(base, **overrides)


def decide(c: CaseRouting, engine=None, recent=None, policy=RoutingPolicy()):
    return route(c, engine or FakeEngine(), default_calendar(), policy, source_event_id="e1", source_version=1,
                 occurred_at=T0, recent=recent)


def test_confident_case_is_assigned_with_a_working_day_deadline_across_the_holiday():
    decision = decide(case())
    assert decision.outcome is RoutingOutcome.ASSIGNED
    assert decision.department_id == "zhanggong_gov"
    # 3 working days from Wed 9-30: 10-8, 10-9, Sat 10-10 (adjusted workday) -> due 10-11 00:00 Shanghai
    assert decision.deadline == datetime(2026, 10, 10, 16, 0, tzinfo=UTC)
    assert decision.reasons == ["关键词: 路灯"]
    assert decision.decision_id == decision_id_for("e1")


def test_low_confidence_goes_to_triage():
    decision = decide(case(), engine=FakeEngine(confidence=0.2))
    assert decision.outcome is RoutingOutcome.TRIAGE
    assert decision.department_id is None and "置信度" in decision.reasons[0]


def test_returned_case_goes_to_the_best_unit_not_yet_tried_then_triage_after_two_returns():
    first_return = decide(case(tried=["zhanggong_gov"], returns=1, routing_round=2))
    assert first_return.outcome is RoutingOutcome.ASSIGNED
    assert first_return.department_id == "city_urban_management"
    assert first_return.routing_round == 2 and first_return.tried_departments == ["zhanggong_gov"]
    second_return = decide(case(tried=["zhanggong_gov", "city_urban_management"], returns=2, routing_round=3))
    assert second_return.outcome is RoutingOutcome.TRIAGE
    assert "退单 2 次" in second_return.reasons[0]


def test_no_untried_unit_left_goes_to_triage():
    decision = decide(case(tried=list(UNITS), returns=1, routing_round=2),
                      policy=RoutingPolicy(max_returns=5))
    assert decision.outcome is RoutingOutcome.TRIAGE


def test_near_duplicate_of_an_open_case_from_the_same_poster_is_linked():
    earlier = RecentPost("c0", "水西镇路灯坏了半个月, 晚上出行很不安全!", T0 - timedelta(days=2))
    decision = decide(case(), recent=[earlier])
    assert decision.outcome is RoutingOutcome.DUPLICATE and decision.linked_case_id == "c0"


def test_old_closed_or_different_posts_are_not_duplicates():
    text = "水西镇路灯坏了半个月, 晚上出行很不安全"
    for recent in (
        RecentPost("c0", text, T0 - timedelta(days=8)),
        RecentPost("c0", text, T0 - timedelta(days=1), open=False),
        RecentPost("c0", "孩子入学学位申请咨询", T0 - timedelta(days=1)),
    ):
        assert decide(case(), recent=[recent]).outcome is RoutingOutcome.ASSIGNED


def test_similarity_is_symmetric_and_bounded():
    assert similarity("路灯坏了", "路灯坏了") == 1.0
    assert similarity("abc", "xyz") == 0.0
    assert similarity("路灯坏了很久", "路灯坏了") == similarity("路灯坏了", "路灯坏了很久")


def test_engine_refuses_a_model_whose_labels_are_not_taxonomy_categories():
    import pytest

    from services.router.assignment import Assigner
    from services.router.engine import ModelRoutingEngine

    class ForeignModel:
        labels = ("城乡建设", "交通运输")
        model_version = "foreign"

    with pytest.raises(ValueError, match="not categories"):
        ModelRoutingEngine(ForeignModel(), Assigner.default())


def test_a_poster_row_keeps_a_closed_post_closed_when_the_post_is_replayed():
    posts = PosterPosts()
    window = timedelta(days=7)
    posts.remember(RecentPost("c0", "路灯坏了", T0), window)
    assert posts.close("c0") and not posts.close("c0") and not posts.close("elsewhere")
    posts.remember(RecentPost("c0", "路灯坏了", T0), window)  # at-least-once: the first routing again
    assert [(p.case_id, p.open) for p in posts.posts] == [("c0", False)]
    assert PosterPosts.from_dict(posts.to_dict()) == posts
