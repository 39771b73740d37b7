"""The notifier's MongoDB adapter against the real MongoDB-wire server (FerretDB locally)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from services.common.mongo import new_client
from services.notifier.domain import CaseState, HotspotKey
from services.notifier.store import NotifierStore

pytestmark = pytest.mark.integration
T0 = datetime(2026, 9, 7, 2, 0, 0, 123456, tzinfo=UTC)


@pytest.fixture
async def store(mongo_url, run_id):
    client = new_client(mongo_url)
    name = f"wenzheng_notifier_store_{run_id}"
    store = NotifierStore(client[name])
    await store.ensure_indexes()
    yield store
    await client.drop_database(name)
    await client.close()


async def test_case_state_round_trip_keeps_microseconds_for_stable_alert_ids(store):
    state = CaseState(case_id="c1", tracking_number="WZ1", partition=2, version=3, department_id="d",
                      assigned_at=T0, deadline=T0 + timedelta(days=3))
    closed = CaseState(case_id="c2", tracking_number="WZ2", partition=2, closed=True)
    await store.save_cases([state, closed])
    await store.save_cases([state])  # idempotent
    assert await store.load_open_cases([2]) == [state]
    assert await store.load_open_cases([0, 1]) == []


async def test_hotspot_counts_by_place_and_category(store):
    key, other = HotspotKey("urban", "章贡区", "水西镇"), HotspotKey("urban", "章贡区", "沙石镇")
    for i in range(5):
        await store.open_post(f"h{i}", key, T0 + timedelta(hours=i))
    await store.open_post("o1", other, T0)
    await store.open_post("old", key, T0 - timedelta(days=30))
    since = T0 - timedelta(days=7)
    assert await store.busy_places(since, 5) == [key.label()]
    found_key, posts = await store.open_posts(key.label(), since)
    assert found_key == key and sorted(cid for cid, _ in posts) == [f"h{i}" for i in range(5)]
    await store.close_post("h0")
    assert await store.busy_places(since, 5) == []


async def test_notifications_wait_claim_and_expire(store):
    doc = {"_id": "received:c1", "case_id": "c1", "tracking_number": "WZ1", "kind": "received", "partition": 1,
           "variables": {}, "status": "waiting", "created_at": T0, "attempts": 0, "lease_until": None}
    assert await store.add_notification(doc) is True
    assert await store.add_notification(doc) is False
    assert [d["_id"] for d in await store.waiting_for("c1")] == ["received:c1"]
    assert await store.count_waiting("c1") == 1
    await store.mark_ready("received:c1", "sms", "13800138000", "text")
    assert [d["_id"] for d in await store.ready([1])] == ["received:c1"]
    claimed = await store.claim("received:c1", "w1", T0, timedelta(seconds=60))
    assert claimed is not None and claimed["attempts"] == 1
    assert await store.claim("received:c1", "w2", T0 + timedelta(seconds=1), timedelta(seconds=60)) is None
    assert await store.claim("received:c1", "w2", T0 + timedelta(seconds=61), timedelta(seconds=60)) is not None
    await store.set_status("received:c1", "delivered")
    assert await store.claim("received:c1", "w2", T0 + timedelta(days=1), timedelta(seconds=60)) is None
    late = {**doc, "_id": "received:c9", "case_id": "c9"}
    await store.add_notification(late)
    assert await store.expire_waiting(T0 + timedelta(hours=1)) == 1
    assert await store.waiting_for("c9") == []


async def test_a_case_is_marked_while_notifications_wait_for_its_contact(store):
    assert await store.has_waiting("c1") is False
    await store.mark_waiting("c1")
    await store.mark_waiting("c1")
    assert await store.has_waiting("c1") is True and await store.has_waiting("c2") is False
    await store.clear_waiting("c1")
    assert await store.has_waiting("c1") is False


async def test_contacts_are_kept_by_case(store):
    await store.save_contact("c1", {"phone": "13800138000"})
    await store.save_contact("c1", {"phone": "13900139000"})
    assert await store.contact("c1") == {"phone": "13900139000"}
    assert await store.contact("nobody") is None


async def test_held_staff_reminders_become_ready_when_their_quiet_hours_end(store):
    held = {"_id": "staff:unsigned:c1:1:p-1:sms", "case_id": "c1", "tracking_number": "WZ1", "kind": "staff_alert",
            "partition": 0, "variables": {}, "status": "held", "not_before": T0 + timedelta(hours=8),
            "channel": "sms", "to": "13900000000", "text": "【问政提醒】", "created_at": T0, "person_id": "p-1",
            "attempts": 0, "lease_until": None}
    await store.add_notification(held)
    assert await store.release_held(T0 + timedelta(hours=7)) == 0
    assert await store.ready([0]) == []
    assert await store.release_held(T0 + timedelta(hours=8)) == 1
    assert [d["_id"] for d in await store.ready([0])] == [held["_id"]]
