"""The router's MongoDB adapter (database ``wenzheng_router``): recent posts for duplicate detection,
labelled corrections for retraining, and the model versions that routed."""

from __future__ import annotations

from datetime import datetime, timedelta

from pymongo import ASCENDING, DESCENDING
from pymongo.asynchronous.database import AsyncDatabase

from services.common.events import utcnow
from services.router.policies import CaseRouting, RecentPost


class RouterStore:
    def __init__(self, db: AsyncDatabase) -> None:
        self.db = db
        self.posts = db["recent_posts"]
        self.corrections = db["corrections"]
        self.models = db["model_versions"]

    async def ensure_indexes(self) -> None:
        await self.posts.create_index([("poster_ref", ASCENDING), ("submitted_at", DESCENDING)], name="poster_time")
        await self.corrections.create_index([("recorded_at", ASCENDING)], name="recorded_at")

    async def remember_post(self, case: CaseRouting) -> None:
        await self.posts.update_one(
            {"_id": case.case_id},
            {"$setOnInsert": {"poster_ref": case.poster_ref, "text": case.text[:2000],
                              "submitted_at": case.submitted_at, "open": True}},
            upsert=True,
        )

    async def recent_posts(self, poster_ref: str, now: datetime, window: timedelta) -> list[RecentPost]:
        cursor = self.posts.find({"poster_ref": poster_ref, "submitted_at": {"$gte": now - window, "$lte": now}},
                                 limit=50)
        return [RecentPost(d["_id"], d["text"], d["submitted_at"], d.get("open", True)) async for d in cursor]

    async def mark_closed(self, case_id: str) -> None:
        await self.posts.update_one({"_id": case_id}, {"$set": {"open": False}})

    async def record_correction(self, event_id: str, case: CaseRouting, *, label: str | None,
                                department_id: str, kind: str) -> None:
        """A supervisor's reassignment (label = the right category and unit) or a return (the unit was wrong)."""
        await self.corrections.update_one(
            {"_id": event_id},
            {"$setOnInsert": {"case_id": case.case_id, "text": case.text, "label": label,
                              "department_id": department_id, "kind": kind, "county": (case.location.county
                              if case.location else None), "recorded_at": utcnow()}},
            upsert=True,
        )

    async def corrections_for_training(self) -> list[dict]:
        """Reassignments carry a trusted label; returns only say which unit was wrong."""
        return [d async for d in self.corrections.find({"kind": "reassigned", "label": {"$ne": None}})]

    async def record_model(self, version: str) -> None:
        await self.models.update_one({"_id": version}, {"$setOnInsert": {"first_used_at": utcnow()},
                                                        "$set": {"last_started_at": utcnow()}}, upsert=True)
