"""The use cases over fakes of intake's own store: a post stores its case and its two events, a routing
decision is applied once, and a decision for a version the case has left is ignored."""

from __future__ import annotations

import json
from datetime import UTC, datetime

from services.common.clock import FixedClock
from services.common.events import Channel, RoutingDecision
from services.common.reference import reference
from services.intake.config import IntakeSettings
from services.intake.handlers import IntakeService, NewPost
from tests.intake.unit.fakes import FakeCaseStore

NOW = datetime(2026, 11, 2, 3, tzinfo=UTC)


def service() -> tuple[IntakeService, FakeCaseStore]:
    store = FakeCaseStore()
    settings = IntakeSettings(secret="test-secret", attachments_dir="/nonexistent")
    return IntakeService(store, settings, FixedClock(NOW), reference()), store  # type: ignore[arg-type]


def decision(case: dict, decision_id: str) -> RoutingDecision:
    return RoutingDecision(decision_id=decision_id, case_id=case["_id"], source_event_id="e",
                           source_version=case["routing_source_version"],
                           routing_round=case["routing_round"], outcome="assigned", category="urban_management",
                           category_name="城市管理", department_id="zhanggong_gov", department_name="章贡区人民政府",
                           working_days=5, confidence=0.9, reasons=["关键词: 路灯"], model_version="test",
                           decided_at=NOW)


async def test_a_post_then_its_decision_then_the_same_decision_again() -> None:
    intake, store = service()
    post = NewPost(channel=Channel.WEB, title="路灯坏了", body="小区门口的路灯坏了三天", contact_phone="13800138000")
    accepted = await intake.submit(post, client_ip=None, idempotency_key="k-1")
    [case] = store.cases.values()
    assert accepted.body["tracking_number"] == case["tracking_number"]
    assert [e["topic"] for e in store.events] == ["case_events", "case_contacts"]
    assert "13800138000" not in store.events[0]["value"]  # the public event carries no phone

    assert await intake.apply_decision(decision(case, "d-1")) == "applied"
    assigned = json.loads(store.events[-1]["value"])
    assert assigned["type"].endswith("case.assigned") and assigned["data"]["department_id"] == "zhanggong_gov"
    assert store.events[-1]["v"] == assigned["data"]["version"] == 2
    assert store.cases[case["_id"]]["status"] == "assigned"

    assert await intake.apply_decision(decision(case, "d-1")) == "ignored"  # a redelivery
    assert await intake.apply_decision(decision(case, "d-2")) == "ignored"  # the case is routed already
    assert len(store.events) == 3
    replay = await intake.submit(post, client_ip=None, idempotency_key="k-1")
    assert replay.replayed and len(store.cases) == 1
