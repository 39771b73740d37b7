"""MongoDB adapter: the case documents, their outbox, and the relay's lease.

Writes to one case are also serialised inside the process (:class:`CaseLocks`): the local FerretDB
(SQLite backend) applies ``update_one`` as an unlocked read-modify-write, so two concurrent updates of one
document can lose one of them even with the version filter (measured: 400 concurrent ``$inc`` on one
document left 15). MongoDB does not need the lock; FerretDB needs it, and one intake process.

A case document holds the case (the domain fields), its public record (replies, timeline), the poster's
contact (private, never served), and ``outbox``: events accepted but not yet published. Every command is
ONE ``update_one`` filtered on ``{_id, version}``: the new fields, the new events pushed into the outbox
and ``outbox_count`` incremented, all or nothing. FerretDB has no transactions; it does not need them here.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import weakref
from collections.abc import AsyncIterator, Iterable
from datetime import datetime, timedelta
from typing import Any

from pymongo import ASCENDING, DESCENDING, UpdateOne
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import DuplicateKeyError

from services.common.events import CaseStatus, PostKind, Rating
from services.intake.domain import Case, PendingExtension

DuplicateKey = DuplicateKeyError
_CASE_FIELDS = [f.name for f in dataclasses.fields(Case) if f.name != "case_id"]
PRIVATE_FIELDS = ("contact", "outbox", "idempotency_key", "idempotency_fingerprint", "applied_decisions",
                  "phone_last4")


def case_to_fields(case: Case) -> dict[str, Any]:
    """The domain fields as they are stored (enums as strings, tuples as lists)."""
    out: dict[str, Any] = {}
    for name in _CASE_FIELDS:
        value = getattr(case, name)
        if isinstance(value, PendingExtension):
            value = dataclasses.asdict(value)
        elif isinstance(value, tuple):
            value = list(value)
        elif isinstance(value, CaseStatus | PostKind | Rating):
            value = value.value
        out[name] = value
    return out


def case_from_doc(doc: dict[str, Any]) -> Case:
    pending = doc.get("pending_extension")
    values: dict[str, Any] = {name: doc[name] for name in _CASE_FIELDS if name in doc}
    values.update(
        status=CaseStatus(doc["status"]),
        kind=PostKind(doc.get("kind") or PostKind.COMPLAINT),
        rating=Rating(doc["rating"]) if doc.get("rating") else None,
        pending_extension=PendingExtension(**pending) if pending else None,
        tried_departments=tuple(doc.get("tried_departments") or ()),
        applied_decisions=tuple(doc.get("applied_decisions") or ()),
    )
    return Case(case_id=doc["_id"], **values)


class CaseLocks:
    """One asyncio lock per case id, forgotten when nobody holds or waits for it."""

    def __init__(self) -> None:
        self._locks: weakref.WeakValueDictionary[str, asyncio.Lock] = weakref.WeakValueDictionary()

    def lock(self, case_id: str) -> asyncio.Lock:
        lock = self._locks.get(case_id)
        if lock is None:
            lock = self._locks[case_id] = asyncio.Lock()
        return lock

    @contextlib.asynccontextmanager
    async def holding(self, case_ids: Iterable[str]) -> AsyncIterator[None]:
        locks = [self.lock(case_id) for case_id in sorted(set(case_ids))]  # sorted: no deadlock
        async with contextlib.AsyncExitStack() as stack:
            for lock in locks:
                await stack.enter_async_context(lock)
            yield


class CaseStore:
    def __init__(self, db: AsyncDatabase) -> None:
        self.db = db
        self.cases = db["cases"]
        self.leases = db["leases"]
        self.locks = CaseLocks()

    async def ensure_indexes(self) -> None:
        await self.cases.create_index("tracking_number", unique=True)
        await self.cases.create_index("idempotency_key", unique=True)
        await self.cases.create_index("outbox_count")
        await self.cases.create_index([("department_id", ASCENDING), ("status", ASCENDING)])
        await self.cases.create_index("status")

    # ------------------------------------------------------------------ reads
    async def get(self, case_id: str) -> dict[str, Any] | None:
        return await self.cases.find_one({"_id": case_id}, {"outbox": 0})

    async def get_by_tracking(self, tracking_number: str) -> dict[str, Any] | None:
        return await self.cases.find_one({"tracking_number": tracking_number}, {"outbox": 0})

    async def get_by_idempotency_key(self, key: str) -> dict[str, Any] | None:
        return await self.cases.find_one({"idempotency_key": key}, {"outbox": 0})

    async def list_cases(self, query: dict[str, Any], *, skip: int, limit: int) -> tuple[list[dict[str, Any]], int]:
        projection = {name: 0 for name in PRIVATE_FIELDS}
        cursor = self.cases.find(query, projection).sort([("created_at", DESCENDING), ("_id", ASCENDING)])
        docs = await cursor.skip(skip).limit(limit).to_list()
        total = await self.cases.count_documents(query)
        return docs, total

    # ------------------------------------------------------------------ writes
    async def insert(self, doc: dict[str, Any]) -> None:
        await self.cases.insert_one(doc)

    async def commit(self, case: Case, expected_version: int, *, outbox: list[dict[str, Any]],
                     timeline: list[dict[str, Any]], replies: list[dict[str, Any]], now: datetime) -> bool:
        """The one write of a command: fields + events, only if nobody changed the case meanwhile."""
        update: dict[str, Any] = {
            "$set": {**case_to_fields(case), "updated_at": now},
            "$push": {"outbox": {"$each": outbox}, "timeline": {"$each": timeline}},
            "$inc": {"outbox_count": len(outbox)},
        }
        if replies:
            update["$push"]["replies"] = {"$each": replies}
        async with self.locks.holding([case.case_id]):
            result = await self.cases.update_one({"_id": case.case_id, "version": expected_version}, update)
        return result.modified_count == 1

    async def push_outbox(self, case_id: str, entries: list[dict[str, Any]]) -> bool:
        """A message that changes nothing in the case (an SMS status answer) but must not be lost."""
        async with self.locks.holding([case_id]):
            result = await self.cases.update_one(
                {"_id": case_id}, {"$push": {"outbox": {"$each": entries}}, "$inc": {"outbox_count": len(entries)}})
        return result.modified_count == 1

    # ------------------------------------------------------------------ outbox
    async def pending_outbox(self, limit: int) -> list[dict[str, Any]]:
        cursor = self.cases.find({"outbox_count": {"$gt": 0}}, {"outbox": 1, "outbox_count": 1}).limit(limit)
        return await cursor.to_list()

    async def mark_published(self, published: dict[str, list[dict[str, Any]]]) -> None:
        """Remove exactly the published entries.

        Fast path: one ``update_many`` per outbox size, clearing the outboxes whose count did not change
        since the relay read them (only commands add entries, only the relay removes them). FerretDB scans
        the collection for every update, so one update per batch instead of one per case matters. Cases that
        got new events meanwhile lose just the published entries ($pullAll by value).
        """
        if not published:
            return
        async with self.locks.holding(published):
            by_count: dict[int, list[str]] = {}
            for case_id, entries in published.items():
                by_count.setdefault(len(entries), []).append(case_id)
            changed: list[str] = []
            for count, ids in by_count.items():
                result = await self.cases.update_many({"_id": {"$in": ids}, "outbox_count": count},
                                                      {"$set": {"outbox": [], "outbox_count": 0}})
                if result.matched_count < len(ids):
                    changed.extend(ids)
            if not changed:
                return
            updates = []
            for doc in await self.cases.find({"_id": {"$in": changed}}, {"outbox": 1}).to_list():
                sent = {entry["id"] for entry in published[doc["_id"]]}
                still_there = [entry for entry in doc.get("outbox") or [] if entry["id"] in sent]
                if still_there:
                    updates.append(UpdateOne({"_id": doc["_id"]}, {"$pullAll": {"outbox": still_there},
                                                                   "$inc": {"outbox_count": -len(still_there)}}))
            if updates:
                await self.cases.bulk_write(updates, ordered=False)

    async def outbox_backlog(self) -> int:
        cursor = await self.cases.aggregate([
            {"$match": {"outbox_count": {"$gt": 0}}},
            {"$group": {"_id": None, "n": {"$sum": "$outbox_count"}}},
        ])
        rows = await cursor.to_list()
        return int(rows[0]["n"]) if rows else 0

    async def acquire_lease(self, name: str, owner: str, now: datetime, seconds: float) -> bool:
        """One relay per deployment publishes (keeps per-case order across replicas)."""
        try:
            await self.leases.update_one(
                {"_id": name, "$or": [{"owner": owner}, {"expires_at": {"$lt": now}}]},
                {"$set": {"owner": owner, "expires_at": now + timedelta(seconds=seconds)}},
                upsert=True,
            )
            return True
        except DuplicateKeyError:
            return False

    async def release_lease(self, name: str, owner: str) -> None:
        await self.leases.delete_one({"_id": name, "owner": owner})
