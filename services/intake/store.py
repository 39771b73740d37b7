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

from pymongo import ASCENDING, DESCENDING
from pymongo.asynchronous.collection import AsyncCollection
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
        # FerretDB's SQLite backend only uses an index for a lookup by _id; everything else scans the table.
        # So the hot paths read by _id: a tracking number and an Idempotency-Key each get a tiny pointer
        # document keyed by themselves, and cases with unpublished events are listed in `outbox_pending`.
        self.by_tracking = db["tracking_numbers"]
        self.by_idempotency_key = db["idempotency_keys"]
        self.pending = db["outbox_pending"]
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

    async def _via_pointer(self, pointers: AsyncCollection, field: str, value: str) -> dict[str, Any] | None:
        pointer = await pointers.find_one({"_id": value})
        if pointer is not None:
            return await self.get(pointer["case_id"])
        # a crash between the case insert and its pointer leaves the pointer missing: find and repair it
        doc = await self.cases.find_one({field: value}, {"outbox": 0})
        if doc is not None:
            await pointers.update_one({"_id": value}, {"$set": {"case_id": doc["_id"]}}, upsert=True)
        return doc

    async def get_by_tracking(self, tracking_number: str) -> dict[str, Any] | None:
        return await self._via_pointer(self.by_tracking, "tracking_number", tracking_number)

    async def get_by_idempotency_key(self, key: str) -> dict[str, Any] | None:
        return await self._via_pointer(self.by_idempotency_key, "idempotency_key", key)

    async def list_cases(self, query: dict[str, Any], *, skip: int, limit: int) -> tuple[list[dict[str, Any]], int]:
        projection = {name: 0 for name in PRIVATE_FIELDS}
        cursor = self.cases.find(query, projection).sort([("created_at", DESCENDING), ("_id", ASCENDING)])
        docs = await cursor.skip(skip).limit(limit).to_list()
        total = await self.cases.count_documents(query)
        return docs, total

    # ------------------------------------------------------------------ writes
    async def insert(self, doc: dict[str, Any]) -> None:
        await self.cases.insert_one(doc)
        await self.by_tracking.update_one({"_id": doc["tracking_number"]}, {"$set": {"case_id": doc["_id"]}},
                                          upsert=True)
        if doc.get("idempotency_key"):
            await self.by_idempotency_key.update_one({"_id": doc["idempotency_key"]},
                                                     {"$set": {"case_id": doc["_id"]}}, upsert=True)
        if doc.get("outbox_count"):
            await self._flag_pending(doc["_id"])

    async def _flag_pending(self, case_id: str) -> None:
        """Written after the case: the relay's list of cases to look at (``seq`` tells it of later events)."""
        await self.pending.update_one({"_id": case_id}, {"$inc": {"seq": 1}}, upsert=True)

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
            if result.modified_count == 1 and outbox:
                await self._flag_pending(case.case_id)
        return result.modified_count == 1

    async def push_outbox(self, case_id: str, entries: list[dict[str, Any]]) -> bool:
        """A message that changes nothing in the case (an SMS status answer) but must not be lost."""
        async with self.locks.holding([case_id]):
            result = await self.cases.update_one(
                {"_id": case_id}, {"$push": {"outbox": {"$each": entries}}, "$inc": {"outbox_count": len(entries)}})
            if result.modified_count == 1:
                await self._flag_pending(case_id)
        return result.modified_count == 1

    # ------------------------------------------------------------------ outbox
    async def pending_outbox(self, limit: int) -> list[dict[str, Any]]:
        """Cases with unpublished events, from the pointer list (each case read by _id)."""
        pointers = await self.pending.find({}).limit(limit).to_list()

        async def load(pointer: dict[str, Any]) -> dict[str, Any] | None:
            doc = await self.cases.find_one({"_id": pointer["_id"]}, {"outbox": 1, "outbox_count": 1})
            if doc is None or not doc.get("outbox_count"):
                await self.pending.delete_one({"_id": pointer["_id"], "seq": pointer["seq"]})
                return None
            return {**doc, "pending_seq": pointer["seq"]}

        return [doc for doc in await asyncio.gather(*(load(p) for p in pointers)) if doc is not None]

    async def sweep_unflagged(self) -> int:
        """The safety net: flag every case whose outbox is not empty (a full scan; at start and now and then).
        Catches a crash between a case write and its pointer."""
        flagged = 0
        async for doc in self.cases.find({"outbox_count": {"$gt": 0}}, {"_id": 1}):
            await self.pending.update_one({"_id": doc["_id"]}, {"$setOnInsert": {"seq": 0}}, upsert=True)
            flagged += 1
        return flagged

    async def mark_published(self, published: dict[str, list[dict[str, Any]]],
                             seen_seq: dict[str, int] | None = None) -> None:
        """Remove exactly the published entries, then the pointer unless new events arrived meanwhile."""
        if not published:
            return
        seen_seq = seen_seq or {}
        async with self.locks.holding(published):
            for case_id, entries in published.items():
                result = await self.cases.update_one({"_id": case_id, "outbox_count": len(entries)},
                                                     {"$set": {"outbox": [], "outbox_count": 0}})
                if result.matched_count == 0:
                    doc = await self.cases.find_one({"_id": case_id}, {"outbox": 1})
                    sent = {entry["id"] for entry in entries}
                    still_there = [e for e in (doc or {}).get("outbox") or [] if e["id"] in sent]
                    if still_there:
                        await self.cases.update_one({"_id": case_id}, {"$pullAll": {"outbox": still_there},
                                                                       "$inc": {"outbox_count": -len(still_there)}})
                if case_id in seen_seq:
                    await self.pending.delete_one({"_id": case_id, "seq": seen_seq[case_id]})

    async def outbox_backlog(self) -> int:
        """Unpublished events, summed over the cases on the pointer list (each read by _id)."""
        docs = await self.pending_outbox(limit=0)
        return sum(int(doc.get("outbox_count", 0)) for doc in docs)

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
