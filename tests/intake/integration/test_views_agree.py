"""Views that agree with the events (issue #15): after every step of a random command sequence, the public view,
the unit's view and the stats ledger (a fold of the published events) agree on status, unit and category, and
a category's code and name always match the reference data.

The property runs on the pure layers (intake's state machine and views, stats' fold of the events' facts);
one fixed sequence also runs through the real intake, Kafka and the stats fold."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from services.common import events as ev
from services.common.events import CaseStatus, Rating, RoutingDecision, make_event, parse_event
from services.common.reference import reference
from services.intake import domain
from services.intake.handlers import IntakeService, internal_case_view, public_case_view
from services.intake.store import case_to_fields
from services.stats.domain import fact_from_event, fold
from tests.intake.conftest import Intake, read_topic

T0 = datetime(2026, 11, 2, 1, 0, tzinfo=UTC)
UNITS = ["zhanggong_gov", "city_hrss", "ent_water", "city_health"]
CATEGORIES = ["urban_management", "labor_social_security", "utilities_telecom", "health"]
NAMER = SimpleNamespace(reference=reference())


def _decision(case: domain.Case, outcome: str, unit: str | None, category: str | None) -> RoutingDecision:
    decision = RoutingDecision(
        decision_id=f"d-{uuid.uuid4().hex[:10]}", case_id=case.case_id, source_event_id="e",
        source_version=case.routing_source_version, routing_round=case.routing_round, outcome=outcome,
        category=category, category_name=category,  # the router's names are not trusted: intake names them
        department_id=unit if outcome == "assigned" else None, department_name=unit,
        linked_case_id="c-primary" if outcome == "duplicate" else None, working_days=5, confidence=0.9,
        model_version="m", decided_at=T0)
    return IntakeService.named(NAMER, decision)


def _command(step: tuple, case: domain.Case) -> domain.Command:
    name, unit, category, extra = step
    if name in ("assigned", "triage", "duplicate"):
        return domain.ApplyDecision(_decision(case, name, unit, category if name != "triage" or extra else None))
    if name == "reassign":
        return IntakeService.reassign_command(NAMER, category, unit, "人工分派")
    return {
        "sign": domain.Sign(), "return": domain.Return("不属于本单位"), "reply": domain.Reply("已处理"),
        "rate": domain.Rate(Rating.UNSATISFIED if extra else Rating.SATISFIED),
        "reopen": domain.Reopen("群众不满意"), "flag": domain.Flag("典型"),
        "close": domain.Close("办结", disposition=ev.Disposition.INVALID if extra else ev.Disposition.RESOLVED,
                              invalid_reason=ev.InvalidReason.SPAM if extra else None),
        "extension": domain.RequestExtension("需勘查", 3), "approve": domain.ApproveExtension(),
    }[name]


steps = st.lists(st.tuples(
    st.sampled_from(["assigned", "triage", "duplicate", "reassign", "sign", "return", "reply", "rate", "reopen",
                     "flag", "close", "extension", "approve"]),
    st.sampled_from(UNITS), st.sampled_from(CATEGORIES), st.booleans()), min_size=1, max_size=25)


def _doc(case: domain.Case, timeline: list[dict[str, Any]]) -> dict[str, Any]:
    return {"_id": case.case_id, **case_to_fields(case), "title": "t", "channel": "web", "replies": [],
            "timeline": timeline}


def assert_views_agree(public: dict[str, Any], unit_view: dict[str, Any], ledger: dict[str, Any]) -> None:
    for view in (public, unit_view):
        assert view["status"] == ledger["status"]
        assert (view["department"] or {}).get("id") == ledger["unit"]
        assert (view["category"] or {}).get("code") == ledger["category"]
        if view["category"]:
            assert view["category"]["name"] == reference().category_name(view["category"]["code"])
        if view["department"]:
            assert view["department"]["name"] == reference().unit_name(view["department"]["id"])


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(steps)
def test_public_unit_and_ledger_views_agree_after_every_step(sequence: list[tuple]) -> None:
    now = T0
    case = domain.Case(case_id="c-prop", tracking_number="WZ2611-PROP-ERTY", version=1,
                       status=CaseStatus.SUBMITTED, created_at=now, county="章贡区")
    submitted = ev.CaseSubmitted(case_id=case.case_id, tracking_number=case.tracking_number, version=1,
                                 occurred_at=now, actor="citizen", channel="web", title="t", body="b",
                                 location=ev.Location(county="章贡区"))
    facts = [fact_from_event(make_event(submitted, source="urn:test"))]
    timeline: list[dict[str, Any]] = []
    for step in sequence:
        now += timedelta(minutes=30)
        try:
            outcome = domain.decide(case, _command(step, case), now)
        except (domain.DomainError, domain.DecisionIgnored):
            continue
        case = outcome.case
        facts += [fact_from_event(make_event(e, source="urn:test")) for e in outcome.events]
        doc = _doc(case, timeline)
        assert_views_agree(public_case_view(doc, now), internal_case_view(doc, now), fold(facts))


async def test_the_real_pipeline_agrees_after_triage_return_and_reassignment(intake: Intake) -> None:
    """Through the real intake and Kafka: the events on the public topic, folded as stats folds them, give the
    same status, unit and category as both views after each step."""
    accepted = await intake.post()
    tn = accepted["tracking_number"]
    case_id = (await intake.case_doc(tn))["_id"]

    async def check(expected_version: int) -> None:
        messages = await read_topic(intake.bootstrap, intake.names.case_events, until=lambda ms: any(
            case_id in m["value"] and f'"version":{expected_version}' in m["value"].replace(" ", "") for m in ms))
        facts = [fact_from_event(parse_event(m["value"])) for m in messages if m["key"] == case_id]
        public = (await intake.client.get(f"/v1/posts/{tn}")).json()
        staff = (await intake.client.get(f"/v1/cases/{case_id}", headers=intake.supervisor)).json()
        assert_views_agree(public, staff, fold([f for f in facts if f]))

    await intake.decide(tn, department_id="zhanggong_gov", category="labor_social_security",
                        category_name="labor_social_security")
    await intake.wait_status(tn, "assigned")
    await check(2)
    await intake.client.post(f"/v1/cases/{case_id}/return", headers=intake.dept("zhanggong_gov"),
                             json={"reason": "不属于本单位"})
    await check(3)
    doc = await intake.case_doc(tn)
    await intake.decide(tn, outcome="triage", category="health", category_name="x",
                        routing_round=doc["routing_round"], source_version=doc["routing_source_version"])
    await intake.wait_status(tn, "triage")
    await check(4)
    r = await intake.client.post(f"/v1/cases/{case_id}/reassign", headers=intake.supervisor,
                                 json={"category": "labor_social_security", "department_id": "city_hrss",
                                       "reason": "人工分派"})
    assert r.status_code == 200, r.text
    await check(5)
    await intake.client.post(f"/v1/cases/{case_id}/flag", headers=intake.supervisor, json={})
    await check(6)
