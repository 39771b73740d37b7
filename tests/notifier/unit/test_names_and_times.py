"""What citizens and supervisors read from the notifier (issue #15): Chinese names from the shared reference
data, never an id, and deadlines as Shanghai days."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

from services.common import events as ev
from services.notifier.config import LadderSettings
from services.notifier.domain import HotspotKey, apply_event, hotspot_alert, plan_notification, render

T0 = datetime(2026, 12, 4, 8, 0, tzinfo=UTC)
DUE = datetime(2026, 12, 10, 16, 0, tzinfo=UTC)  # 24:00 on 2026-12-10 in Shanghai


def test_the_assigned_sms_names_the_unit_in_chinese_with_the_shanghai_deadline() -> None:
    submitted = ev.CaseSubmitted(case_id="c-n", tracking_number="WZ2612-NAME-TEST", version=1, occurred_at=T0,
                                 actor="citizen", channel="sms", title="t", body="b")
    state = apply_event(None, submitted, 0)
    assigned = ev.CaseAssigned(case_id="c-n", tracking_number="WZ2612-NAME-TEST", version=2, occurred_at=T0,
                               actor="router", decision_id="d", category="utilities_telecom",
                               category_name="utilities_telecom", department_id="ent_water",
                               department_name="ent_water", deadline=DUE, working_days=2, confidence=0.9,
                               model_version="m")
    state = apply_event(state, assigned, 0)
    planned = plan_notification(state, assigned)
    text = render(planned.kind, planned.variables)
    assert "赣州市水务集团" in text and "ent_water" not in text
    assert "2026年12月10日" in text  # the last day in time, in Shanghai; not 12月11日, not a UTC date


def test_a_hotspot_names_its_category_in_chinese() -> None:
    posts = [(f"c-{i}", T0 - timedelta(hours=i)) for i in range(6)]
    alert = hotspot_alert(HotspotKey("urban_management", "章贡区", "水西镇"), posts, T0, LadderSettings())
    assert alert is not None and "城市管理类诉求" in alert.message and "urban_management" not in alert.message
    assert re.search(r"[\u4e00-\u9fff]", alert.message)
