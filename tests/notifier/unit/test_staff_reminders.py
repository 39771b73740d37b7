"""Staff reminders reach people: the notifier joins the staff-contacts topic by unit and turns its case alerts
into one notification per person and channel, held through the person's quiet hours (Asia/Shanghai)."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

from services.common import events as ev
from services.common.workdays import default_calendar
from services.notifier.domain import StaffDirectory, staff_notices, supervision_notices
from tests.notifier.fakes import DEPT, CaseScript, make_service
from tests.notifier.fakes import staff_contact as contact

T0 = datetime(2026, 9, 7, 1, 0, tzinfo=UTC)  # Monday 09:00 in Shanghai
QUIET = ev.QuietHours(start="22:00", end="07:30")


def staff() -> list[ev.StaffContact]:
    return [contact("p-staff", ["unit_staff"]), contact("p-lead", ["unit_lead"], channels=("sms", "email")),
            contact("p-elsewhere", ["unit_staff"], unit="nankang_gov"),
            contact("p-office", ["supervisor"], unit=None, channels=("email",)),
            contact("p-gone", ["unit_staff"], active=False), contact("p-night", ["unit_staff"], quiet=QUIET)]


def test_an_alert_goes_to_its_units_people_and_supervisors_ones_to_the_office():
    directory = StaffDirectory()
    for c in staff():
        directory.apply(c)
    unit_alert = ev.Alert(alert_id="unsigned:c-1:1", kind="unsigned", case_id="c-1", tracking_number="WZ",
                          department_id=DEPT, audience=["department"], message="请签收", raised_at=T0)
    notices = staff_notices(unit_alert, directory, T0)
    assert sorted((n.person_id, n.channel.value) for n in notices) == [
        ("p-lead", "email"), ("p-lead", "sms"), ("p-night", "sms"), ("p-staff", "sms")]
    assert all(n.not_before is None for n in notices)  # 09:00 is nobody's quiet time
    escalated = unit_alert.model_copy(update={"alert_id": "escalated:c-1:1", "kind": "escalated",
                                              "audience": ["department", "supervisors"]})
    assert ("p-office", "email") in {(n.person_id, n.channel.value) for n in staff_notices(escalated, directory, T0)}
    hotspot = unit_alert.model_copy(update={"kind": "hotspot"})
    assert staff_notices(hotspot, directory, T0) == []


def test_a_newer_record_replaces_the_older_and_an_older_one_is_ignored():
    directory = StaffDirectory()
    directory.apply(contact("p-1", ["unit_staff"], at=T0))
    directory.apply(contact("p-1", ["unit_staff"], active=False, at=T0 + timedelta(minutes=1)))
    directory.apply(contact("p-1", ["unit_staff"], at=T0 - timedelta(minutes=1)))  # a late duplicate
    assert directory.people["p-1"].active is False


async def test_quiet_hours_hold_a_reminder_until_the_morning():
    night = datetime(2026, 9, 7, 15, 0, tzinfo=UTC)  # Monday 23:00 in Shanghai
    service, clock, store, publisher = make_service(night)
    for c in staff():
        service.staff.apply(c)
    script = CaseScript("c-9")
    deadline = default_calendar().add_working_days(night, 1)
    await service.apply_batch([(script.submitted(night), 0), (script.assigned(night, deadline), 0)])
    clock.set(deadline + timedelta(minutes=1))  # unsigned and overdue are due now (end of Tue = 00:00 Wed)
    await service.scan()
    sent = [n for n in publisher.notifications_sent if n.kind == "staff_alert"]
    assert {n.person_id for n in sent} == {"p-staff", "p-lead", "p-office"}  # both alerts also go to the office
    assert all(n.text.startswith("【问政提醒】") and "WZ2609-TEST-0001" in n.text for n in sent)
    held = [d for d in store.notifications.values() if d["status"] == "held"]
    assert {d["person_id"] for d in held} == {"p-night"}
    assert {d["not_before"] for d in held} == {datetime(2026, 9, 8, 23, 30, tzinfo=UTC)}  # Wed 07:30 Shanghai
    await service.sweep()
    assert not [n for n in publisher.notifications_sent if n.person_id == "p-night"]
    clock.set(datetime(2026, 9, 8, 23, 31, tzinfo=UTC))
    await service.sweep()
    night_sent = [n for n in publisher.notifications_sent if n.person_id == "p-night"]
    assert len(night_sent) == len(held) and {n.to for n in night_sent} == {"13900000000"}
    await service.scan()
    await service.sweep()  # nothing twice
    ids = [n.notification_id for n in publisher.notifications_sent]
    assert len(ids) == len(set(ids))


def test_a_supervision_notice_reads_in_chinese_and_goes_to_the_units_staff_and_lead():
    directory = StaffDirectory()
    for c in staff():
        directory.apply(c)
    event = CaseScript("c-1").notice_issued(T0, "n-1", date(2026, 12, 5), method="phone")
    notices = supervision_notices(event, directory, T0)
    assert sorted((n.person_id, n.channel.value) for n in notices) == [
        ("p-lead", "email"), ("p-lead", "sms"), ("p-night", "sms"), ("p-staff", "sms")]  # not the office
    assert {n.text for n in notices} == {
        "【问政督办】章贡区人民政府：市督办办公室对工单WZ2609-TEST-0001电话督办，请于2026年12月5日前答复。"}
    assert len({n.notification_id for n in notices}) == len(notices)
    assert notices == supervision_notices(event, directory, T0)  # stable ids: a replay adds nothing
    names = {m: supervision_notices(event.model_copy(update={"method": m}), directory, T0)[0].text
             for m in ("phone", "on_site", "meeting")}
    assert [t.split("WZ2609-TEST-0001")[1][:4] for t in names.values()] == ["电话督办", "现场督办", "会议督办"]


async def test_a_supervision_notice_is_stored_once_per_person_and_channel_even_when_replayed():
    service, _, _, publisher = make_service(T0)
    for c in staff():
        service.staff.apply(c)
    script = CaseScript("c-7")
    deadline = default_calendar().add_working_days(T0, 5)
    notice = script.notice_issued(T0, "n-7", date(2026, 9, 10))
    events = [(script.submitted(T0), 0), (script.assigned(T0, deadline), 0), (notice, 0)]
    await service.apply_batch(events)
    await service.apply_batch(events)  # a replay after a crash
    service.states.clear()  # ... even by a replica that lost its in-memory state
    await service.apply_batch([(notice, 0)])
    sent = [n for n in publisher.notifications_sent if n.notification_id.startswith("staff:notice:n-7:")]
    assert sorted((n.person_id, n.channel) for n in sent) == [  # each exactly once
        ("p-lead", "email"), ("p-lead", "sms"), ("p-night", "sms"), ("p-staff", "sms")]
    assert all(n.kind == "staff_alert" and n.case_id == "c-7" and "2026年9月10日" in n.text for n in sent)
    assert not any("13800138000" in n.text or "现场核实" in n.text for n in sent)  # never the note or the citizen
