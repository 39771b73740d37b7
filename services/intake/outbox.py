"""The outbox: events stored as documents of their own, insert only, published by a relay that advances one
watermark per writer and batch. Nothing is updated per event.

Every intake process is a *writer* (an id of its own, new at every start) with a sequence of *groups*. A
group is whatever concurrent requests queued while the writer's previous group was being stored; it costs
three statements, however many requests it carries:

1. the **intent** ``<writer>:<seq>``: every event of the group (one insert);
2. the group's documents: new documents in one ``insert_many`` per collection, changes as one bulk write of
   guarded updates; each stored document records the group's ref in ``write_refs``;
3. the **done** marker ``<writer>:<seq>/done`` naming the events whose write failed (a duplicate key, a
   version conflict), inserted together with the lookup pointers of the new documents.

A caller has its answer after step 3, so a 201 means the case and its events are stored. The writer moves
to the next sequence number only once an intent is stored, so a writer's groups have no gaps. The relay
(:mod:`services.intake.relay`) publishes a group once its done marker is there. A group whose writer went
away between steps 1 and 3 (the writer has stored a later group, or the intent is older than
``abandon_seconds``) is settled from its documents: an event is published exactly when its document holds
the group's ref, which a failed or never-made write does not. Consumers dedupe by event id, so a crash
between publishing and advancing the watermark (published twice) is harmless.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import secrets
import socket
import time
from collections.abc import Callable, Iterable, Sequence
from datetime import UTC, datetime
from typing import Any

from pymongo import UpdateOne
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import BulkWriteError, DuplicateKeyError

from services.common.mongo import DUPLICATE_KEY, id_chunks

REFS_KEPT = 32  # write_refs per document (MongoDB trims with $slice; the local server keeps them all)
SEQ_DIGITS = 12


def new_writer_id() -> str:
    """A writer id of its own for every process start: the host, the process and a random part."""
    return f"{socket.gethostname()[:40]}-{os.getpid()}-{secrets.token_hex(3)}"


def group_ref(writer: str, seq: int) -> str:
    return f"{writer}:{seq:0{SEQ_DIGITS}d}"


def done_ref(ref: str) -> str:
    return f"{ref}/done"


def closed_ref(writer: str) -> str:
    return f"{writer}/closed"


def with_ref(update: dict[str, Any], ref: str) -> dict[str, Any]:
    """``update`` that also records the group's ref on the document it changes."""
    push = dict(update.get("$push") or {})
    push["write_refs"] = {"$each": [ref], "$slice": -REFS_KEPT}
    return {**update, "$push": push}


@dataclasses.dataclass
class Write:
    """One request's change: a new document (``insert``) or a guarded update (``guard`` + ``update``) of
    ``doc_id`` in ``holder``, and the events it emits. With no ``holder``, only events (a message that
    changes no document). ``pointers`` are (collection, document) inserted once the write is stored."""

    events: list[dict[str, Any]]
    holder: str | None = None
    doc_id: str | None = None
    insert: dict[str, Any] | None = None
    guard: dict[str, Any] | None = None
    update: dict[str, Any] | None = None
    pointers: Sequence[tuple[str, dict[str, Any]]] = ()


@dataclasses.dataclass
class _Queued:
    write: Write
    done: asyncio.Future[bool]


def insert_errors(exc: BulkWriteError) -> dict[int, Exception]:
    """The per-document errors of an unordered ``insert_many`` (a duplicate key as DuplicateKeyError);
    anything that is not a per-document error raises again."""
    errors = exc.details.get("writeErrors") or []
    if exc.details.get("writeConcernErrors") or not errors:
        raise exc
    return {error["index"]: (DuplicateKeyError if error.get("code") == DUPLICATE_KEY else BulkWriteError)(
                error.get("errmsg", "write error"), error.get("code"), error) for error in errors}


async def insert_each(collection: Any, docs: list[dict[str, Any]]) -> dict[int, Exception]:
    """``insert_many`` that does not stop at the first bad document: the errors by index in ``docs``.
    Anything else, like a lost connection, raises."""
    if not docs:
        return {}
    try:
        await collection.insert_many(docs, ordered=False)
    except BulkWriteError as exc:
        return insert_errors(exc)
    return {}


class OutboxWriter:
    """The group commit of one process. Each caller learns its own outcome: ``True`` stored, ``False`` a
    guarded update found its document changed (or gone), or the insert's DuplicateKeyError; a database
    failure fails every request of the group alike."""

    def __init__(self, db: AsyncDatabase, writer_id: str, *, max_group: int = 256,
                 now_ms: Callable[[], int] | None = None) -> None:
        self.db = db
        self.writer_id = writer_id
        self.max_group = max_group
        self.now_ms = now_ms or (lambda: int(time.time() * 1000))
        self.outbox = db["outbox"]
        self.writers = db["outbox_writers"]
        self.next_seq = 1
        self._registered = False
        self._queue: list[_Queued] = []
        self._flusher: asyncio.Task[None] | None = None
        self.last_group_seconds = 0.0  # how long the last group took to store
        self._group_started: float | None = None

    @property
    def queued(self) -> int:
        return len(self._queue)

    def write_seconds(self) -> float:
        """How long the group being stored has taken so far (0 when idle; load shedding reads it)."""
        return 0.0 if self._group_started is None else time.monotonic() - self._group_started

    async def write(self, write: Write) -> bool:
        done: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self._queue.append(_Queued(write, done))
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.create_task(self._flush_all(), name="intake-outbox-group")
        return await done

    async def close(self) -> None:
        """After the last group: tells the relay this writer is finished (it may forget it once drained)."""
        if self._flusher is not None:
            await asyncio.gather(self._flusher, return_exceptions=True)
        if self._registered:
            try:
                await self.outbox.insert_one({"_id": closed_ref(self.writer_id), "at_ms": self.now_ms()})
            except DuplicateKeyError:
                pass

    async def _flush_all(self) -> None:
        while self._queue:
            group = self._take_group()
            try:
                await self._store(group)
            except BaseException as exc:
                failure = exc if isinstance(exc, Exception) else RuntimeError("intake is shutting down")
                for queued in group:
                    if not queued.done.done():
                        queued.done.set_exception(failure)
                if not isinstance(exc, Exception):
                    for queued in self._queue:
                        if not queued.done.done():
                            queued.done.set_exception(failure)
                    self._queue = []
                    raise

    def _take_group(self) -> list[_Queued]:
        """At most ``max_group`` requests, and one per document: a second change of the same document waits
        for the next group (a bulk write would apply both against the same guard)."""
        group: list[_Queued] = []
        rest: list[_Queued] = []
        seen: set[tuple[str, str]] = set()
        for queued in self._queue:
            key = (queued.write.holder or "", queued.write.doc_id or "")
            if len(group) >= self.max_group or (queued.write.holder and key in seen):
                rest.append(queued)
                continue
            seen.add(key)
            group.append(queued)
        self._queue = rest
        return group

    async def _store(self, group: list[_Queued]) -> None:
        started = self._group_started = time.monotonic()
        try:
            outcomes = await self._store_group(group)
        finally:
            self.last_group_seconds, self._group_started = time.monotonic() - started, None
        for queued, ok in zip(group, outcomes, strict=True):
            if queued.done.done():  # the caller went away (client disconnected)
                continue
            if isinstance(ok, Exception):
                queued.done.set_exception(ok)
            else:
                queued.done.set_result(ok)

    async def _store_group(self, group: list[_Queued]) -> list[bool | Exception]:
        """The three steps: intent, documents, done marker (with the pointers of what was stored)."""
        ref = await self._insert_intent(group)
        outcomes = await self._apply(group, ref)
        failed = [e["id"] for q, ok in zip(group, outcomes, strict=True) if ok is not True for e in q.write.events]
        pointers: dict[str, list[dict[str, Any]]] = {}
        for queued, ok in zip(group, outcomes, strict=True):
            if ok is True:
                for collection, doc in queued.write.pointers:
                    pointers.setdefault(collection, []).append(doc)
        # a pointer that already exists was written by a lookup's repair: same document, keep it
        await asyncio.gather(self.outbox.insert_one({"_id": done_ref(ref), "failed": failed}),
                             *(insert_each(self.db[name], docs) for name, docs in pointers.items()))
        return outcomes

    async def _insert_intent(self, group: list[_Queued]) -> str:
        if not self._registered:
            try:
                await self.writers.insert_one({"_id": self.writer_id, "seq": 0,
                                               "started_at": datetime.now(UTC), "updated_at": datetime.now(UTC)})
            except DuplicateKeyError:
                pass
            self._registered = True
        at_ms = self.now_ms()
        events = [{**entry, "holder": q.write.holder, "doc": q.write.doc_id} for q in group for entry in q.write.events]
        while True:
            ref = group_ref(self.writer_id, self.next_seq)
            try:
                await self.outbox.insert_one({"_id": ref, "writer": self.writer_id, "seq": self.next_seq,
                                              "at_ms": at_ms, "events": events,
                                              "complete": all(q.write.holder is None for q in group)})
            except DuplicateKeyError:
                # an earlier attempt of this number was stored after all (its caller saw an error): that
                # group changed nothing, the relay settles it as such; this one takes the next number
                self.next_seq += 1
                continue
            self.next_seq += 1
            return ref

    async def _apply(self, group: list[_Queued], ref: str) -> list[bool | Exception]:
        """Each write's outcome: True stored, False guard not met, or the insert's error."""
        outcomes: list[bool | Exception] = [True] * len(group)
        by_holder: dict[str, list[int]] = {}
        for index, queued in enumerate(group):
            if queued.write.holder is not None:
                by_holder.setdefault(queued.write.holder, []).append(index)
        tasks = []
        for holder, indexes in by_holder.items():
            inserts = [i for i in indexes if group[i].write.insert is not None]
            updates = [i for i in indexes if group[i].write.insert is None]
            tasks.append(self._insert(holder, group, inserts, ref, outcomes))
            tasks.append(self._update(holder, group, updates, ref, outcomes))
        await asyncio.gather(*tasks)
        return outcomes

    async def _insert(self, holder: str, group: list[_Queued], indexes: list[int], ref: str,
                      outcomes: list[bool | Exception]) -> None:
        docs = [{**group[i].write.insert, "write_refs": [ref]} for i in indexes]  # type: ignore[dict-item]
        for position, error in (await insert_each(self.db[holder], docs)).items():
            outcomes[indexes[position]] = error

    async def _update(self, holder: str, group: list[_Queued], indexes: list[int], ref: str,
                      outcomes: list[bool | Exception]) -> None:
        if not indexes:
            return
        collection = self.db[holder]
        operations = [UpdateOne(group[i].write.guard or {"_id": group[i].write.doc_id},
                                with_ref(group[i].write.update or {}, ref)) for i in indexes]
        result = await collection.bulk_write(operations, ordered=False)
        if result.modified_count == len(indexes):
            return
        # some guards were not met: the documents that hold this group's ref are the ones changed
        stored = await documents_holding(collection, [group[i].write.doc_id for i in indexes], ref)  # type: ignore[misc]
        for i in indexes:
            outcomes[i] = group[i].write.doc_id in stored


async def documents_holding(collection: Any, ids: Iterable[str], ref: str) -> set[str]:
    """Which of these documents a group's write reached (they carry its ref)."""
    found: set[str] = set()
    for part in id_chunks(sorted(set(ids))):
        for doc in await collection.find({"_id": {"$in": part}}, {"write_refs": 1}).to_list():
            if ref in (doc.get("write_refs") or ()):
                found.add(doc["_id"])
    return found


# ---------------------------------------------------------------------------------------------------------
# What the relay may publish: a pure function of the writers' watermarks and the outbox documents it read
# ---------------------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class WriterMark:
    writer: str
    seq: int  # the watermark: this writer's groups up to ``seq`` are published


@dataclasses.dataclass(frozen=True)
class Group:
    writer: str
    seq: int
    intent: dict[str, Any]
    done: dict[str, Any] | None

    @property
    def ref(self) -> str:
        return group_ref(self.writer, self.seq)

    @property
    def settled(self) -> bool:
        return self.done is not None or bool(self.intent.get("complete"))

    def holders(self) -> set[tuple[str, str]]:
        return {(e["holder"], e["doc"]) for e in self.intent["events"] if e.get("holder")}

    def events(self, reached: set[tuple[str, str]] | None = None) -> list[dict[str, Any]]:
        """The events to publish: all but the failed ones named by the done marker; for a group settled
        from its documents, those whose document the write ``reached`` (and messages without one)."""
        if reached is not None:
            return [e for e in self.intent["events"] if not e.get("holder") or (e["holder"], e["doc"]) in reached]
        failed = set((self.done or {}).get("failed") or ())
        return [e for e in self.intent["events"] if e["id"] not in failed]


@dataclasses.dataclass
class Plan:
    ready: list[Group]  # in publication order per writer
    to_check: list[Group]  # abandoned groups (among ``ready``) whose documents tell which events count
    watermarks: dict[str, int]  # the writers that move on, to where
    consumed: list[str]  # outbox documents to delete once published
    retired: list[str]  # finished writers with nothing left to publish
    backlog: int  # unpublished events seen (after this plan too)
    oldest_at_ms: int | None  # when the oldest unpublished group was stored


def window_ids(marks: Iterable[WriterMark], window: int) -> list[str]:
    """The outbox documents a pass reads: the next ``window`` groups of every writer, done markers and all."""
    ids: list[str] = []
    for mark in marks:
        for seq in range(mark.seq + 1, mark.seq + window + 1):
            ref = group_ref(mark.writer, seq)
            ids += [ref, done_ref(ref)]
        ids.append(closed_ref(mark.writer))
    return ids


def plan_publication(marks: Sequence[WriterMark], docs: dict[str, dict[str, Any]], *, window: int, now_ms: int,
                     abandon_ms: int) -> Plan:
    """Each writer's groups in order from its watermark, up to the first that is still being written.

    A group is *settled* (its done marker is there), *abandoned* (no done marker, but its writer has stored
    a later group, has closed, or the intent is older than ``abandon_ms``: settled from its documents), or
    *in flight*. A group also waits while a document it changes is in another writer's group in flight, so
    that one case's events leave in the order they were made even when two replicas wrote them."""
    groups: dict[str, list[Group]] = {}
    for mark in marks:
        run: list[Group] = []
        for seq in range(mark.seq + 1, mark.seq + window + 1):
            intent = docs.get(group_ref(mark.writer, seq))
            if intent is None:
                break
            run.append(Group(mark.writer, seq, intent, docs.get(done_ref(group_ref(mark.writer, seq)))))
        groups[mark.writer] = run

    def abandoned(group: Group, later: bool) -> bool:
        closed = closed_ref(group.writer) in docs
        return later or closed or now_ms - int(group.intent.get("at_ms", now_ms)) > abandon_ms

    state: dict[str, list[tuple[Group, str]]] = {}
    for writer, run in groups.items():
        state[writer] = [(group, "settled" if group.settled else
                          "abandoned" if abandoned(group, position + 1 < len(run)) else "in_flight")
                         for position, group in enumerate(run)]

    # Each writer publishes a prefix of its groups: up to its first group in flight, and up to its first group
    # that changes a document which another writer's unpublished group also changes (that version may come
    # first). Holding one group back can hold back another writer's, so repeat until nothing moves.
    prefix = {writer: next((i for i, (_, kind) in enumerate(run) if kind == "in_flight"), len(run))
              for writer, run in state.items()}
    while True:
        held: dict[tuple[str, str], set[str]] = {}
        for writer, run in state.items():
            for group, _ in run[prefix[writer]:]:
                for holder in group.holders():
                    held.setdefault(holder, set()).add(writer)
        moved = False
        for writer, run in state.items():
            waits = next((i for i, (group, _) in enumerate(run[:prefix[writer]])
                          if any(held.get(h, set()) - {writer} for h in group.holders())), None)
            if waits is not None:
                prefix[writer], moved = waits, True
        if not moved:
            break

    plan = Plan(ready=[], to_check=[], watermarks={}, consumed=[], retired=[], backlog=0, oldest_at_ms=None)
    for mark in marks:
        writer = mark.writer
        run = state[writer]
        for group, kind in run[:prefix[writer]]:
            plan.ready.append(group)
            if kind == "abandoned":
                plan.to_check.append(group)
            plan.watermarks[writer] = group.seq
            plan.consumed += [group.ref, done_ref(group.ref)]
        for group, _ in run[prefix[writer]:]:
            plan.backlog += len(group.events())
            at = int(group.intent.get("at_ms", now_ms))
            plan.oldest_at_ms = at if plan.oldest_at_ms is None else min(plan.oldest_at_ms, at)
        more_may_follow = prefix[writer] < len(run) or len(run) == window
        if closed_ref(writer) in docs and not more_may_follow:
            plan.retired.append(writer)
            plan.consumed.append(closed_ref(writer))
    return plan


def publication_order(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One case's events by version (two writers' groups may hold consecutive versions of one case)."""
    return sorted(events, key=lambda e: int(e.get("v") or 0))


class OutboxLog:
    """What the relay reads and moves on: the writers' watermarks and the outbox documents."""

    def __init__(self, db: AsyncDatabase) -> None:
        self.db = db
        self.outbox = db["outbox"]
        self.writers = db["outbox_writers"]

    async def marks(self) -> list[WriterMark]:
        return [WriterMark(doc["_id"], int(doc.get("seq", 0))) for doc in await self.writers.find({}).to_list()]

    async def read(self, ids: list[str]) -> dict[str, dict[str, Any]]:
        """One find for every writer, never chunks: a later writer's group must not be seen without the
        earlier group of another writer that it follows (past IDS_PER_QUERY ids the local server scans the
        outbox, which holds only what is not yet published)."""
        return {doc["_id"]: doc for doc in await self.outbox.find({"_id": {"$in": ids}}).to_list()}

    async def reached(self, groups: list[Group]) -> dict[str, set[tuple[str, str]]]:
        """For each abandoned group, the documents its write reached."""
        out: dict[str, set[tuple[str, str]]] = {}
        for group in groups:
            reached: set[tuple[str, str]] = set()
            by_holder: dict[str, set[str]] = {}
            for holder, doc_id in group.holders():
                by_holder.setdefault(holder, set()).add(doc_id)
            for holder, ids in by_holder.items():
                reached |= {(holder, i) for i in await documents_holding(self.db[holder], ids, group.ref)}
            out[group.ref] = reached
        return out

    async def backlog(self) -> int:
        """Unpublished events, counted over the whole outbox (published groups are deleted)."""
        marks = {mark.writer: mark.seq for mark in await self.marks()}
        docs = {doc["_id"]: doc async for doc in self.outbox.find({})}
        return sum(len(Group(doc["writer"], int(doc["seq"]), doc, docs.get(done_ref(doc["_id"]))).events())
                   for doc in docs.values() if "writer" in doc and int(doc["seq"]) > marks.get(doc["writer"], -1))

    async def advance(self, plan: Plan, now: datetime) -> None:
        """Watermarks first (one update per writer that moved), then the published documents go."""
        for writer, seq in plan.watermarks.items():
            await self.writers.update_one({"_id": writer}, {"$set": {"seq": seq, "updated_at": now}})
        for writer in plan.retired:
            await self.writers.delete_one({"_id": writer})
        for part in id_chunks(plan.consumed):
            await self.outbox.delete_many({"_id": {"$in": part}})


class GroupRead:
    """Lookups by ``_id`` that arrive together are read together: whatever queued while the previous read
    was on its way goes in one ``$in`` find (a lone lookup waits for nobody)."""

    def __init__(self, collection: Any, projection: dict[str, Any], max_ids: int = 500) -> None:
        self.collection = collection
        self.projection = projection
        self.max_ids = max_ids
        self._waiting: dict[str, list[asyncio.Future[dict[str, Any] | None]]] = {}
        self._reader: asyncio.Task[None] | None = None

    async def get(self, doc_id: str) -> dict[str, Any] | None:
        found: asyncio.Future[dict[str, Any] | None] = asyncio.get_running_loop().create_future()
        self._waiting.setdefault(doc_id, []).append(found)
        if self._reader is None or self._reader.done():
            self._reader = asyncio.create_task(self._read_all(), name="intake-group-read")
        return await found

    async def _read_all(self) -> None:
        while self._waiting:
            ids = list(self._waiting)[:self.max_ids]
            batch = {doc_id: self._waiting.pop(doc_id) for doc_id in ids}
            try:
                docs = {doc["_id"]: doc for doc in
                        await self.collection.find({"_id": {"$in": ids}}, self.projection).to_list()}
            except BaseException as exc:
                failure = exc if isinstance(exc, Exception) else RuntimeError("intake is shutting down")
                for waiters in batch.values():
                    for waiter in waiters:
                        if not waiter.done():
                            waiter.set_exception(failure)
                if not isinstance(exc, Exception):
                    raise
                continue
            for doc_id, waiters in batch.items():
                doc = docs.get(doc_id)
                for position, waiter in enumerate(waiters):
                    if not waiter.done():  # each caller its own copy: handlers add to what they read
                        waiter.set_result(doc if doc is None or position == 0 else dict(doc))
