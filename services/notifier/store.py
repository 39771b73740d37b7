"""MongoDB adapter of the notifier (database ``wenzheng_notifier``, owned by this service only).

Collections: ``cases`` (deadline state per case, with its case-events partition), ``contacts`` (private:
how to reach the poster), ``notifications`` (one document per notification id: waiting for a contact,
ready, delivered, dead), ``waiting_cases`` (one marker per case with notifications waiting for its contact,
so that a contact that arrives looks for them only when there are any), ``hotspot_posts`` (open assigned
posts by category and township, shared by every worker so that a burst spread over partitions is still seen).
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime, timedelta
from typing import Any

from pymongo import ASCENDING, UpdateOne
from pymongo.asynchronous.database import AsyncDatabase

from services.notifier.domain import CaseState, HotspotKey


class NotifierStore:
    def __init__(self, db: AsyncDatabase) -> None:
        self.db = db
        self.cases = db["cases"]
        self.contacts = db["contacts"]
        self.notifications = db["notifications"]
        self.waiting_cases = db["waiting_cases"]
        self.posts = db["hotspot_posts"]

    async def ensure_indexes(self) -> None:
        await self.cases.create_index([("partition", ASCENDING), ("closed", ASCENDING)])
        await self.notifications.create_index([("partition", ASCENDING), ("status", ASCENDING)])
        await self.notifications.create_index([("case_id", ASCENDING), ("status", ASCENDING)])
        await self.posts.create_index([("open", ASCENDING), ("assigned_at", ASCENDING)])

    # ------------------------------------------------------------------ cases

    async def save_cases(self, states: Iterable[CaseState]) -> None:
        ops = [UpdateOne({"_id": s.case_id}, {"$set": s.to_doc()}, upsert=True) for s in states]
        if ops:
            await self.cases.bulk_write(ops, ordered=False)

    async def load_open_cases(self, partitions: Iterable[int]) -> list[CaseState]:
        cursor = self.cases.find({"partition": {"$in": list(partitions)}, "closed": False})
        return [CaseState.from_doc(doc) async for doc in cursor]

    # ------------------------------------------------------------------ contacts (personal data)

    async def save_contact(self, case_id: str, contact: dict[str, Any]) -> None:
        await self.contacts.update_one({"_id": case_id}, {"$set": {"contact": contact}}, upsert=True)

    async def erase_contacts(self, case_ids: list[str]) -> int:
        """The contacts intake erased after their retention period, and the addresses copied into this
        case's notifications (the notifications themselves stay, addressed to nobody)."""
        result = await self.contacts.delete_many({"_id": {"$in": case_ids}})
        await self.notifications.update_many({"case_id": {"$in": case_ids}, "to": {"$ne": None}},
                                             {"$set": {"to": None}})
        return result.deleted_count

    async def contact(self, case_id: str) -> dict[str, Any] | None:
        doc = await self.contacts.find_one({"_id": case_id})
        return doc["contact"] if doc else None

    # ------------------------------------------------------------------ notifications

    async def add_notification(self, doc: dict[str, Any]) -> bool:
        """Insert once per notification id; False when it was already there (a replayed event)."""
        result = await self.notifications.update_one(
            {"_id": doc["_id"]}, {"$setOnInsert": doc}, upsert=True)
        return result.upserted_id is not None

    async def mark_waiting(self, case_id: str) -> None:
        await self.waiting_cases.update_one({"_id": case_id}, {"$set": {"case_id": case_id}}, upsert=True)

    async def has_waiting(self, case_id: str) -> bool:
        return await self.waiting_cases.find_one({"_id": case_id}) is not None

    async def clear_waiting(self, case_id: str) -> None:
        await self.waiting_cases.delete_one({"_id": case_id})

    async def waiting_for(self, case_id: str) -> list[dict[str, Any]]:
        cursor = self.notifications.find({"case_id": case_id, "status": "waiting"}).sort("created_at", ASCENDING)
        return [doc async for doc in cursor]

    async def count_waiting(self, case_id: str) -> int:
        return await self.notifications.count_documents({"case_id": case_id, "status": "waiting"})

    async def mark_ready(self, notification_id: str, channel: str, to: str, text: str) -> None:
        await self.notifications.update_one(
            {"_id": notification_id, "status": "waiting"},
            {"$set": {"status": "ready", "channel": channel, "to": to, "text": text}})

    async def set_status(self, notification_id: str, status: str, **fields: Any) -> None:
        await self.notifications.update_one({"_id": notification_id}, {"$set": {"status": status, **fields}})

    async def release_held(self, now: datetime) -> int:
        """Held notifications (a staff member's quiet hours) whose time has come become ready."""
        result = await self.notifications.update_many({"status": "held", "not_before": {"$lte": now}},
                                                      {"$set": {"status": "ready"}})
        return result.modified_count

    async def ready(self, partitions: Iterable[int], limit: int = 10000) -> list[dict[str, Any]]:
        cursor = self.notifications.find({"partition": {"$in": list(partitions)}, "status": "ready"}).limit(limit)
        return [doc async for doc in cursor]

    async def claim(self, notification_id: str, owner: str, now: datetime, lease: timedelta) -> dict[str, Any] | None:
        """Take the delivery lease: only one worker at a time calls the gateway for a notification."""
        return await self.notifications.find_one_and_update(
            {"_id": notification_id, "status": "ready",
             "$or": [{"lease_until": None}, {"lease_until": {"$lt": now}}, {"owner": owner}]},
            {"$set": {"owner": owner, "lease_until": now + lease}, "$inc": {"attempts": 1}},
            return_document=True)

    async def release(self, notification_id: str) -> None:
        await self.notifications.update_one({"_id": notification_id}, {"$set": {"lease_until": None}})

    async def expire_waiting(self, older_than: datetime) -> int:
        result = await self.notifications.update_many(
            {"status": "waiting", "created_at": {"$lt": older_than}}, {"$set": {"status": "expired"}})
        return result.modified_count

    # ------------------------------------------------------------------ hotspots

    async def open_post(self, case_id: str, key: HotspotKey, assigned_at: datetime) -> None:
        await self.posts.update_one({"_id": case_id}, {"$set": {
            "hkey": key.label(), "category": key.category, "county": key.county, "township": key.township,
            "assigned_at": assigned_at, "open": True}}, upsert=True)

    async def close_post(self, case_id: str) -> None:
        """Forget it: the hotspot scans read the whole collection, so it holds only open posts."""
        await self.posts.delete_one({"_id": case_id})

    async def busy_places(self, since: datetime, minimum: int) -> list[str]:
        pipeline = [{"$match": {"open": True, "assigned_at": {"$gt": since}}},
                    {"$group": {"_id": "$hkey", "n": {"$sum": 1}}},
                    {"$match": {"n": {"$gte": minimum}}}]
        return [doc["_id"] async for doc in await self.posts.aggregate(pipeline)]

    async def open_posts(self, hkey: str, since: datetime) -> tuple[HotspotKey | None, list[tuple[str, datetime]]]:
        key, posts = None, []
        async for doc in self.posts.find({"hkey": hkey, "open": True, "assigned_at": {"$gt": since}}):
            key = HotspotKey(doc["category"], doc["county"], doc["township"])
            posts.append((doc["_id"], doc["assigned_at"]))
        return key, posts
