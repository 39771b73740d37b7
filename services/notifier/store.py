"""The notifier's state, held in Kafka (no database): keyed state per case-events partition, restored by the
consumer loop (services/common/consumer.py) from compacted changelog topics when a partition is assigned.

- ``cases`` (changelog ``<prefix>.cases-changelog``): the ladder state of each open case; a closed case is
  deleted, so the changelog holds only open cases once compacted.
- ``published`` (``<prefix>.alerts-changelog``): the alerts published per open case (and per hotspot place,
  in partition 0), written in the transaction that publishes them: a restarted worker repeats none.
- ``pending`` (``<prefix>.notifications-changelog``): per case, its notifications waiting for a contact or
  held until a staff member's quiet hours end; one is removed once published to the notifications topic.
- ``contacts``: how to reach the poster, restored from the compacted private contacts topic itself (its own
  changelog: co-partitioned with the case events by case id), never copied elsewhere.
- ``posts`` (``<prefix>.hotspot-posts``): open assigned posts by place, which every worker writes to partition
  0 so that its owner (who raises hotspots) sees a burst spread over every partition.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Iterable
from datetime import datetime
from typing import Any

from aiokafka import ConsumerRecord

from services.common.consumer import KeyedState
from services.common.events import Alert, AlertKind, EventValidationError, parse_event
from services.notifier.domain import CaseState, HotspotKey

HOTSPOT_PARTITION = 0  # hotspots are raised by the owner of partition 0 only, into alerts partition 0
Send = Callable[..., Awaitable[Any]]
_DOC_INSTANTS = ("created_at", "not_before")


def _encode_docs(docs: list[dict[str, Any]]) -> bytes:
    return json.dumps(docs, ensure_ascii=False, default=lambda v: v.isoformat()).encode()


def _decode_docs(raw: bytes) -> list[dict[str, Any]]:
    docs = json.loads(raw)
    for doc in docs:
        for name in _DOC_INSTANTS:
            if isinstance(doc.get(name), str):
                doc[name] = datetime.fromisoformat(doc[name])
    return docs


def _contact_data(raw: bytes) -> dict[str, Any] | None:
    """A record of the contacts topic (a CloudEvent) as the state holds it: its data; None if unreadable."""
    try:
        event = parse_event(raw, expected_topic="case_contacts")
    except EventValidationError:
        return None  # left out of the state (the live consumer dead-letters it when it reads it)
    return event.data.model_dump(mode="json")


def _case_key(doc: dict[str, Any]) -> str:
    return doc.get("case_id") or ""


def post_record(case_id: str, key: HotspotKey | None,
                assigned_at: datetime | None = None) -> tuple[bytes, bytes | None]:
    """The hotspot-posts record of an open post (None: closed)."""
    if key is None:
        return case_id.encode(), None
    assert assigned_at is not None
    value = {"category": key.category, "county": key.county, "township": key.township,
             "assigned_at": assigned_at.isoformat()}
    return case_id.encode(), json.dumps(value, ensure_ascii=False).encode()


class NotifierState:
    """The store the use cases (handlers.py) work on, over the consumer loop's keyed state."""

    def __init__(self, prefix: str, contacts_topic: str, send: Send | None = None) -> None:
        self.cases: KeyedState[dict[str, Any]] = KeyedState(f"{prefix}.cases-changelog")
        self.published: KeyedState[list[dict[str, Any]]] = KeyedState(f"{prefix}.alerts-changelog")
        self.pending: KeyedState[list[dict[str, Any]]] = KeyedState(
            f"{prefix}.notifications-changelog", encode=_encode_docs, decode=_decode_docs)
        self.contacts: KeyedState[dict[str, Any]] = KeyedState(contacts_topic, decode=_contact_data)
        self.posts: KeyedState[dict[str, Any]] = KeyedState(f"{prefix}.hotspot-posts")
        self.send = send  # the loop's send: hotspot posts are an output of the batch, like alerts

    @property
    def all(self) -> list[KeyedState[Any]]:
        return [self.cases, self.published, self.pending, self.contacts, self.posts]

    # ------------------------------------------------------------------ cases and their alerts

    async def save_cases(self, states: Iterable[CaseState]) -> None:
        for s in states:
            if s.closed:  # nothing more can be due: forget it, and what was published for it
                self.cases.delete(s.partition, s.case_id)
                self.published.delete(s.partition, s.case_id)
            else:
                self.cases.put(s.partition, s.case_id, s.to_doc())

    async def load_open_cases(self, partitions: Iterable[int]) -> list[CaseState]:
        return [CaseState.from_doc(doc) for p in partitions for doc in self.cases.of(p).values()]

    async def alert_published(self, partition: int, alert: Alert) -> None:
        entry = {"alert_id": alert.alert_id, "kind": alert.kind.value}
        if alert.kind == AlertKind.HOTSPOT:  # the last one per place is all the next decision needs
            key = HotspotKey(alert.category or "", alert.county or "", alert.township or "")
            entry.update(category=key.category, county=key.county, township=key.township,
                         raised_at=alert.raised_at.isoformat())
            self.published.put(partition, f"hotspot:{key.label()}", [entry])
        elif alert.case_id is not None:
            known = self.published.get(partition, alert.case_id) or []
            self.published.put(partition, alert.case_id, [*known, entry])

    def published_for(self, partition: int) -> list[dict[str, Any]]:
        return [entry for entries in self.published.of(partition).values() for entry in entries]

    # ------------------------------------------------------------------ contacts (personal data)

    async def save_contact(self, case_id: str, contact: dict[str, Any], partition: int) -> None:
        self.contacts.remember(partition, case_id, contact)

    async def erase_contacts(self, case_ids: list[str]) -> int:
        """The contacts intake erased, and the addresses copied into this case's pending notifications."""
        gone = set(case_ids)
        erased = 0
        for p in list(self.contacts.partitions):
            for case_id in gone & set(self.contacts.of(p)):
                self.contacts.remember(p, case_id, None)
                erased += 1
        for p in list(self.pending.partitions):
            for case_id in gone & set(self.pending.of(p)):
                docs = [{**doc, "to": None} for doc in self.pending.of(p)[case_id]]
                self.pending.put(p, case_id, docs)
        return erased

    async def contact(self, case_id: str) -> dict[str, Any] | None:
        for entries in self.contacts.partitions.values():
            if case_id in entries:
                return entries[case_id]
        return None

    # ------------------------------------------------------------------ pending notifications

    def _docs(self, partition: int, case_key: str) -> list[dict[str, Any]]:
        return list(self.pending.get(partition, case_key) or [])

    def _set_docs(self, partition: int, case_key: str, docs: list[dict[str, Any]]) -> None:
        if docs:
            self.pending.put(partition, case_key, docs)
        else:
            self.pending.delete(partition, case_key)

    def _find(self, case_id: str) -> list[dict[str, Any]]:
        for p in self.pending.partitions:
            docs = self.pending.get(p, case_id)
            if docs:
                return list(docs)
        return []

    async def add_notification(self, doc: dict[str, Any]) -> bool:
        """Add once per notification id; False when it is pending already (a replayed event)."""
        docs = self._docs(doc["partition"], _case_key(doc))
        if any(d["_id"] == doc["_id"] for d in docs):
            return False
        self._set_docs(doc["partition"], _case_key(doc), [*docs, dict(doc)])
        return True

    async def has_waiting(self, case_id: str) -> bool:
        return any(d["status"] == "waiting" for d in self._find(case_id))

    async def waiting_for(self, case_id: str) -> list[dict[str, Any]]:
        return sorted((d for d in self._find(case_id) if d["status"] == "waiting"), key=lambda d: d["created_at"])

    async def count_waiting(self, case_id: str) -> int:
        return len(await self.waiting_for(case_id))

    async def mark_ready(self, doc: dict[str, Any], channel: str, to: str, text: str) -> None:
        self._update(doc, status="ready", channel=channel, to=to, text=text)

    async def set_status(self, doc: dict[str, Any], status: str) -> None:
        """A final status (published, no way to reach the person, expired): the notification leaves the state."""
        docs = self._docs(doc["partition"], _case_key(doc))
        self._set_docs(doc["partition"], _case_key(doc), [d for d in docs if d["_id"] != doc["_id"]])

    def _update(self, doc: dict[str, Any], **fields: Any) -> None:
        docs = self._docs(doc["partition"], _case_key(doc))
        self._set_docs(doc["partition"], _case_key(doc),
                       [{**d, **fields} if d["_id"] == doc["_id"] else d for d in docs])

    def _every(self) -> list[dict[str, Any]]:
        return [d for p in self.pending.partitions for docs in self.pending.of(p).values() for d in docs]

    async def release_held(self, now: datetime) -> int:
        """Held notifications (a staff member's quiet hours) whose time has come become ready."""
        due = [d for d in self._every() if d["status"] == "held" and d["not_before"] <= now]
        for doc in due:
            self._update(doc, status="ready")
        return len(due)

    async def ready(self, partitions: Iterable[int], limit: int = 10000) -> list[dict[str, Any]]:
        wanted = set(partitions)
        return [d for d in self._every() if d["status"] == "ready" and d["partition"] in wanted][:limit]

    async def expire_waiting(self, older_than: datetime) -> int:
        old = [d for d in self._every() if d["status"] == "waiting" and d["created_at"] < older_than]
        for doc in old:
            await self.set_status(doc, "expired")
        return len(old)

    # ------------------------------------------------------------------ hotspots

    async def open_post(self, case_id: str, key: HotspotKey, assigned_at: datetime) -> None:
        await self._send_post(*post_record(case_id, key, assigned_at))

    async def close_post(self, case_id: str) -> None:
        await self._send_post(*post_record(case_id, None))

    async def _send_post(self, key: bytes, value: bytes | None) -> None:
        assert self.send is not None, "hotspot posts are written through the consumer loop"
        await self.send(self.posts.changelog, value, key=key, partition=HOTSPOT_PARTITION)

    def apply_post(self, record: ConsumerRecord) -> None:
        """A record of the hotspot-posts topic, read back by the owner of its partition."""
        if record.key is None:
            return
        value = json.loads(record.value) if record.value else None
        self.posts.remember(record.partition, record.key.decode(), value)

    def _open_posts(self, since: datetime) -> Iterable[tuple[str, HotspotKey, datetime]]:
        for case_id, doc in self.posts.of(HOTSPOT_PARTITION).items():
            at = datetime.fromisoformat(doc["assigned_at"])
            if at > since:
                yield case_id, HotspotKey(doc["category"], doc["county"], doc["township"]), at

    async def busy_places(self, since: datetime, minimum: int) -> list[str]:
        counts: dict[str, int] = {}
        for _, key, _ in self._open_posts(since):
            counts[key.label()] = counts.get(key.label(), 0) + 1
        return sorted(label for label, n in counts.items() if n >= minimum)

    async def open_posts(self, hkey: str, since: datetime) -> tuple[HotspotKey | None, list[tuple[str, datetime]]]:
        rows = [(case_id, key, at) for case_id, key, at in self._open_posts(since) if key.label() == hkey]
        return (rows[0][1] if rows else None), [(case_id, at) for case_id, _, at in rows]
