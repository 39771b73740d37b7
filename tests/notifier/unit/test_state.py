"""The notifier's Kafka-held state (store.py) without a broker: what a batch changes is what the changelog
gets, and a state loaded back from those records is the same (instants to the microsecond, for stable
alert ids); notifications wait under their case; hotspot posts are counted by place."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from harness.records import consumer_record
from services.common.consumer import KeyedState
from services.common.events import Alert, AlertKind, Audience, CaseContact, make_event
from services.notifier.domain import CaseState, HotspotKey
from services.notifier.store import HOTSPOT_PARTITION, NotifierState

T0 = datetime(2026, 9, 7, 2, 0, 0, 123456, tzinfo=UTC)


def restored(state: KeyedState) -> KeyedState:
    """A fresh state loaded from the changelog records ``state`` owes: what a restarted worker would hold."""
    again = KeyedState(state.changelog, encode=state.encode, decode=state.decode)
    changes = state.changes()
    for partition in {p for p, _, _ in changes}:
        again.load(partition, [consumer_record(state.changelog, p, i, key.encode(), value)
                               for i, (p, key, value) in enumerate(changes) if p == partition])
    return again


class Outputs:
    def __init__(self) -> None:
        self.sent: list[tuple[str, bytes | None, bytes, int]] = []

    async def __call__(self, topic: str, value: bytes | None, *, key: bytes, partition: int) -> None:
        self.sent.append((topic, value, key, partition))


def new_state() -> tuple[NotifierState, Outputs]:
    outputs = Outputs()
    return NotifierState("notifier-test", "contacts", send=outputs), outputs


async def test_case_state_round_trip_keeps_microseconds_and_a_closed_case_leaves():
    state, _ = new_state()
    open_case = CaseState(case_id="c1", tracking_number="WZ1", partition=2, version=3, department_id="d",
                          assigned_at=T0, deadline=T0 + timedelta(days=3))
    await state.save_cases([open_case, CaseState(case_id="c2", tracking_number="WZ2", partition=2)])
    await state.save_cases([CaseState(case_id="c2", tracking_number="WZ2", partition=2, closed=True)])
    state.cases = restored(state.cases)
    assert await state.load_open_cases([2]) == [open_case]
    assert await state.load_open_cases([0, 1]) == []


async def test_published_alerts_are_kept_per_case_and_the_last_hotspot_per_place():
    state, _ = new_state()
    for kind in (AlertKind.UNSIGNED, AlertKind.OVERDUE):
        await state.alert_published(1, Alert(alert_id=f"{kind.value}:c1", kind=kind, case_id="c1", message="m",
                                             audience=[Audience.SUPERVISORS], raised_at=T0))
    for day in (0, 8):
        await state.alert_published(HOTSPOT_PARTITION, Alert(
            alert_id=f"hotspot:u:章贡区:水西镇:{day}", kind=AlertKind.HOTSPOT, category="u", county="章贡区",
            township="水西镇", message="m", audience=[Audience.SUPERVISORS], raised_at=T0 + timedelta(days=day)))
    state.published = restored(state.published)
    assert [a["alert_id"] for a in state.published_for(1)] == ["unsigned:c1", "overdue:c1"]
    await state.save_cases([CaseState(case_id="c1", tracking_number="WZ1", partition=1, closed=True)])
    assert state.published_for(1) == []
    assert [a["alert_id"] for a in state.published_for(HOTSPOT_PARTITION) if a["kind"] == "hotspot"] == [
        "hotspot:u:章贡区:水西镇:8"]


async def test_notifications_wait_under_their_case_are_released_and_expire():
    state, _ = new_state()
    doc = {"_id": "received:c1", "case_id": "c1", "tracking_number": "WZ1", "kind": "received", "partition": 1,
           "variables": {}, "status": "waiting", "created_at": T0}
    assert await state.add_notification(doc) is True
    assert await state.add_notification(doc) is False
    assert await state.has_waiting("c1") and not await state.has_waiting("c2")
    state.pending = restored(state.pending)
    assert [d["_id"] for d in await state.waiting_for("c1")] == ["received:c1"]
    assert (await state.waiting_for("c1"))[0]["created_at"] == T0
    assert await state.count_waiting("c1") == 1
    await state.mark_ready(doc, "sms", "13800138000", "text")
    assert [d["_id"] for d in await state.ready([1])] == ["received:c1"]
    await state.set_status(doc, "published")
    assert await state.ready([1]) == [] and state.pending.of(1) == {}
    late = {**doc, "_id": "received:c9", "case_id": "c9"}
    await state.add_notification(late)
    assert await state.expire_waiting(T0 + timedelta(hours=1)) == 1
    assert await state.waiting_for("c9") == []


async def test_held_staff_reminders_become_ready_when_their_quiet_hours_end():
    state, _ = new_state()
    held = {"_id": "staff:unsigned:c1:1:p-1:sms", "case_id": "c1", "tracking_number": "WZ1", "kind": "staff_alert",
            "partition": 0, "variables": {}, "status": "held", "not_before": T0 + timedelta(hours=8),
            "channel": "sms", "to": "13900000000", "text": "【问政提醒】", "created_at": T0, "person_id": "p-1"}
    await state.add_notification(held)
    state.pending = restored(state.pending)
    assert await state.release_held(T0 + timedelta(hours=7)) == 0
    assert await state.ready([0]) == []
    assert await state.release_held(T0 + timedelta(hours=8)) == 1
    assert [d["_id"] for d in await state.ready([0])] == [held["_id"]]


async def test_contacts_are_kept_by_case_without_a_copy_and_erased_with_the_addresses():
    state, outputs = new_state()
    await state.save_contact("c1", {"phone": "13800138000"}, 1)
    await state.save_contact("c1", {"phone": "13900139000"}, 1)
    assert await state.contact("c1") == {"phone": "13900139000"}
    assert await state.contact("nobody") is None
    await state.add_notification({"_id": "replied:c1:1", "case_id": "c1", "partition": 1, "status": "ready",
                                  "to": "13900139000", "created_at": T0})
    assert state.contacts.changes() == [] and outputs.sent == []  # its changelog is the contacts topic itself
    assert await state.erase_contacts(["c1"]) == 1
    assert await state.contact("c1") is None
    assert [d["to"] for d in await state.ready([1])] == [None]


async def test_hotspot_posts_go_to_partition_0_and_are_counted_by_place():
    state, outputs = new_state()
    key, other = HotspotKey("urban", "章贡区", "水西镇"), HotspotKey("urban", "章贡区", "沙石镇")
    for i in range(5):
        await state.open_post(f"h{i}", key, T0 + timedelta(hours=i))
    await state.open_post("o1", other, T0)
    await state.open_post("old", key, T0 - timedelta(days=30))
    await state.close_post("h0")
    assert {(topic, partition) for topic, _, _, partition in outputs.sent} == {(state.posts.changelog, 0)}
    since = T0 - timedelta(days=7)
    for i, (topic, value, key_bytes, partition) in enumerate(outputs.sent[:-1]):
        state.apply_post(consumer_record(topic, partition, i, key_bytes, value))
    assert await state.busy_places(since, 5) == [key.label()]
    found_key, posts = await state.open_posts(key.label(), since)
    assert found_key == key and sorted(cid for cid, _ in posts) == [f"h{i}" for i in range(5)]
    topic, value, key_bytes, partition = outputs.sent[-1]
    state.apply_post(consumer_record(topic, partition, 99, key_bytes, value))  # the tombstone of h0
    assert await state.busy_places(since, 5) == []


def test_contacts_restored_from_the_contacts_topic_are_the_events_data_and_bad_records_are_left_out():
    state, _ = new_state()
    contact = CaseContact(case_id="c1", tracking_number="WZ1", phone="13800138000", recorded_at=T0)
    raw = make_event(contact, source="/intake").to_json()
    state.contacts.load(2, [consumer_record("contacts", 2, 0, b"c1", raw),
                            consumer_record("contacts", 2, 1, b"c2", b"{not json"),
                            consumer_record("contacts", 2, 2, b"c3", raw),
                            consumer_record("contacts", 2, 3, b"c3", None)])
    assert state.contacts.of(2) == {"c1": contact.model_dump(mode="json")}
