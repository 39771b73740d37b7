"""One valid payload of every event type, for round-trip and integration tests."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from services.common import events as ev

T0 = datetime(2026, 9, 28, 2, 0, tzinfo=UTC)
DUE = T0 + timedelta(days=7)


def sample_payloads(case_id: str = "c-1") -> list[ev.Contract]:
    base = dict(case_id=case_id, tracking_number="WZ2609-ABCD-EFGH", occurred_at=T0)
    dept = "zhanggong_gov"
    return [
        ev.CaseSubmitted(**base, version=1, actor="citizen", channel="sms", title="路灯不亮",
                         body="水西镇路灯坏了半个月", location=ev.Location(county="章贡区", township="水西镇"),
                         poster_ref="a1b2"),
        ev.CaseAssigned(**base, version=2, actor="router", decision_id="d1", category="urban_management",
                        category_name="城市管理", department_id=dept, department_name="章贡区人民政府",
                        county="章贡区", township="水西镇", deadline=DUE, working_days=5, confidence=0.93,
                        reasons=["关键词: 路灯", "地点: 章贡区 → 章贡区人民政府"], model_version="m1"),
        ev.CaseTriaged(**base, version=2, actor="router", reason="置信度低", confidence=0.31),
        ev.CaseLinked(**base, version=2, actor="router", decision_id="d2", linked_case_id="c-0",
                      reason="7天内同一来电重复反映"),
        ev.CaseSigned(**base, version=3, actor="department", actor_id="p-0123456789abcdef", department_id=dept),
        ev.CaseReturned(**base, version=3, actor="department", department_id=dept, reason="不属于本单位职责",
                        return_count=1),
        ev.CaseExtensionRequested(**base, version=4, actor="department", department_id=dept,
                                  reason="需要现场勘查", extra_working_days=5),
        ev.CaseExtended(**base, version=5, actor="supervisor", department_id=dept, previous_deadline=DUE,
                        deadline=DUE + timedelta(days=7), extra_working_days=5),
        ev.CaseExtensionDenied(**base, version=5, actor="supervisor", department_id=dept),
        ev.CaseReplied(**base, version=6, actor="department", department_id=dept, reply="已安排维修",
                       deadline=DUE, on_time=True),
        ev.CaseRated(**base, version=7, actor="citizen", department_id=dept, rating="unsatisfied",
                     reason="还是不亮"),
        ev.CaseReopened(**base, version=8, actor="supervisor", department_id=dept, reason="群众不满意",
                        handling_round=2, deadline=DUE + timedelta(days=14)),
        ev.CaseClosed(**base, version=9, actor="supervisor", reason="办结", department_id=dept),
        ev.CaseFlagged(**base, version=10, actor="supervisor", note="典型案例"),
        ev.CaseModerated(**base, version=11, actor="supervisor", title="路灯不亮", body="水西镇路灯坏了半个月",
                         corrected=False),
        ev.CaseNoticeIssued(**base, version=12, actor="supervisor", notice_id="n1", department_id=dept,
                            method="phone", note="请尽快答复", reply_by=(DUE + timedelta(days=1)).date()),
        ev.CaseNoticeAnswered(**base, version=13, actor="department", notice_id="n1", department_id=dept,
                              text="已答复群众", on_time=True),
        ev.CaseCallbackRecorded(**base, version=14, actor="supervisor", callback_id="cb1", department_id=dept,
                                reached=True, note="电话回访"),
        ev.RoutingDecision(decision_id="d1", case_id=case_id, source_event_id="e1", source_version=1,
                           routing_round=1, outcome="assigned", category="urban_management",
                           department_id=dept, deadline=DUE, working_days=5, confidence=0.93,
                           model_version="m1", decided_at=T0),
        ev.Alert(alert_id=f"overdue:{case_id}:1", kind="overdue", case_id=case_id, department_id=dept,
                 deadline=DUE, audience=["department", "supervisors"], message="已超期", raised_at=DUE),
        ev.CaseContact(case_id=case_id, tracking_number="WZ2609-ABCD-EFGH", phone="13800138000",
                       recorded_at=T0),
        ev.Notification(notification_id=f"received:{case_id}", case_id=case_id,
                        tracking_number="WZ2609-ABCD-EFGH", kind="received", channel="sms",
                        to="13800138000", template="received", text="您的诉求已受理", created_at=T0),
        ev.StaffContact(person_id="p-0123456789abcdef", unit_id=dept, roles=["unit_staff"], phone="13800138001",
                        channels=["sms"], quiet_hours=ev.QuietHours(start="22:00", end="07:30"), updated_at=T0),
        ev.dead_letter_for(topic="t", value=b"{}", key=None, reason="bad", error_type="X", service="router"),
    ]
