"""The alert ladder across weekends, the 2026 National Day holiday and adjusted workdays, with a FixedClock."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta, timezone

from services.common.workdays import SHANGHAI, default_calendar
from services.notifier.config import LadderSettings
from services.notifier.domain import (
    CaseState,
    DueIndex,
    apply_event,
    due_alerts,
    next_due,
    working_days_before,
)
from tests.notifier.fakes import CaseScript, make_service

CST = timezone(timedelta(hours=8))
cal = default_calendar()
SETTINGS = LadderSettings(overdue_grace_seconds=0)


def end_of(day: date) -> datetime:
    return datetime.combine(day + timedelta(days=1), datetime.min.time(), tzinfo=SHANGHAI).astimezone(UTC)


def start_of(day: date) -> datetime:
    return datetime.combine(day, datetime.min.time(), tzinfo=SHANGHAI).astimezone(UTC)


def assigned_state(assigned_at: datetime, working_days: int) -> tuple[CaseState, CaseScript]:
    script = CaseScript("c-1")
    state = apply_event(None, script.submitted(assigned_at), 0)
    deadline = cal.add_working_days(assigned_at, working_days)
    state = apply_event(state, script.assigned(assigned_at, deadline), 0)
    assert state is not None
    return state, script


def kinds_at(state: CaseState, moment: datetime, published: set[str] | None = None) -> list[str]:
    return [a.kind.value for a in due_alerts(state, moment, cal, SETTINGS, published or set())]


def test_ladder_across_a_weekend():
    # Thu 2026-09-10 10:00 + 3 working days -> end of Tue 09-15 (Fri, Mon, Tue)
    state, _ = assigned_state(datetime(2026, 9, 10, 10, tzinfo=CST), 3)
    assert state.deadline == end_of(date(2026, 9, 15))
    assert kinds_at(state, end_of(date(2026, 9, 11)) - timedelta(seconds=1)) == []
    assert kinds_at(state, end_of(date(2026, 9, 11))) == ["unsigned"]  # end of Friday, one working day
    # the weekend raises nothing new: the reminder waits for the start of Tuesday, the last working day
    assert kinds_at(state, start_of(date(2026, 9, 15)) - timedelta(seconds=1)) == ["unsigned"]
    assert kinds_at(state, start_of(date(2026, 9, 15))) == ["unsigned", "reminder"]
    assert kinds_at(state, end_of(date(2026, 9, 15))) == ["unsigned", "overdue"]  # reminder is stale now
    # five working days after Tue 09-15: Wed, Thu, Fri, Sun 09-20 (adjusted workday), Mon 09-21
    assert "escalated" not in kinds_at(state, end_of(date(2026, 9, 21)) - timedelta(seconds=1))
    assert "escalated" in kinds_at(state, end_of(date(2026, 9, 21)))


def test_ladder_across_national_day_and_an_adjusted_saturday():
    # Wed 2026-09-30 + 3 working days -> Thu 10-08, Fri 10-09, Sat 10-10 (adjusted workday)
    state, script = assigned_state(datetime(2026, 9, 30, 9, tzinfo=CST), 3)
    assert state.deadline == end_of(date(2026, 10, 10))
    state = apply_event(state, script.signed(datetime(2026, 9, 30, 11, tzinfo=CST)), 0)
    for day in range(1, 8):  # the whole holiday: nothing
        assert kinds_at(state, end_of(date(2026, 10, day))) == []
    assert kinds_at(state, start_of(date(2026, 10, 10))) == ["reminder"]  # on the adjusted Saturday itself
    assert kinds_at(state, end_of(date(2026, 10, 10))) == ["overdue"]
    assert "escalated" not in kinds_at(state, end_of(date(2026, 10, 16)) - timedelta(seconds=1))
    assert "escalated" in kinds_at(state, end_of(date(2026, 10, 16)))  # Mon 12 .. Fri 16


def test_unsigned_waits_for_the_holiday_to_end():
    state, _ = assigned_state(datetime(2026, 9, 30, 9, tzinfo=CST), 5)
    assert kinds_at(state, end_of(date(2026, 10, 7))) == []
    assert kinds_at(state, end_of(date(2026, 10, 8))) == ["unsigned"]


def test_adjusted_sunday_counts_as_a_working_day():
    # assigned on Saturday 09-19: the first working day is Sunday 09-20 (adjusted)
    state, _ = assigned_state(datetime(2026, 9, 19, 10, tzinfo=CST), 1)
    assert state.deadline == end_of(date(2026, 9, 20))
    assert kinds_at(state, start_of(date(2026, 9, 20))) == ["reminder"]
    assert kinds_at(state, end_of(date(2026, 9, 20))) == ["unsigned", "overdue"]
    # two working days before the end of Mon 09-21 is the start of Sun 09-20, not Friday
    assert working_days_before(end_of(date(2026, 9, 21)), 2, cal) == start_of(date(2026, 9, 20))


def test_alert_ids_are_stable_and_published_ones_are_not_repeated():
    state, _ = assigned_state(datetime(2026, 9, 10, 10, tzinfo=CST), 3)
    late = end_of(date(2026, 9, 16))
    first = due_alerts(state, late, cal, SETTINGS)
    again = due_alerts(CaseState.from_doc(state.to_doc()), late + timedelta(hours=1), cal, SETTINGS)
    assert [a.alert_id for a in first] == [a.alert_id for a in again]
    assert first[1].alert_id == f"overdue:c-1:1:{state.deadline.isoformat()}"
    assert due_alerts(state, late, cal, SETTINGS, {a.alert_id for a in first}) == []
    assert next_due(state, late, cal, SETTINGS, {a.alert_id for a in first}) == end_of(date(2026, 9, 21))


def test_due_index_pops_only_due_cases_in_order():
    index = DueIndex()
    t0 = datetime(2026, 9, 7, tzinfo=UTC)
    for i in range(10):
        index.schedule(f"c{i}", t0 + timedelta(hours=i))
    index.schedule("c3", t0 + timedelta(hours=20))  # moved later: the old entry is ignored
    index.remove("c4")
    assert list(index.pop_due(t0 + timedelta(hours=5))) == ["c0", "c1", "c2", "c5"]
    assert len(index) == 5


async def test_extension_moves_the_ladder_and_reply_cancels_it():
    start = datetime(2026, 9, 7, 9, tzinfo=CST)
    service, clock, _, publisher = make_service(start)
    script = CaseScript("c-ext")
    deadline = cal.add_working_days(start, 3)  # end of Thu 09-10
    await service.apply_batch([(script.submitted(start), 0), (script.assigned(start, deadline), 0),
                               (script.signed(start), 0)])
    clock.set(start_of(date(2026, 9, 10)))
    await service.scan()
    assert publisher.kinds() == ["reminder"]
    new_deadline = end_of(date(2026, 9, 15))
    await service.apply_batch([(script.extended(clock.now(), deadline, new_deadline), 0)])
    clock.set(end_of(date(2026, 9, 11)))  # past the old deadline: no overdue
    await service.scan()
    assert publisher.kinds() == ["reminder"]
    clock.set(start_of(date(2026, 9, 15)))
    await service.scan()
    assert publisher.kinds() == ["reminder", "reminder"]  # the new deadline's reminder, a new id
    assert publisher.alerts_sent[0][0].alert_id != publisher.alerts_sent[1][0].alert_id
    await service.apply_batch([(script.replied(clock.now(), new_deadline), 0)])
    clock.set(end_of(date(2026, 9, 30)))
    await service.scan()
    assert publisher.kinds() == ["reminder", "reminder"]
    assert len(service.index) == 0


async def test_closure_cancels_and_reopen_starts_a_new_round():
    start = datetime(2026, 9, 7, 9, tzinfo=CST)
    service, clock, _, publisher = make_service(start)
    script = CaseScript("c-re")
    deadline = cal.add_working_days(start, 3)
    await service.apply_batch([(script.assigned(start, deadline), 1), (script.signed(start), 1)])
    clock.set(end_of(date(2026, 9, 10)))
    await service.scan()
    await service.scan()  # a second scan at the same time repeats nothing
    assert publisher.kinds() == ["overdue"]
    await service.apply_batch([(script.replied(clock.now(), deadline), 1)])
    second = cal.add_working_days(clock.now(), 5)
    await service.apply_batch([(script.reopened(clock.now(), second), 1)])
    clock.set(second)
    await service.scan()
    assert publisher.kinds() == ["overdue", "overdue"]
    assert publisher.alerts_sent[1][0].alert_id.startswith("overdue:c-re:2:")
    assert all(partition == 1 and key == "c-re" for _, partition, key in publisher.alerts_sent)
    await service.apply_batch([(script.closed(clock.now()), 1)])
    clock.set(clock.now() + timedelta(days=30))
    await service.scan()
    assert publisher.kinds() == ["overdue", "overdue"]
    assert "c-re" not in service.states


async def test_a_partition_not_caught_up_raises_nothing_yet():
    start = datetime(2026, 9, 7, 9, tzinfo=CST)
    service, clock, _, publisher = make_service(start)
    service.caught_up.discard(2)
    script = CaseScript("c-lag")
    deadline = cal.add_working_days(start, 1)
    await service.apply_batch([(script.assigned(start, deadline), 2), (script.signed(start), 2)])
    clock.set(deadline + timedelta(hours=1))
    await service.scan()
    assert publisher.kinds() == []
    service.caught_up.add(2)
    await service.scan()
    assert publisher.kinds() == ["overdue"]


async def test_hotspot_on_a_burst_once():
    start = datetime(2026, 9, 7, 9, tzinfo=CST)
    service, clock, _, publisher = make_service(start)
    far = cal.add_working_days(start, 20)
    for i in range(4):
        await service.apply_batch([(CaseScript(f"h{i}").assigned(start + timedelta(hours=i), far), i % 3)])
    await service.apply_batch([(CaseScript("other").assigned(start, far, township="沙石镇"), 0)])
    clock.set(start + timedelta(hours=5))
    assert await service.scan_hotspots() == 0
    await service.apply_batch([(CaseScript("h4").assigned(start + timedelta(hours=5), far), 1)])
    assert await service.scan_hotspots() == 1
    alert = publisher.alerts_sent[-1][0]
    assert alert.kind.value == "hotspot" and sorted(alert.case_ids) == ["h0", "h1", "h2", "h3", "h4"]
    assert alert.audience == ["supervisors"] and publisher.alerts_sent[-1][1] == 0
    clock.set(start + timedelta(days=1))
    await service.apply_batch([(CaseScript("h5").assigned(clock.now(), far), 2)])
    assert await service.scan_hotspots() == 0  # the same place and category: not again within the window
    # a burst of old posts does not count: outside the 7-day window
    service2, _clock2, _, _publisher2 = make_service(start)
    for i in range(5):
        await service2.apply_batch([(CaseScript(f"o{i}").assigned(start - timedelta(days=8 - i), far), 0)])
    assert await service2.scan_hotspots() == 0


async def test_replied_posts_leave_the_hotspot_count():
    start = datetime(2026, 9, 7, 9, tzinfo=CST)
    service, _, _, _publisher = make_service(start)
    far = cal.add_working_days(start, 20)
    scripts = [CaseScript(f"r{i}") for i in range(5)]
    for s in scripts:
        await service.apply_batch([(s.assigned(start, far), 0)])
    await service.apply_batch([(scripts[0].replied(start, far), 0)])
    assert await service.scan_hotspots() == 0


async def test_an_alert_the_broker_did_not_ack_is_retried_and_acked_ones_are_not():
    start = datetime(2026, 9, 7, 9, tzinfo=CST)
    service, clock, _, publisher = make_service(start)
    deadline = cal.add_working_days(start, 1)
    for name in ("p1", "p2"):
        s = CaseScript(name)
        await service.apply_batch([(s.assigned(start, deadline), 0), (s.signed(start), 0)])
    sent = publisher.alerts
    failures = iter([True])

    async def first_send_fails(items):
        await sent(items)
        return [not next(failures, False) for _ in items]

    publisher.alerts = first_send_fails
    clock.set(deadline + timedelta(minutes=1))
    assert await service.scan() == 1
    assert await service.scan() == 1  # the unacked one again, not the acked one
    ids = [a.alert_id for a, _, _ in publisher.alerts_sent]
    assert len(ids) == 3 and ids[0] == ids[2] and ids[1] != ids[0]
    assert await service.scan() == 0


async def test_a_backlog_is_scanned_in_bounded_steps():
    start = datetime(2026, 9, 7, 9, tzinfo=CST)
    service, clock, _, publisher = make_service(start)
    service.settings = service.settings.model_copy(update={"scan_max_cases": 4})
    deadline = cal.add_working_days(start, 1)
    for i in range(10):
        s = CaseScript(f"b{i}")
        await service.apply_batch([(s.assigned(start, deadline), i % 3), (s.signed(start), i % 3)])
    clock.set(deadline + timedelta(minutes=1))
    steps = []
    while True:
        steps.append(await service.scan())
        if not service.backlog:
            break
    assert steps[:3] == [4, 4, 2] and len(publisher.alerts_sent) == 10
