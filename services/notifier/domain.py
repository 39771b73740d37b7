"""The notifier's pure domain: a case's deadline state, its alert ladder, hotspots and citizen notifications.

No I/O here: every function takes the time (``now``) and the working-day calendar as arguments, so the
ladder can be tested across weekends and holidays with a FixedClock.
"""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field
from datetime import date, datetime, time, timedelta
from functools import lru_cache
from pathlib import Path
from typing import Any

from services.common.events import (
    Alert,
    AlertKind,
    Audience,
    CaseAssigned,
    CaseClosed,
    CaseContact,
    CaseEvent,
    CaseExtended,
    CaseLinked,
    CaseNoticeIssued,
    CaseReopened,
    CaseReplied,
    CaseReturned,
    CaseSigned,
    CaseSubmitted,
    CaseTriaged,
    NoticeMethod,
    NotificationChannel,
    NotificationKind,
    StaffContact,
)
from services.common.people import chinese_date
from services.common.reference import reference
from services.common.workdays import SHANGHAI, WorkCalendar, local_date, quiet_hours_end
from services.notifier.config import LadderSettings

TEMPLATES_DIR = Path(__file__).with_name("templates")
_TICK = timedelta(microseconds=1)


# ------------------------------------------------------------------------------------------ case state


@dataclass(slots=True)
class CaseState:
    """What the ladder needs to know about one case; rebuilt from its events, stored per partition."""

    case_id: str
    tracking_number: str
    partition: int = 0
    version: int = 0
    closed: bool = False
    department_id: str | None = None
    department_name: str | None = None
    category: str | None = None
    county: str | None = None
    township: str | None = None
    assigned_at: datetime | None = None
    deadline: datetime | None = None
    signed: bool = False
    replied: bool = False
    handling_round: int = 1
    routing_round: int = 1

    @property
    def awaiting_reply(self) -> bool:
        """The ladder runs only while a unit owes a reply."""
        return not self.closed and not self.replied and self.deadline is not None and self.department_id is not None

    def to_doc(self) -> dict[str, Any]:
        # instants as ISO text: alert ids are built from them, and BSON dates would drop the microseconds
        return {k: v.isoformat() if isinstance(v, datetime) else v for k, v in asdict(self).items()}

    @classmethod
    def from_doc(cls, doc: dict[str, Any]) -> CaseState:
        fields = {k: v for k, v in doc.items() if k in cls.__dataclass_fields__}
        for name in _INSTANTS:
            if isinstance(fields.get(name), str):
                fields[name] = datetime.fromisoformat(fields[name])
        return cls(**fields)


_INSTANTS = ("assigned_at", "deadline")


def apply_event(state: CaseState | None, event: CaseEvent, partition: int) -> CaseState | None:
    """The case's state after ``event``; None when the event is a replay (version not newer)."""
    if state is not None and event.version <= state.version:
        return None
    if state is None:
        state = CaseState(case_id=event.case_id, tracking_number=event.tracking_number)
    state.partition = partition
    state.version = event.version
    if isinstance(event, CaseAssigned):
        # the name from the shared reference data: the citizen reads the unit's Chinese name, never its id
        state.department_id = event.department_id
        unit = reference().unit(event.department_id)
        state.department_name = unit.name if unit else event.department_name
        state.category, state.county, state.township = event.category, event.county, event.township
        state.assigned_at, state.deadline = event.occurred_at, event.deadline
        state.signed = state.replied = False
        state.routing_round = event.routing_round
    elif isinstance(event, CaseSigned):
        state.signed = True
    elif isinstance(event, CaseExtended):
        state.deadline = event.deadline
    elif isinstance(event, CaseReplied):
        state.replied = True
    elif isinstance(event, CaseReopened):
        # second handling: the same unit, already signed for, answers again by a new deadline
        state.handling_round, state.deadline = event.handling_round, event.deadline
        state.department_id = event.department_id
        state.assigned_at = event.occurred_at
        state.replied, state.signed = False, True
    elif isinstance(event, CaseReturned | CaseTriaged):
        # nobody owes a reply until the case is routed again
        state.department_id, state.deadline, state.assigned_at = None, None, None
    elif isinstance(event, CaseClosed | CaseLinked):
        state.closed = True
    elif isinstance(event, CaseSubmitted):
        state.tracking_number = event.tracking_number
    return state


# ------------------------------------------------------------------------------------------ working days


def start_of_day(day: date) -> datetime:
    return datetime.combine(day, time(0), tzinfo=SHANGHAI)


def working_days_before(deadline: datetime, days: int, calendar: WorkCalendar) -> datetime:
    """The instant ``days`` working days before ``deadline``: the start of the days-th last working day."""
    return _start_of_nth_last_working_day(calendar, local_date(deadline - _TICK), days)


def working_days_after(deadline: datetime, days: int, calendar: WorkCalendar) -> datetime:
    """The end of the ``days``-th working day after the day the deadline closes."""
    return end_of_working_days(calendar, local_date(deadline - _TICK), days)


def end_of_working_days(calendar: WorkCalendar, day: date, days: int) -> datetime:
    """``calendar.add_working_days`` for any instant of ``day``, memoised: only the date matters."""
    return _end_of_working_days(calendar, day, days)


@lru_cache(maxsize=65536)
def _end_of_working_days(calendar: WorkCalendar, day: date, days: int) -> datetime:
    return calendar.add_working_days(start_of_day(day), days)


@lru_cache(maxsize=65536)
def _start_of_nth_last_working_day(calendar: WorkCalendar, last_day: date, days: int) -> datetime:
    day = last_day
    while not calendar.is_working_day(day):
        day -= timedelta(days=1)
    for _ in range(days - 1):
        day -= timedelta(days=1)
        while not calendar.is_working_day(day):
            day -= timedelta(days=1)
    return start_of_day(day)


# ------------------------------------------------------------------------------------------ the ladder


@dataclass(frozen=True)
class LadderStep:
    kind: AlertKind
    alert_id: str
    due_at: datetime
    audience: tuple[Audience, ...]
    stale_at: datetime | None = None  # after this instant the step is pointless (a reminder past its deadline)


def alert_id(kind: AlertKind, case_id: str, handling_round: int, moment: datetime) -> str:
    return f"{kind.value}:{case_id}:{handling_round}:{moment.isoformat()}"


def ladder(state: CaseState, calendar: WorkCalendar, settings: LadderSettings) -> list[LadderStep]:
    """Every alert the case may still raise in its current round, whether due yet or not."""
    if not state.awaiting_reply:
        return []
    assert state.deadline is not None
    deadline, round_ = state.deadline, state.handling_round
    both = (Audience.DEPARTMENT, Audience.SUPERVISORS)
    steps: list[LadderStep] = []
    if not state.signed and state.assigned_at is not None:
        steps.append(LadderStep(
            AlertKind.UNSIGNED, alert_id(AlertKind.UNSIGNED, state.case_id, round_, state.assigned_at),
            end_of_working_days(calendar, local_date(state.assigned_at), settings.unsigned_after_working_days),
            both))
    steps.append(LadderStep(
        AlertKind.REMINDER, alert_id(AlertKind.REMINDER, state.case_id, round_, deadline),
        working_days_before(deadline, settings.reminder_working_days_before, calendar), (Audience.DEPARTMENT,),
        stale_at=deadline))
    steps.append(LadderStep(
        AlertKind.OVERDUE, alert_id(AlertKind.OVERDUE, state.case_id, round_, deadline),
        deadline + settings.overdue_grace, both))
    steps.append(LadderStep(
        AlertKind.ESCALATED, alert_id(AlertKind.ESCALATED, state.case_id, round_, deadline),
        working_days_after(deadline, settings.escalate_after_working_days, calendar) + settings.overdue_grace,
        (Audience.SUPERVISORS,)))
    return steps


def _is_live(step: LadderStep, now: datetime) -> bool:
    return step.stale_at is None or now < step.stale_at


_MESSAGES = {
    AlertKind.REMINDER: "诉求 {tn} 将于 {deadline} 到期，请{dept}尽快答复。",
    AlertKind.UNSIGNED: "诉求 {tn} 交办后超过一个工作日仍未签收，请{dept}及时签收。",
    AlertKind.OVERDUE: "诉求 {tn} 已于 {deadline} 超期未答复（{dept}），请督办。",
    AlertKind.ESCALATED: "诉求 {tn} 超期五个工作日以上仍未答复（{dept}），已升级督办。",
}


def local_text(moment: datetime) -> str:
    """A deadline as people read it: the last minute of the day in Shanghai."""
    return (moment - _TICK).astimezone(SHANGHAI).strftime("%Y年%m月%d日%H:%M")


def to_alert(state: CaseState, step: LadderStep, now: datetime) -> Alert:
    message = _MESSAGES[step.kind].format(
        tn=state.tracking_number, deadline=local_text(state.deadline) if state.deadline else "-",
        dept=state.department_name or state.department_id or "承办单位")
    return Alert(alert_id=step.alert_id, kind=step.kind, case_id=state.case_id, tracking_number=state.tracking_number,
                 department_id=state.department_id, category=state.category, county=state.county,
                 township=state.township, deadline=state.deadline, audience=list(step.audience), message=message,
                 raised_at=now)


def due_alerts(state: CaseState, now: datetime, calendar: WorkCalendar, settings: LadderSettings | None = None,
               published: frozenset[str] | set[str] = frozenset()) -> list[Alert]:
    """The alerts the case owes at ``now`` that were not published yet."""
    settings = settings or LadderSettings()
    return [to_alert(state, step, now) for step in ladder(state, calendar, settings)
            if step.due_at <= now and _is_live(step, now) and step.alert_id not in published]


def next_due(state: CaseState, now: datetime, calendar: WorkCalendar, settings: LadderSettings,
             published: frozenset[str] | set[str] = frozenset()) -> datetime | None:
    """When the case next needs looking at: its earliest unpublished, still meaningful step."""
    times = [step.due_at for step in ladder(state, calendar, settings)
             if step.alert_id not in published and _is_live(step, now)]
    return min(times) if times else None


class DueIndex:
    """Cases ordered by next-due time (a heap with lazy deletion): a scan touches only the due cases."""

    def __init__(self) -> None:
        self._heap: list[tuple[float, int, str]] = []
        self._due: dict[str, float] = {}
        self._seq = itertools.count()

    def __len__(self) -> int:
        return len(self._due)

    def schedule(self, case_id: str, due_at: datetime | None) -> None:
        if due_at is None:
            self._due.pop(case_id, None)
            return
        stamp = due_at.timestamp()
        if self._due.get(case_id) == stamp:
            return
        self._due[case_id] = stamp
        heapq.heappush(self._heap, (stamp, next(self._seq), case_id))
        if len(self._heap) > 2 * len(self._due) + 1024:
            self._compact()

    def remove(self, case_id: str) -> None:
        self._due.pop(case_id, None)

    def pop_due(self, now: datetime) -> Iterator[str]:
        """Yield (and unschedule) every case due at ``now``; reschedule what still has steps ahead."""
        limit = now.timestamp()
        while self._heap and self._heap[0][0] <= limit:
            stamp, _, case_id = heapq.heappop(self._heap)
            if self._due.get(case_id) == stamp:
                del self._due[case_id]
                yield case_id

    def _compact(self) -> None:
        self._heap = [(stamp, next(self._seq), cid) for cid, stamp in self._due.items()]
        heapq.heapify(self._heap)


# ------------------------------------------------------------------------------------------ hotspots


@dataclass(frozen=True)
class HotspotKey:
    category: str
    county: str
    township: str

    def label(self) -> str:
        return f"{self.category}:{self.county}:{self.township}"


def hotspot_alert(key: HotspotKey, posts: Iterable[tuple[str, datetime]], now: datetime,
                  settings: LadderSettings, last_raised: datetime | None = None) -> Alert | None:
    """A hotspot alert when ≥ N open posts of one category from one township arrived within the window,
    unless one was raised for the same place and category within the window already."""
    window_start = now - settings.hotspot_window
    recent = sorted((at, cid) for cid, at in posts if window_start < at <= now)
    if len(recent) < settings.hotspot_min_posts:
        return None
    if last_raised is not None and now - last_raised < settings.hotspot_window:
        return None
    first_day = local_date(recent[0][0]).isoformat()
    return Alert(
        alert_id=f"hotspot:{key.label()}:{first_day}", kind=AlertKind.HOTSPOT, category=key.category,
        county=key.county or None, township=key.township, audience=[Audience.SUPERVISORS],
        message=f"{key.county}{key.township}近{settings.hotspot_window_days}天内有{len(recent)}件"
                f"{reference().category_name(key.category)}类诉求未办结，请关注。",
        case_ids=[cid for _, cid in recent][:200], raised_at=now)


# ------------------------------------------------------------------------------------------ notifications


@dataclass(frozen=True)
class PlannedNotification:
    notification_id: str
    case_id: str
    tracking_number: str
    kind: NotificationKind
    variables: dict[str, str] = field(default_factory=dict)


def plan_notification(state: CaseState, event: CaseEvent) -> PlannedNotification | None:
    """What the citizen is told after ``event`` (state is the case after it); stable id per case, kind, round."""
    base = {"tracking_number": state.tracking_number, "department_name": state.department_name or "承办单位",
            "deadline": local_text(state.deadline) if state.deadline else "",
            "handling_round": str(state.handling_round)}
    cid = state.case_id
    if isinstance(event, CaseSubmitted):
        kind, nid = NotificationKind.RECEIVED, f"received:{cid}"
    elif isinstance(event, CaseAssigned):
        kind, nid = NotificationKind.ASSIGNED, f"assigned:{cid}:{event.routing_round}"
    elif isinstance(event, CaseReplied):
        kind, nid = NotificationKind.REPLIED, f"replied:{cid}:{event.handling_round}"
    elif isinstance(event, CaseReopened):
        kind, nid = NotificationKind.REOPENED, f"reopened:{cid}:{event.handling_round}"
    elif isinstance(event, CaseClosed):
        kind, nid = NotificationKind.CLOSED, f"closed:{cid}"
    else:
        return None
    return PlannedNotification(nid, cid, state.tracking_number, kind, base)


@lru_cache
def template_text(kind: str) -> str:
    return (TEMPLATES_DIR / f"{kind}.txt").read_text(encoding="utf-8").strip()


def render(kind: NotificationKind | str, variables: dict[str, str]) -> str:
    return template_text(str(kind)).format(**variables)


_ADDRESS = {
    NotificationChannel.SMS: "phone",
    NotificationChannel.WECHAT: "wechat_openid",
    NotificationChannel.EMAIL: "email",
}
_FALLBACK_ORDER = (NotificationChannel.SMS, NotificationChannel.WECHAT, NotificationChannel.EMAIL)


def choose_channel(contact: CaseContact, force: str | None = None) -> tuple[NotificationChannel, str] | None:
    """The citizen's preferred channel if we have its address, else the first one we can reach; None: no way."""
    order = [contact.preferred_channel, *(c for c in _FALLBACK_ORDER if c != contact.preferred_channel)]
    for channel in order:
        address = getattr(contact, _ADDRESS.get(channel, ""), None) if channel in _ADDRESS else None
        if address:
            return (NotificationChannel(force) if force else channel), address
    return None


def mask_address(address: str) -> str:
    """Enough to tell two recipients apart in a log line, nothing more."""
    if "@" in address:
        return address[0] + "***@" + address.split("@", 1)[1]
    return address[:3] + "*" * max(0, len(address) - 7) + address[-4:] if len(address) > 7 else "***"


# ------------------------------------------------------------------------------------------ staff reminders

STAFF_UNIT_ROLES = frozenset({"unit_staff", "unit_lead"})
STAFF_ALERT_KINDS = frozenset({AlertKind.REMINDER, AlertKind.UNSIGNED, AlertKind.OVERDUE, AlertKind.ESCALATED})
_STAFF_ADDRESS = {NotificationChannel.SMS: "phone", NotificationChannel.EMAIL: "email"}


class StaffDirectory:
    """The latest contact record of every staff member, from the compacted staff-contacts topic (read whole by
    every replica, like a global table), looked up by unit and by role."""

    def __init__(self) -> None:
        self.people: dict[str, StaffContact] = {}

    def apply(self, contact: StaffContact) -> None:
        known = self.people.get(contact.person_id)
        if known is None or contact.updated_at >= known.updated_at:
            self.people[contact.person_id] = contact

    def recipients(self, alert: Alert) -> list[StaffContact]:
        """Who an alert is for: its unit's staff and leads, and for supervisors' alerts the supervision office."""
        out: dict[str, StaffContact] = {}
        if Audience.DEPARTMENT in alert.audience and alert.department_id:
            out.update((person.person_id, person) for person in self.of_unit(alert.department_id))
        if Audience.SUPERVISORS in alert.audience:
            out.update((p.person_id, p) for p in self.people.values() if p.active and "supervisor" in p.roles)
        return [out[k] for k in sorted(out)]

    def of_unit(self, unit_id: str) -> list[StaffContact]:
        """A unit's active staff and leads, in a stable order."""
        return sorted((p for p in self.people.values()
                       if p.active and p.unit_id == unit_id and set(p.roles) & STAFF_UNIT_ROLES),
                      key=lambda p: p.person_id)


@dataclass(frozen=True)
class StaffNotice:
    notification_id: str
    person_id: str
    channel: NotificationChannel
    to: str
    text: str
    not_before: datetime | None  # the end of the person's quiet hours, when the alert came during them


def staff_notices(alert: Alert, directory: StaffDirectory, now: datetime) -> list[StaffNotice]:
    """One notice per person and chosen channel for a case alert; stable ids (alert, person, channel)."""
    if alert.kind not in STAFF_ALERT_KINDS or alert.case_id is None:
        return []
    return _per_person_and_channel(directory.recipients(alert), f"staff:{alert.alert_id}",
                                   f"【问政提醒】{alert.message}", now)


NOTICE_METHOD_NAMES = {NoticeMethod.PHONE: "电话督办", NoticeMethod.ON_SITE: "现场督办",
                       NoticeMethod.MEETING: "会议督办"}


def supervision_notices(event: CaseNoticeIssued, directory: StaffDirectory, now: datetime) -> list[StaffNotice]:
    """A 督办 notice, to each of the unit's staff and leads on their channels; stable ids (notice, person,
    channel), so a replay adds nothing. Only the method, the case's tracking number and the reply-by day:
    never the supervisor's free-text note or anything about the citizen."""
    unit = reference().unit(event.department_id)
    text = (f"【问政督办】{unit.name if unit else '贵单位'}：市督办办公室对工单{event.tracking_number}"
            f"{NOTICE_METHOD_NAMES[event.method]}，请于{chinese_date(event.reply_by)}前答复。")
    return _per_person_and_channel(directory.of_unit(event.department_id), f"staff:notice:{event.notice_id}",
                                   text, now)


def _per_person_and_channel(people: list[StaffContact], key: str, text: str, now: datetime) -> list[StaffNotice]:
    """``text`` to each person on each of their channels with an address, held until their quiet hours end."""
    notices = []
    for person in people:
        quiet = person.quiet_hours
        hold = quiet_hours_end(now, quiet.start, quiet.end) if quiet else now
        for channel in person.channels:
            address = getattr(person, _STAFF_ADDRESS.get(channel, ""), None)
            if not address:
                continue
            notices.append(StaffNotice(f"{key}:{person.person_id}:{channel.value}", person.person_id, channel,
                                       address, text, hold if hold > now else None))
    return notices
