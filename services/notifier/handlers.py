"""The notifier's use cases: apply case events and contacts, scan the ladder, release notifications, and
the delivery outcomes.

Independent of Kafka: the worker (agents.py) hands in parsed events and a :class:`Publisher`; tests and
the benchmark use fakes of the publisher and, for pure tests, of the store.

Exactly once, alerts: every case alert is published to the alerts partition with the number of the case's
case-events partition (same key, same partition count). Whoever owns case-events partition p is the only
writer of alerts partition p. The worker runs every batch and every scan in a Kafka transaction that also
writes the changed state (the alert ids published, in ``store.alert_published``) and the consumed offsets,
so that after a crash the state restored on assignment (``adopt``) knows exactly what was published.
"""

from __future__ import annotations

import itertools
from collections import Counter as Tally
from collections.abc import Iterable
from datetime import datetime, timedelta
from typing import Any, Protocol

from services.common.clock import Clock
from services.common.events import (
    Alert,
    AlertKind,
    CaseAssigned,
    CaseClosed,
    CaseContact,
    CaseEvent,
    CaseLinked,
    CaseNoticeIssued,
    CaseReplied,
    CaseReturned,
    CaseTriaged,
    DeadLetter,
    Notification,
    NotificationKind,
    utcnow,
)
from services.common.logging import get_logger
from services.common.workdays import WorkCalendar
from services.notifier.channels import Delivery
from services.notifier.config import LadderSettings, NotifierSettings
from services.notifier.domain import (
    CaseState,
    DueIndex,
    HotspotKey,
    PlannedNotification,
    StaffDirectory,
    StaffNotice,
    apply_event,
    choose_channel,
    due_alerts,
    hotspot_alert,
    mask_address,
    next_due,
    plan_notification,
    render,
    staff_notices,
    supervision_notices,
)
from services.notifier.metrics import (
    ALERTS,
    CONTACTS_ERASED,
    DEAD_LETTERS,
    OPEN_CASES,
    OVERDUE_OPEN_CASES,
    PENDING_CONTACT,
)
from services.notifier.store import HOTSPOT_PARTITION, NotifierState

log = get_logger(__name__)


class Publisher(Protocol):
    async def alerts(self, items: list[tuple[Alert, int, str]]) -> list[bool]:
        """Publish (alert, partition, key); once every send has an outcome, say which ones were acked."""

    async def notification(self, notification: Notification, partition: int) -> None: ...

    async def dead_letter(self, letter: DeadLetter) -> None: ...


class NotifierService:
    def __init__(self, store: NotifierState, publisher: Publisher, calendar: WorkCalendar, clock: Clock,
                 ladder_settings: LadderSettings, settings: NotifierSettings) -> None:
        self.store, self.publisher, self.calendar, self.clock = store, publisher, calendar, clock
        self.ladder_settings, self.settings = ladder_settings, settings
        self.states: dict[str, CaseState] = {}
        self.index = DueIndex()
        self.published_alerts: dict[int, set[str]] = {}
        self.published_notifications: dict[int, set[str]] = {}
        self.hotspot_last: dict[str, datetime] = {}
        self.owned: set[int] = set()
        self.caught_up: set[int] = set()
        self.backlog = False  # the last scan stopped at scan_max_cases: more may be due
        self.staff = StaffDirectory()  # who to remind, from the staff-contacts topic (see agents.follow_staff)

    # ------------------------------------------------------------------ partitions

    def adopt(self, partition: int, states: Iterable[CaseState], alerts: Iterable[dict[str, Any]],
              notification_ids: Iterable[str]) -> None:
        """Take over a partition: its open cases, and what was already published for it."""
        now = self.clock.now()
        self.owned.add(partition)
        published = self.published_alerts.setdefault(partition, set())
        for alert in alerts:
            published.add(alert["alert_id"])
            if alert.get("kind") == AlertKind.HOTSPOT.value:
                label = HotspotKey(alert.get("category") or "", alert.get("county") or "",
                                   alert.get("township") or "").label()
                raised = datetime.fromisoformat(alert["raised_at"])
                self.hotspot_last[label] = max(raised, self.hotspot_last.get(label, raised))
        self.published_notifications.setdefault(partition, set()).update(notification_ids)
        for state in states:
            self.states[state.case_id] = state
            self._reschedule(state, now)

    def drop(self, partitions: Iterable[int]) -> None:
        gone = set(partitions)
        for case_id in [cid for cid, s in self.states.items() if s.partition in gone]:
            del self.states[case_id]
            self.index.remove(case_id)
        for p in gone:
            self.owned.discard(p)
            self.caught_up.discard(p)
            self.published_alerts.pop(p, None)
            self.published_notifications.pop(p, None)
        if HOTSPOT_PARTITION in gone:
            self.hotspot_last.clear()

    def _reschedule(self, state: CaseState, now: datetime) -> None:
        published = self.published_alerts.get(state.partition, set())
        self.index.schedule(state.case_id, next_due(state, now, self.calendar, self.ladder_settings, published))

    # ------------------------------------------------------------------ events

    async def apply_batch(self, events: list[tuple[CaseEvent, int]]) -> int:
        """Apply case events in order; persist the changed states; plan notifications. Returns how many applied."""
        now = self.clock.now()
        changed: dict[str, CaseState] = {}
        planned = []
        notices: list[tuple[CaseNoticeIssued, int]] = []  # 督办 notices, for the unit's staff
        for event, partition in events:
            state = apply_event(self.states.get(event.case_id), event, partition)
            if state is None:
                continue  # a replay after a crash: already applied
            changed[state.case_id] = state
            if state.closed:
                self.states.pop(state.case_id, None)
                self.index.remove(state.case_id)
            else:
                self.states[state.case_id] = state
                self._reschedule(state, now)
            await self._track_hotspot(state, event)
            notification = plan_notification(state, event)
            if notification is not None:
                planned.append((notification, partition))
            if isinstance(event, CaseNoticeIssued):
                notices.append((event, partition))
        await self.store.save_cases(changed.values())
        for notification, partition in planned:
            await self._add_notification(notification, partition, now)
        for notice, partition in notices:
            await self._add_staff_notices(supervision_notices(notice, self.staff, now), notice.case_id,
                                          notice.tracking_number, partition, now)
        return len(changed)

    async def _track_hotspot(self, state: CaseState, event: CaseEvent) -> None:
        if isinstance(event, CaseAssigned) and event.category and event.township:
            key = HotspotKey(event.category, event.county or "", event.township)
            await self.store.open_post(state.case_id, key, event.occurred_at)
        elif isinstance(event, CaseReplied | CaseClosed | CaseLinked | CaseReturned | CaseTriaged):
            await self.store.close_post(state.case_id)

    async def _add_notification(self, planned: PlannedNotification, partition: int, now: datetime) -> None:
        contact = await self.store.contact(planned.case_id)
        if contact is None and await self.store.count_waiting(planned.case_id) >= self.settings.pending_per_case_max:
            PENDING_CONTACT.labels("dropped").inc()
            log.warning("notification_dropped", notification_id=planned.notification_id, reason="too many pending")
            return
        doc = {"_id": planned.notification_id, "case_id": planned.case_id, "tracking_number": planned.tracking_number,
               "kind": planned.kind.value, "partition": partition, "variables": planned.variables,
               "status": "waiting", "created_at": now}
        if not await self.store.add_notification(doc):
            return
        if contact is None:  # it waits under its case until the contact comes (apply_contact)
            PENDING_CONTACT.labels("waiting").inc()
            return
        await self._resolve(doc, contact)

    async def apply_contact(self, contact: CaseContact, partition: int) -> None:
        """A contact (possibly after the case events): release what waited for it."""
        data = contact.model_dump(mode="json")
        await self.store.save_contact(contact.case_id, data, partition)
        if not await self.store.has_waiting(contact.case_id):
            return  # the usual order: the contact came first, nothing waits (and no scan of the notifications)
        for doc in await self.store.waiting_for(contact.case_id):
            PENDING_CONTACT.labels("released").inc()
            await self._resolve(doc, data)

    async def erase_contacts(self, case_ids: list[str]) -> None:
        """Tombstones on the contacts topic: intake erased these contacts after their retention period (counted
        when we held them: a tombstone already applied by a restore is not counted again)."""
        if case_ids:
            CONTACTS_ERASED.inc(await self.store.erase_contacts(case_ids))

    async def _resolve(self, doc: dict[str, Any], contact_data: dict[str, Any]) -> None:
        contact = CaseContact.model_validate(contact_data)
        route = choose_channel(contact, self.settings.force_channel)
        if route is None:
            await self.store.set_status(doc, "no_contact")
            return
        channel, to = route
        text = render(doc["kind"], doc["variables"])
        await self.store.mark_ready(doc, channel.value, to, text)
        await self.release({**doc, "channel": channel.value, "to": to, "text": text, "status": "ready"})

    async def release(self, doc: dict[str, Any]) -> None:
        """Publish a ready notification to the notifications topic (once), for the delivery consumer."""
        partition = doc["partition"]
        notification = Notification(
            notification_id=doc["_id"], case_id=doc["case_id"], tracking_number=doc["tracking_number"],
            kind=doc["kind"], channel=doc["channel"], to=doc["to"], template=doc["kind"], text=doc["text"],
            created_at=doc["created_at"], person_id=doc.get("person_id"))
        published = self.published_notifications.get(partition)
        if published is not None and notification.notification_id not in published:
            await self.publisher.notification(notification, partition)
            published.add(notification.notification_id)
            await self.store.set_status(doc, "published")

    # ------------------------------------------------------------------ the ladder

    async def scan(self) -> int:
        """Publish every alert due now; returns how many were published."""
        now = self.clock.now()
        due = list(itertools.islice(self.index.pop_due(now), self.settings.scan_max_cases))
        self.backlog = len(due) == self.settings.scan_max_cases
        deferred, batch, touched = [], [], []
        for case_id in due:
            state = self.states.get(case_id)
            if state is None:
                continue
            if state.partition not in self.caught_up:
                deferred.append(state)  # its partition may still hold a reply we have not read
                continue
            published = self.published_alerts.setdefault(state.partition, set())
            for alert in due_alerts(state, now, self.calendar, self.ladder_settings, published):
                batch.append((alert, state.partition, state.case_id))
            touched.append(state)
        acked = await self._publish(batch)
        for (alert, partition, _), ok in zip(batch, acked, strict=True):
            if ok:  # only an acked alert counts as published: the others stay due for the next scan
                self.published_alerts[partition].add(alert.alert_id)
                await self.store.alert_published(partition, alert)
                ALERTS.labels(alert.kind.value).inc()
                await self._remind_staff(alert, partition, now)
        for state in touched:
            self._reschedule(state, now)
        for state in deferred:
            self.index.schedule(state.case_id, now)
        return sum(acked)

    async def _remind_staff(self, alert: Alert, partition: int, now: datetime) -> None:
        """The alert, to each person of its unit (or the supervision office) on their channels; held until the
        end of their quiet hours. Stored like citizens' notifications, so a crash loses none and sends none twice."""
        await self._add_staff_notices(staff_notices(alert, self.staff, now), alert.case_id, alert.tracking_number,
                                      partition, now)

    async def _add_staff_notices(self, notices: list[StaffNotice], case_id: str | None, tracking_number: str | None,
                                 partition: int, now: datetime) -> None:
        for notice in notices:
            doc = {"_id": notice.notification_id, "case_id": case_id, "tracking_number": tracking_number,
                   "kind": NotificationKind.STAFF_ALERT.value, "partition": partition, "variables": {},
                   "status": "held" if notice.not_before else "ready", "not_before": notice.not_before,
                   "channel": notice.channel.value, "to": notice.to, "text": notice.text, "created_at": now,
                   "person_id": notice.person_id}
            if await self.store.add_notification(doc) and not notice.not_before:
                await self.release(doc)

    async def _publish(self, batch: list[tuple[Alert, int, str]]) -> list[bool]:
        if not batch:
            return []
        try:
            acked = await self.publisher.alerts(batch)
        except Exception:
            log.exception("alert_publish_failed", count=len(batch))
            return [False] * len(batch)
        if not all(acked):
            log.warning("alert_publish_partly_failed", failed=acked.count(False), count=len(batch))
        return acked

    async def scan_hotspots(self) -> int:
        if HOTSPOT_PARTITION not in self.caught_up:
            return 0
        now = self.clock.now()
        since = now - self.ladder_settings.hotspot_window
        raised = []
        for hkey in await self.store.busy_places(since, self.ladder_settings.hotspot_min_posts):
            key, posts = await self.store.open_posts(hkey, since)
            if key is None:
                continue
            alert = hotspot_alert(key, posts, now, self.ladder_settings, self.hotspot_last.get(key.label()))
            if alert is not None and alert.alert_id not in self.published_alerts[HOTSPOT_PARTITION]:
                raised.append((key, alert))
        acked = await self._publish([(a, HOTSPOT_PARTITION, a.alert_id) for _, a in raised])
        for (key, alert), ok in zip(raised, acked, strict=True):
            if ok:
                self.published_alerts[HOTSPOT_PARTITION].add(alert.alert_id)
                await self.store.alert_published(HOTSPOT_PARTITION, alert)
                self.hotspot_last[key.label()] = now
                ALERTS.labels(AlertKind.HOTSPOT.value).inc()
        return sum(acked)

    async def sweep(self) -> None:
        """Expire notifications that never got a contact; release ready ones (held ones whose time has come)."""
        max_age = timedelta(hours=self.settings.pending_contact_max_age_hours)
        expired = await self.store.expire_waiting(utcnow() - max_age)
        if expired:
            PENDING_CONTACT.labels("expired").inc(expired)
        if not self.owned:
            return
        await self.store.release_held(self.clock.now())  # staff reminders whose quiet hours are over
        for doc in await self.store.ready(sorted(self.owned), limit=self.settings.queue_size):
            if doc["partition"] in self.owned:
                await self.release(doc)

    # ------------------------------------------------------------------ metrics

    def refresh_gauges(self) -> None:
        now = self.clock.now()
        OPEN_CASES.set(len(self.states))
        overdue = Tally(s.department_id for s in self.states.values()
                        if s.awaiting_reply and s.deadline is not None and s.deadline < now)
        OVERDUE_OPEN_CASES.clear()
        for department, count in overdue.items():
            OVERDUE_OPEN_CASES.labels(department or "unknown").set(count)


class DeliveryOutcomes:
    """What the delivery consumer does with a delivery's outcome: a final failure is dead-lettered, with the
    address masked."""

    def __init__(self, publisher: Publisher) -> None:
        self.publisher = publisher

    async def delivered(self, delivery: Delivery, _error: Exception | None) -> None:
        return None  # counted by the dispatcher; the gateway has it (deduped there by the notification id)

    async def failed(self, delivery: Delivery, error: Exception | None) -> None:
        n = delivery.notification
        masked = n.model_copy(update={"to": mask_address(n.to)}).model_dump_json()
        letter = DeadLetter(original_topic="notifications.delivery", partition=delivery.partition, key=n.case_id,
                            value=masked, reason=f"{n.channel.value} delivery failed after {delivery.attempts} "
                                                 f"attempts: {str(error)[:300]}",
                            error_type=type(error).__name__, service="notifier", failed_at=utcnow())
        await self.publisher.dead_letter(letter)
        DEAD_LETTERS.labels("delivery").inc()
        log.warning("notification_dead_lettered", notification_id=n.notification_id, channel=n.channel.value)
