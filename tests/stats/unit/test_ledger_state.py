"""Pure rules of what people read: the ledger's status after a return or triage, a unit's county."""

from __future__ import annotations

from services.common import events as ev
from services.common.events import Actor
from services.stats.domain import fold
from tests.stats.scripts import Script, scenario


def test_the_ledger_status_is_the_case_status_after_return_and_triage() -> None:
    moved = scenario()["moved"]
    state = fold(moved.facts()[:3])  # submitted, assigned, returned
    assert state["status"] == "returned" and state["unit"] is None
    triaged = Script("c-t", "WZ2611-TTTT-TTTT").submitted().add(ev.CaseTriaged, Actor.ROUTER, reason="低置信度")
    assert fold(triaged.facts())["status"] == "triage"


def test_unit_counties_come_from_the_shared_reference() -> None:
    from services.stats.metrics import unit_county

    assert unit_county("zhanggong_gov") == "章贡区" and unit_county("city_hrss") == "city"
