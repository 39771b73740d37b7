"""Scripted cases for the stats tests: the events of one case, numbered as intake numbers them, and a small
scenario with a flagged, a merged, an invalid, a waiting and a returned-and-moved case."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from services.common import events as ev
from services.common.events import Actor, make_event
from services.stats.domain import fact_from_event

T0 = datetime(2026, 11, 2, 2, 0, tzinfo=UTC)  # 10:00 in Shanghai, a Monday
DUE = datetime(2026, 11, 6, 16, 0, tzinfo=UTC)  # 24:00 Shanghai, 2026-11-06


class Script:
    """The events of one case, numbered like intake numbers them."""

    def __init__(self, case_id: str, tracking: str) -> None:
        self.case_id, self.tracking, self.version, self.at = case_id, tracking, 0, T0
        self.events: list[ev.Event] = []

    def add(self, model: type[ev.CaseEvent], actor: Actor, **fields: Any) -> Script:
        self.version += 1
        self.at += timedelta(hours=1)
        payload = model(case_id=self.case_id, tracking_number=self.tracking, version=self.version,
                        occurred_at=self.at, actor=actor, **fields)
        self.events.append(make_event(payload, source="urn:test", time=self.at))
        return self

    def submitted(self, county: str = "章贡区") -> Script:
        return self.add(ev.CaseSubmitted, Actor.CITIZEN, channel="web", title="t", body="b",
                        location=ev.Location(county=county))

    def assigned(self, unit: str, category: str, county: str = "章贡区") -> Script:
        return self.add(ev.CaseAssigned, Actor.ROUTER, decision_id=f"d{self.version}", category=category,
                        category_name=category, department_id=unit, department_name=unit, county=county,
                        deadline=DUE, working_days=5, confidence=0.9, model_version="m")

    def replied(self, unit: str) -> Script:
        return self.add(ev.CaseReplied, Actor.DEPARTMENT, department_id=unit, reply="已处理", deadline=DUE,
                        on_time=True)

    def facts(self) -> list[dict[str, Any]]:
        return [f for e in self.events if (f := fact_from_event(e)) is not None]


def scenario() -> dict[str, Script]:
    a = (Script("c-a", "WZ2611-AAAA-AAAA").submitted().assigned("zhanggong_gov", "urban_management")
         .add(ev.CaseSigned, Actor.DEPARTMENT, department_id="zhanggong_gov").replied("zhanggong_gov")
         .add(ev.CaseRated, Actor.CITIZEN, department_id="zhanggong_gov", rating="satisfied")
         .add(ev.CaseClosed, Actor.SYSTEM, reason="群众满意", department_id="zhanggong_gov", automatic=True)
         .add(ev.CaseFlagged, Actor.SUPERVISOR, note="典型"))
    merged = (Script("c-b", "WZ2611-BBBB-BBBB").submitted()
              .add(ev.CaseLinked, Actor.ROUTER, decision_id="d-link", linked_case_id="c-a", reason="重复"))
    invalid = (Script("c-c", "WZ2611-CCCC-CCCC").submitted()
               .add(ev.CaseClosed, Actor.SUPERVISOR, reason="广告", disposition="invalid", invalid_reason="spam"))
    waiting = Script("c-d", "WZ2611-DDDD-DDDD").submitted()
    moved = (Script("c-e", "WZ2611-EEEE-EEEE").submitted().assigned("zhanggong_gov", "labor_social_security")
             .add(ev.CaseReturned, Actor.DEPARTMENT, department_id="zhanggong_gov", reason="非本单位", return_count=1)
             .assigned("city_hrss", "labor_social_security").replied("city_hrss"))
    return {"flagged": a, "merged": merged, "invalid": invalid, "waiting": waiting, "moved": moved}
