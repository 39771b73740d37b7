"""MongoDB adapter: the case documents, their lookup pointers, and the relay's lease.

Writes to one case are also serialised inside the process (:class:`CaseLocks`): the local FerretDB
(SQLite backend) applies ``update_one`` as an unlocked read-modify-write, so two concurrent updates of one
document can lose one of them even with the version filter (measured: 400 concurrent ``$inc`` on one
document left 15). MongoDB does not need the lock; FerretDB needs it, and one intake process.

A case document holds the case (the domain fields), its public record (replies, timeline) and the poster's
contact (private, never served). Every command is one update filtered on ``{_id, version}``, and its events
go with it through the outbox (:mod:`services.intake.outbox`): the commands of concurrent requests are
stored together, as one bulk write, with one intent and one done marker for the whole group.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import weakref
from collections.abc import AsyncIterator, Iterable
from datetime import date, datetime, timedelta
from typing import Any

from pymongo import ASCENDING, DESCENDING
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import DuplicateKeyError

from services.common.events import CaseStatus, NoticeMethod, PostKind, Rating
from services.common.mongo import id_chunks
from services.intake.case_index import SUMMARY_PROJECTION, CaseIndex, summary_from_doc
from services.intake.domain import Callback, Case, Notice, PendingExtension, PendingReply
from services.intake.outbox import GroupRead, OutboxLog, OutboxWriter, Write, insert_each, new_writer_id

DuplicateKey = DuplicateKeyError
_CASE_FIELDS = [f.name for f in dataclasses.fields(Case) if f.name != "case_id"]
PRIVATE_FIELDS = ("contact", "write_refs", "outbox", "idempotency_key", "idempotency_fingerprint", "applied_decisions",
                  "phone_last4", "original", "poster_ref")
# Reading a case for a list or the public board: never the outbox, the contact or the timeline's bulk
LIST_PROJECTION = {name: 0 for name in PRIVATE_FIELDS}


def _stored(value: Any) -> Any:
    """A domain value as BSON can hold it (enums as strings, days as ISO strings, records as documents)."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _stored(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, tuple | list):
        return [_stored(v) for v in value]
    if isinstance(value, CaseStatus | PostKind | Rating | NoticeMethod):
        return value.value
    if isinstance(value, date) and not isinstance(value, datetime):
        return value.isoformat()
    return value


def case_to_fields(case: Case) -> dict[str, Any]:
    """The domain fields as they are stored, plus what queries need derived from them."""
    out = {name: _stored(getattr(case, name)) for name in _CASE_FIELDS}
    # GET /v1/notices asks by unit and by "any": plain fields, not queries into the array of notices
    out["open_notice_units"] = case.open_notice_units()
    out["notice_units"] = sorted({n.department_id for n in case.notices})
    out["open_notice_count"] = len([n for n in case.notices if n.open])
    out["notice_count"] = len(case.notices)
    return out


def _notice(raw: dict[str, Any]) -> Notice:
    return Notice(**{**raw, "method": NoticeMethod(raw["method"]), "reply_by": date.fromisoformat(raw["reply_by"])})


def _callback(raw: dict[str, Any]) -> Callback:
    return Callback(**{**raw, "rating": Rating(raw["rating"]) if raw.get("rating") else None})


def case_from_doc(doc: dict[str, Any]) -> Case:
    pending = doc.get("pending_extension")
    pending_reply = doc.get("pending_reply")
    values: dict[str, Any] = {name: doc[name] for name in _CASE_FIELDS if name in doc}
    values.update(
        status=CaseStatus(doc["status"]),
        kind=PostKind(doc.get("kind") or PostKind.COMPLAINT),
        rating=Rating(doc["rating"]) if doc.get("rating") else None,
        pending_extension=PendingExtension(**pending) if pending else None,
        pending_reply=PendingReply(**pending_reply) if pending_reply else None,
        tried_departments=tuple(doc.get("tried_departments") or ()),
        applied_decisions=tuple(doc.get("applied_decisions") or ()),
        notices=tuple(_notice(n) for n in doc.get("notices") or ()),
        callbacks=tuple(_callback(c) for c in doc.get("callbacks") or ()),
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
    def __init__(self, db: AsyncDatabase, outbox: OutboxWriter | None = None) -> None:
        self.db = db
        self.cases = db["cases"]
        self.leases = db["leases"]
        # FerretDB's SQLite backend only uses an index for a lookup by _id; everything else scans the table.
        # So the hot paths read by _id: a tracking number and an Idempotency-Key each get a tiny pointer
        # document keyed by themselves.
        self.by_tracking = db["tracking_numbers"]
        self.by_idempotency_key = db["idempotency_keys"]
        self.attachments = db["attachments"]  # metadata; the bytes are in the AttachmentStore
        self.locks = CaseLocks()
        self.outbox = outbox or OutboxWriter(db, new_writer_id())
        self.outbox_log = OutboxLog(db)
        self.reads = GroupRead(self.cases, {"write_refs": 0, "outbox": 0})
        # the lists' read model: loaded at start (load_index), then put after every write that succeeds
        self.index = CaseIndex()

    async def ensure_indexes(self) -> None:
        await self.cases.create_index("tracking_number", unique=True)
        await self.cases.create_index("idempotency_key", unique=True)
        await self.cases.create_index([("department_id", ASCENDING), ("status", ASCENDING)])
        await self.cases.create_index("status")
        # staff lists, the public board and open notices (MongoDB uses these; FerretDB's SQLite backend
        # only indexes _id and scans for the rest, see README "Measured here")
        await self.cases.create_index([("department_id", ASCENDING), ("created_at", DESCENDING)])
        await self.cases.create_index([("publishable", ASCENDING), ("created_at", DESCENDING)])
        await self.cases.create_index([("publishable", ASCENDING), ("county", ASCENDING), ("created_at", DESCENDING)])
        await self.cases.create_index("open_notice_units")
        await self.attachments.create_index("case_id")

    # ------------------------------------------------------------------ reads
    async def get(self, case_id: str) -> dict[str, Any] | None:
        """A case by id; concurrent lookups share one ``$in`` read."""
        return await self.reads.get(case_id)

    async def _via_pointer(self, pointers: AsyncCollection, field: str, value: str) -> dict[str, Any] | None:
        pointer = await pointers.find_one({"_id": value})
        if pointer is not None:
            return await self.get(pointer["case_id"])
        # a crash between the case insert and its pointer leaves the pointer missing: find and repair it
        doc = await self.cases.find_one({field: value}, {"write_refs": 0, "outbox": 0})
        if doc is not None:
            await pointers.update_one({"_id": value}, {"$set": {"case_id": doc["_id"]}}, upsert=True)
        return doc

    async def get_by_tracking(self, tracking_number: str) -> dict[str, Any] | None:
        return await self._via_pointer(self.by_tracking, "tracking_number", tracking_number)

    async def get_by_idempotency_key(self, key: str) -> dict[str, Any] | None:
        return await self._via_pointer(self.by_idempotency_key, "idempotency_key", key)

    async def list_cases(self, query: dict[str, Any], *, skip: int, limit: int,
                         projection: dict[str, Any] | None = None) -> tuple[list[dict[str, Any]], int]:
        cursor = self.cases.find(query, projection or LIST_PROJECTION).sort([("created_at", DESCENDING),
                                                                              ("_id", ASCENDING)])
        docs = await cursor.skip(skip).limit(limit).to_list()
        total = await self.cases.count_documents(query)
        return docs, total

    async def get_many(self, ids: list[str], projection: dict[str, Any] | None = None) -> list[dict[str, Any]]:
        """The cases with these ids (read by _id, which every server indexes), in the order of ``ids``."""
        found: dict[str, dict[str, Any]] = {}
        for part in id_chunks(ids):
            for doc in await self.cases.find({"_id": {"$in": part}}, projection or LIST_PROJECTION).to_list():
                found[doc["_id"]] = doc
        return [found[i] for i in ids if i in found]

    # ------------------------------------------------------------------ the lists' index
    async def load_index(self, batch_size: int = 5000) -> int:
        """Every case's summary, in one projected scan read in batches; returns how many."""
        index = CaseIndex()
        batch: list[Any] = []
        async for doc in self.cases.find({}, SUMMARY_PROJECTION, batch_size=batch_size):
            batch.append(summary_from_doc(doc))
            if len(batch) >= batch_size:
                index.put_many(batch)
                batch = []
        index.put_many(batch)
        # writes made while the scan ran are already in the old index: keep the newer of each
        index.put_many(self.index.summaries())
        self.index = index
        return len(index)

    async def refresh_index(self, case_ids: list[str]) -> int:
        """Read these cases again (another replica changed them) and put them; returns how many moved on."""
        moved = 0
        for part in id_chunks(case_ids):
            for doc in await self.cases.find({"_id": {"$in": part}}, SUMMARY_PROJECTION).to_list():
                moved += self.index.put(summary_from_doc(doc))
        return moved

    # ------------------------------------------------------------------ attachments' metadata
    async def insert_attachment(self, meta: dict[str, Any]) -> None:
        await self.attachments.insert_one(meta)

    async def get_attachments(self, ids: list[str]) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        for part in id_chunks(ids):
            out += await self.attachments.find({"_id": {"$in": part}}).to_list()
        return out

    async def claim_attachments(self, ids: list[str], case_id: str) -> int:
        """Attach unused uploads to a case; returns how many were still unused (the rest were taken)."""
        if not ids:
            return 0
        result = await self.attachments.update_many({"_id": {"$in": ids}, "case_id": None},
                                                    {"$set": {"case_id": case_id}})
        return result.modified_count

    # ------------------------------------------------------------------ writes
    async def insert(self, doc: dict[str, Any], events: list[dict[str, Any]]) -> None:
        """Store a new case, its events and its pointers; raises DuplicateKeyError like insert_one. Posts that
        arrive together are stored together (one intent, one ``insert_many``, one done marker)."""
        pointers = [("tracking_numbers", {"_id": doc["tracking_number"], "case_id": doc["_id"]})]
        key = doc.get("idempotency_key")
        if key and not key.startswith("auto:"):
            pointers.append(("idempotency_keys", {"_id": key, "case_id": doc["_id"]}))
        await self.outbox.write(Write(events, holder="cases", doc_id=doc["_id"], insert=doc, pointers=pointers))
        self.index.put(summary_from_doc(doc))

    async def insert_batch(self, docs: list[dict[str, Any]]) -> dict[int, Exception]:
        """Cases that emit no events (a benchmark's or an import's past cases), then their pointers; the
        errors by index in ``docs``."""
        errors = await insert_each(self.cases, docs)
        stored = [doc for index, doc in enumerate(docs) if index not in errors]
        for doc in stored:
            self.index.put(summary_from_doc(doc))
        await asyncio.gather(
            insert_each(self.by_tracking, [{"_id": d["tracking_number"], "case_id": d["_id"]} for d in stored]),
            insert_each(self.by_idempotency_key, [{"_id": d["idempotency_key"], "case_id": d["_id"]} for d in stored
                                                  if not str(d.get("idempotency_key", "auto:")).startswith("auto:")]))
        return errors

    async def commit(self, case: Case, expected_version: int, *, outbox: list[dict[str, Any]],
                     timeline: list[dict[str, Any]], replies: list[dict[str, Any]], now: datetime,
                     also_set: dict[str, Any] | None = None) -> bool:
        """The one write of a command: fields + events, only if nobody changed the case meanwhile."""
        update: dict[str, Any] = {
            "$set": {**case_to_fields(case), "updated_at": now, **(also_set or {})},
            "$push": {"timeline": {"$each": timeline}},
        }
        if replies:
            update["$push"]["replies"] = {"$each": replies}
        async with self.locks.holding([case.case_id]):
            stored = await self.outbox.write(Write(outbox, holder="cases", doc_id=case.case_id,
                                                   guard={"_id": case.case_id, "version": expected_version},
                                                   update=update))
            if stored:
                await self._index_commit(case.case_id, update["$set"])
        return stored

    async def _index_commit(self, case_id: str, fields: dict[str, Any]) -> None:
        """A command's fields on top of the case's summary (its texts stay unless moderated)."""
        previous = self.index.get(case_id)
        if previous is None:  # created on another replica, not followed yet: read it whole
            await self.refresh_index([case_id])
        else:
            self.index.put(summary_from_doc({"_id": case_id, **fields}, previous))

    async def push_outbox(self, entries: list[dict[str, Any]]) -> None:
        """Messages that change no document (an SMS status answer) but must not be lost."""
        await self.outbox.write(Write(entries))

    # ------------------------------------------------------------------ outbox
    async def migrate_legacy_outboxes(self, batch: int = 500) -> int:
        """Events a deployment from before the outbox collection left inside case and person documents
        (``outbox``, listed in ``outbox_pending``): moved into the outbox as messages, then emptied. Runs when
        the relay takes the lease; a crash in between publishes them twice (consumers dedupe by event id)."""
        moved = 0
        pending = self.db["outbox_pending"]
        while pointers := await pending.find({}).limit(batch).to_list():
            ids = [p["_id"] for p in pointers]
            for collection in (self.cases, self.db["people"]):
                async with self.locks.holding(ids):
                    docs = await collection.find({"_id": {"$in": ids}, "outbox_count": {"$gt": 0}},
                                                 {"outbox": 1}).to_list()
                    entries = [e for doc in docs for e in doc.get("outbox") or [] if isinstance(e, dict)]
                    if entries:
                        await self.outbox.write(Write(entries))  # one group of messages, stored before emptying
                        moved += len(entries)
                    for doc in docs:
                        await collection.update_one({"_id": doc["_id"]}, {"$set": {"outbox": [], "outbox_count": 0}})
            await pending.delete_many({"_id": {"$in": ids}})
        return moved

    async def outbox_backlog(self) -> int:
        """Unpublished events of every writer (for tests and operators: reads the whole unpublished outbox)."""
        return await self.outbox_log.backlog()

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
