"""Fakes of the notifier's adapters (store, publisher) and event builders, for pure tests and the benchmark."""

from __future__ import annotations

from datetime import UTC, date, datetime
from typing import Any

from services.common import events as ev
from services.common.clock import FixedClock
from services.common.workdays import default_calendar
from services.notifier.config import LadderSettings, NotifierSettings
from services.notifier.domain import CaseState, HotspotKey
from services.notifier.handlers import NotifierService

DEPT = "zhanggong_gov"
STAFF_T0 = datetime(2026, 9, 7, 1, 0, tzinfo=UTC)  # Monday 09:00 in Shanghai


class FakeStore:
    def __init__(self) -> None:
        self.cases: dict[str, dict[str, Any]] = {}
        self.contacts: dict[str, dict[str, Any]] = {}
        self.notifications: dict[str, dict[str, Any]] = {}
        self.posts: dict[str, dict[str, Any]] = {}
        self.published: dict[int, list[ev.Alert]] = {}

    async def save_cases(self, states) -> None:
        for s in states:
            self.cases[s.case_id] = s.to_doc()

    async def load_open_cases(self, partitions) -> list[CaseState]:
        return [CaseState.from_doc(d) for d in self.cases.values() if d["partition"] in partitions and not d["closed"]]

    async def save_contact(self, case_id: str, contact: dict[str, Any], partition: int = 0) -> None:
        self.contacts[case_id] = contact

    async def alert_published(self, partition: int, alert: ev.Alert) -> None:
        self.published.setdefault(partition, []).append(alert)

    async def erase_contacts(self, case_ids: list[str]) -> int:
        return sum(self.contacts.pop(case_id, None) is not None for case_id in case_ids)

    async def contact(self, case_id: str) -> dict[str, Any] | None:
        return self.contacts.get(case_id)

    async def add_notification(self, doc: dict[str, Any]) -> bool:
        if doc["_id"] in self.notifications:
            return False
        self.notifications[doc["_id"]] = dict(doc)
        return True

    async def has_waiting(self, case_id: str) -> bool:
        return bool(await self.waiting_for(case_id))

    async def waiting_for(self, case_id: str) -> list[dict[str, Any]]:
        return [dict(d) for d in self.notifications.values() if d["case_id"] == case_id and d["status"] == "waiting"]

    async def count_waiting(self, case_id: str) -> int:
        return len(await self.waiting_for(case_id))

    async def mark_ready(self, doc: dict[str, Any], channel: str, to: str, text: str) -> None:
        self.notifications[doc["_id"]].update(status="ready", channel=channel, to=to, text=text)

    async def set_status(self, doc: dict[str, Any], status: str) -> None:
        self.notifications[doc["_id"]].update(status=status)

    async def release_held(self, now: datetime) -> int:
        held = [d for d in self.notifications.values() if d["status"] == "held" and d["not_before"] <= now]
        for doc in held:
            doc["status"] = "ready"
        return len(held)

    async def ready(self, partitions, limit: int = 10000) -> list[dict[str, Any]]:
        return [dict(d) for d in self.notifications.values() if d["status"] == "ready" and d["partition"] in partitions]

    async def expire_waiting(self, older_than: datetime) -> int:
        return 0

    async def open_post(self, case_id: str, key: HotspotKey, assigned_at: datetime) -> None:
        self.posts[case_id] = {"key": key, "assigned_at": assigned_at, "open": True}

    async def close_post(self, case_id: str) -> None:
        if case_id in self.posts:
            self.posts[case_id]["open"] = False

    async def busy_places(self, since: datetime, minimum: int) -> list[str]:
        counts: dict[str, int] = {}
        for p in self.posts.values():
            if p["open"] and p["assigned_at"] > since:
                counts[p["key"].label()] = counts.get(p["key"].label(), 0) + 1
        return [k for k, n in counts.items() if n >= minimum]

    async def open_posts(self, hkey: str, since: datetime):
        rows = [(cid, p) for cid, p in self.posts.items()
                if p["key"].label() == hkey and p["open"] and p["assigned_at"] > since]
        return (rows[0][1]["key"] if rows else None), [(cid, p["assigned_at"]) for cid, p in rows]


class FakePublisher:
    def __init__(self) -> None:
        self.alerts_sent: list[tuple[ev.Alert, int, str]] = []
        self.notifications_sent: list[ev.Notification] = []
        self.dead: list[ev.DeadLetter] = []

    async def alerts(self, items: list[tuple[ev.Alert, int, str]]) -> list[bool]:
        self.alerts_sent.extend(items)
        return [True] * len(items)

    async def notification(self, notification: ev.Notification, partition: int) -> None:
        self.notifications_sent.append(notification)

    async def dead_letter(self, letter: ev.DeadLetter) -> None:
        self.dead.append(letter)

    def kinds(self) -> list[str]:
        return [a.kind.value for a, _, _ in self.alerts_sent]


def make_service(start: datetime, *, partitions=(0, 1, 2), ladder: LadderSettings | None = None):
    clock = FixedClock(start)
    store, publisher = FakeStore(), FakePublisher()
    service = NotifierService(store, publisher, default_calendar(), clock,  # type: ignore[arg-type]
                              ladder or LadderSettings(overdue_grace_seconds=0), NotifierSettings())
    for p in partitions:
        service.adopt(p, [], [], [])
        service.caught_up.add(p)
    return service, clock, store, publisher


class CaseScript:
    """Builds one case's events with increasing versions."""

    def __init__(self, case_id: str, tracking: str = "WZ2609-TEST-0001") -> None:
        self.case_id, self.tracking, self.version = case_id, tracking, 0

    def _base(self, at: datetime, actor: str) -> dict[str, Any]:
        self.version += 1
        return dict(case_id=self.case_id, tracking_number=self.tracking, version=self.version, occurred_at=at,
                    actor=actor)

    def submitted(self, at: datetime) -> ev.CaseSubmitted:
        return ev.CaseSubmitted(**self._base(at, "citizen"), channel="web", title="路灯不亮", body="路灯坏了")

    def assigned(self, at: datetime, deadline: datetime, *, township: str = "水西镇", category: str = "urban",
                 routing_round: int = 1) -> ev.CaseAssigned:
        return ev.CaseAssigned(**self._base(at, "router"), decision_id="d", category=category,
                               category_name="城市管理", department_id=DEPT, department_name="章贡区人民政府",
                               county="章贡区", township=township, deadline=deadline, working_days=3,
                               confidence=0.9, model_version="m", routing_round=routing_round)

    def signed(self, at: datetime) -> ev.CaseSigned:
        return ev.CaseSigned(**self._base(at, "department"), department_id=DEPT)

    def extended(self, at: datetime, previous: datetime, deadline: datetime) -> ev.CaseExtended:
        return ev.CaseExtended(**self._base(at, "supervisor"), department_id=DEPT, previous_deadline=previous,
                               deadline=deadline, extra_working_days=3)

    def replied(self, at: datetime, deadline: datetime, handling_round: int = 1) -> ev.CaseReplied:
        return ev.CaseReplied(**self._base(at, "department"), department_id=DEPT, reply="已处理", deadline=deadline,
                              on_time=at <= deadline, handling_round=handling_round)

    def reopened(self, at: datetime, deadline: datetime, handling_round: int = 2) -> ev.CaseReopened:
        return ev.CaseReopened(**self._base(at, "supervisor"), department_id=DEPT, reason="不满意",
                               handling_round=handling_round, deadline=deadline)

    def notice_issued(self, at: datetime, notice_id: str, reply_by: date, *, method: str = "on_site",
                      note: str = "请于本周内到现场核实并联系群众13800138000") -> ev.CaseNoticeIssued:
        return ev.CaseNoticeIssued(**self._base(at, "supervisor"), notice_id=notice_id, department_id=DEPT,
                                   method=method, note=note, reply_by=reply_by)

    def closed(self, at: datetime) -> ev.CaseClosed:
        return ev.CaseClosed(**self._base(at, "supervisor"), reason="办结", department_id=DEPT)

    def contact(self, at: datetime, phone: str = "13800138000") -> ev.CaseContact:
        return ev.CaseContact(case_id=self.case_id, tracking_number=self.tracking, phone=phone, recorded_at=at)


def staff_contact(person: str, roles: list[str], unit: str | None = DEPT, *, channels=("sms",), active: bool = True,
                  quiet: ev.QuietHours | None = None, at: datetime = STAFF_T0) -> ev.StaffContact:
    return ev.StaffContact(person_id=person, unit_id=unit, roles=roles, phone="13900000000", email="x@gz.gov.cn",
                           channels=list(channels), quiet_hours=quiet, active=active, updated_at=at)
