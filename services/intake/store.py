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
from datetime import date, datetime, timedelta
from typing import Any

from pymongo import ASCENDING, DESCENDING, DeleteOne, UpdateOne
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import BulkWriteError, DuplicateKeyError

from services.common.events import CaseStatus, NoticeMethod, PostKind, Rating
from services.common.mongo import DUPLICATE_KEY, id_chunks, upsert_one
from services.intake.case_index import SUMMARY_PROJECTION, CaseIndex, summary_from_doc
from services.intake.domain import Callback, Case, Notice, PendingExtension, PendingReply

DuplicateKey = DuplicateKeyError
_CASE_FIELDS = [f.name for f in dataclasses.fields(Case) if f.name != "case_id"]
PRIVATE_FIELDS = ("contact", "outbox", "idempotency_key", "idempotency_fingerprint", "applied_decisions",
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


async def insert_each(collection: AsyncCollection, docs: list[dict[str, Any]]) -> dict[int, Exception]:
    """``insert_many`` that does not stop at the first bad document: the errors by index in ``docs``
    (a duplicate key as :class:`DuplicateKeyError`). Anything else, like a lost connection, raises."""
    if not docs:
        return {}
    try:
        await collection.insert_many(docs, ordered=False)
    except BulkWriteError as exc:
        errors = exc.details.get("writeErrors") or []
        if exc.details.get("writeConcernErrors") or not errors:
            raise
        return {error["index"]: (DuplicateKeyError if error.get("code") == DUPLICATE_KEY else BulkWriteError)(
                    error.get("errmsg", "write error"), error.get("code"), error) for error in errors}
    return {}


class GroupCommit:
    """New cases that arrive together are written together: one ``insert_many`` for the cases and one for
    each pointer collection, instead of four round trips per post. A batch is whatever queued while the
    previous one was being written, so a lone post waits for nobody, and under load each write carries
    many posts. Each caller still learns its own outcome (a duplicate tracking number or Idempotency-Key
    fails only that post)."""

    def __init__(self, store: CaseStore, max_batch: int = 256) -> None:
        self.store = store
        self.max_batch = max_batch
        self._queue: list[tuple[dict[str, Any], asyncio.Future[None]]] = []
        self._flusher: asyncio.Task[None] | None = None

    async def insert(self, doc: dict[str, Any]) -> None:
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._queue.append((doc, done))
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.create_task(self._flush_all(), name="intake-group-commit")
        await done

    async def _flush_all(self) -> None:
        while self._queue:
            batch, self._queue = self._queue[:self.max_batch], self._queue[self.max_batch:]
            try:
                errors = await self.store.insert_batch([doc for doc, _ in batch])
            except Exception as exc:  # the database is unreachable: every post of the batch fails alike
                errors = dict.fromkeys(range(len(batch)), exc)
            except BaseException:  # shutting down: nobody may wait forever
                for _, done in batch + self._queue:
                    if not done.done():
                        done.set_exception(RuntimeError("intake is shutting down"))
                self._queue = []
                raise
            for index, (_, done) in enumerate(batch):
                if done.done():  # the caller went away (client disconnected)
                    continue
                if index in errors:
                    done.set_exception(errors[index])
                else:
                    done.set_result(None)


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
        self.attachments = db["attachments"]  # metadata; the bytes are in the AttachmentStore
        self.people = db["people"]  # a person's outbox (its staff-contact record) is drained here too
        self.locks = CaseLocks()
        self.group_commit = GroupCommit(self)
        # the lists' read model: loaded at start (load_index), then put after every write that succeeds
        self.index = CaseIndex()

    async def ensure_indexes(self) -> None:
        await self.cases.create_index("tracking_number", unique=True)
        await self.cases.create_index("idempotency_key", unique=True)
        await self.cases.create_index("outbox_count")
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
    async def insert(self, doc: dict[str, Any]) -> None:
        """Store a new case (with its outbox) and its pointers; raises DuplicateKeyError like insert_one."""
        await self.group_commit.insert(doc)

    async def insert_batch(self, docs: list[dict[str, Any]]) -> dict[int, Exception]:
        """New cases first, then the pointers of those that were stored. A crash in between leaves pointers
        missing, which lookups repair and :meth:`sweep_unflagged` finds; never a pointer to nothing."""
        errors = await insert_each(self.cases, docs)
        stored = [doc for index, doc in enumerate(docs) if index not in errors]
        for doc in stored:
            self.index.put(summary_from_doc(doc))
        pointers = [
            (self.by_tracking, [{"_id": d["tracking_number"], "case_id": d["_id"]} for d in stored]),
            (self.by_idempotency_key, [{"_id": d["idempotency_key"], "case_id": d["_id"]} for d in stored
                                       if d.get("idempotency_key") and not d["idempotency_key"].startswith("auto:")]),
            (self.pending, [{"_id": d["_id"], "seq": 1} for d in stored if d.get("outbox_count")]),
        ]
        # a pointer that already exists was written by a lookup's repair or by the sweep: same case, keep it
        await asyncio.gather(*(insert_each(collection, rows) for collection, rows in pointers))
        return errors

    async def flag_pending(self, case_id: str) -> None:
        """Written after the case: the relay's list of cases to look at (``seq`` tells it of later events)."""
        await upsert_one(self.pending, {"_id": case_id}, {"$inc": {"seq": 1}})

    async def commit(self, case: Case, expected_version: int, *, outbox: list[dict[str, Any]],
                     timeline: list[dict[str, Any]], replies: list[dict[str, Any]], now: datetime,
                     also_set: dict[str, Any] | None = None) -> bool:
        """The one write of a command: fields + events, only if nobody changed the case meanwhile."""
        update: dict[str, Any] = {
            "$set": {**case_to_fields(case), "updated_at": now, **(also_set or {})},
            "$push": {"outbox": {"$each": outbox}, "timeline": {"$each": timeline}},
            "$inc": {"outbox_count": len(outbox)},
        }
        if replies:
            update["$push"]["replies"] = {"$each": replies}
        async with self.locks.holding([case.case_id]):
            result = await self.cases.update_one({"_id": case.case_id, "version": expected_version}, update)
            if result.modified_count == 1 and outbox:
                await self.flag_pending(case.case_id)
            if result.modified_count == 1:
                await self._index_commit(case.case_id, update["$set"])
        return result.modified_count == 1

    async def _index_commit(self, case_id: str, fields: dict[str, Any]) -> None:
        """A command's fields on top of the case's summary (its texts stay unless moderated)."""
        previous = self.index.get(case_id)
        if previous is None:  # created on another replica, not followed yet: read it whole
            await self.refresh_index([case_id])
        else:
            self.index.put(summary_from_doc({"_id": case_id, **fields}, previous))

    async def push_outbox(self, case_id: str, entries: list[dict[str, Any]]) -> bool:
        """A message that changes nothing in the case (an SMS status answer) but must not be lost."""
        async with self.locks.holding([case_id]):
            result = await self.cases.update_one(
                {"_id": case_id}, {"$push": {"outbox": {"$each": entries}}, "$inc": {"outbox_count": len(entries)}})
            if result.modified_count == 1:
                await self.flag_pending(case_id)
        return result.modified_count == 1

    # ------------------------------------------------------------------ outbox
    def _holder(self, holder_id: str) -> AsyncCollection:
        """Where an outbox lives: a person's (``p-…``) in people, everything else in cases."""
        return self.people if holder_id.startswith("p-") else self.cases

    def _by_holder(self, ids: Iterable[str]) -> list[tuple[AsyncCollection, list[str]]]:
        people = [i for i in ids if i.startswith("p-")]
        cases = [i for i in ids if not i.startswith("p-")]
        return [(c, chunk) for c, group in ((self.cases, cases), (self.people, people)) for chunk in id_chunks(group)]

    async def pending_outbox(self, limit: int) -> list[dict[str, Any]]:
        """Cases with unpublished events, from the pointer list (read in batches by _id)."""
        pointers = await self.pending.find({}).limit(limit).to_list()
        seq_by_id = {pointer["_id"]: pointer["seq"] for pointer in pointers}
        docs: list[dict[str, Any]] = []
        for collection, ids in self._by_holder(seq_by_id):
            docs += await collection.find({"_id": {"$in": ids}}, {"outbox": 1, "outbox_count": 1}).to_list()
        with_events = [{**doc, "pending_seq": seq_by_id[doc["_id"]]} for doc in docs if doc.get("outbox_count")]
        still_pending = {doc["_id"] for doc in with_events}
        stale = {case_id: seq for case_id, seq in seq_by_id.items() if case_id not in still_pending}
        if stale:
            async with self.locks.holding(stale):
                await self._drop_pointers(stale)
        return with_events

    async def _drop_pointers(self, seq_by_id: dict[str, int]) -> None:
        """Remove pointers, each only if no new event flagged it since it was read (its ``seq`` moved)."""
        for ids in id_chunks(list(seq_by_id)):
            await self.pending.bulk_write([DeleteOne({"_id": i, "seq": seq_by_id[i]}) for i in ids], ordered=False)

    async def sweep_unflagged(self) -> int:
        """The safety net: flag every case whose outbox is not empty (a full scan; at start and now and then).
        Catches a crash between a case write and its pointer."""
        flagged = 0
        for collection in (self.cases, self.people):
            async for doc in collection.find({"outbox_count": {"$gt": 0}}, {"_id": 1}):
                await upsert_one(self.pending, {"_id": doc["_id"]}, {"$setOnInsert": {"seq": 0}})
                flagged += 1
        return flagged

    async def mark_published(self, published: dict[str, list[dict[str, Any]]],
                             seen_seq: dict[str, int] | None = None) -> None:
        """Remove exactly the published entries, then the pointers unless new events arrived meanwhile.

        The usual case, nothing added since the relay read the outbox, is one bulk write that empties each
        outbox on condition that it still holds as many entries as were sent. Cases that changed meanwhile
        are read back and lose only the entries that were sent."""
        if not published:
            return
        seen_seq = seen_seq or {}
        async with self.locks.holding(published):
            ids = list(published)
            modified = 0
            for collection, part in self._by_holder(ids):
                emptied = [UpdateOne({"_id": i, "outbox_count": len(published[i])},
                                     {"$set": {"outbox": [], "outbox_count": 0}}) for i in part]
                result = await collection.bulk_write(emptied, ordered=False)
                modified += result.modified_count
            if modified < len(ids):
                await self._remove_sent_entries(published)
            await self._drop_pointers({i: seen_seq[i] for i in ids if i in seen_seq})

    async def _remove_sent_entries(self, published: dict[str, list[dict[str, Any]]]) -> None:
        for collection, ids in self._by_holder(published):
            for doc in await collection.find({"_id": {"$in": ids}}, {"outbox": 1}).to_list():
                sent = {entry["id"] for entry in published[doc["_id"]]}
                still_there = [e for e in doc.get("outbox") or [] if e["id"] in sent]
                if still_there:
                    await collection.update_one({"_id": doc["_id"]}, {"$pullAll": {"outbox": still_there},
                                                                      "$inc": {"outbox_count": -len(still_there)}})

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
