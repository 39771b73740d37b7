"""MongoDB adapter for the ledger, the rollups, the batch journal and the run markers.

Shaped by what the local MongoDB-wire server (FerretDB, SQLite) does fast: only ``_id`` filters use an index
(``_id: {$in: [...]}`` too), ``insert_many``/``delete_many`` by ids/``find`` by ids are one round trip for a
thousand documents, while every update is a read-modify-write of its own (~800 documents/s however it is sent).
So the hot path never updates a ledger document: a batch's new ledger documents are journaled (one insert),
then swapped in (one delete by ids + one insert_many). Rollups are the only updates, one per rollup document
per fold, sent as one ``bulk_write``; the day rollups of a breakdown (unit, category, county) are packed into
one document per dimension and day, so a fold touches a few hundred documents, not thousands.

A flush appends its increments to its owner's rollup log (one insert, ``<owner>:<seq>``); readers keep the
rollups in memory and follow the log (see ``view.py``). The ``$inc``s into the rollup documents come later, a
*fold* of many entries at a time (one update per document for all of them).
Everything used here behaves the same on MongoDB.
"""

from __future__ import annotations

import json
import zlib
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import pymongo
from bson import Binary
from pymongo import UpdateOne
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import BulkWriteError, DuplicateKeyError

from services.common.mongo import DUPLICATE_KEY, id_chunks
from services.stats.domain import COUNTERS, HISTOGRAMS, Counters, LedgerFilters, flatten, month_bounds, parse_rollup_id
from services.stats.lists import Change


@dataclass(frozen=True)
class LogRecord:
    """One flush of one owner: the counter increments of a group of batches, by rollup id."""

    owner: str
    seq: int
    group: str
    deltas: dict[str, Counters]
    lists: dict[str, Change] = field(default_factory=dict)  # the bulletin lists' changes (see lists.py)


@dataclass(frozen=True)
class LogState:
    floor: int  # the last entry trimmed: entries after it are kept
    head: int  # the last entry appended, as far as the owner could say (a hint: an entry may be newer)


@dataclass(frozen=True)
class StoredRollups:
    """One stored rollup document: its rollups and, per owner, the last log entry it holds."""

    collection: str
    doc_id: str
    rollups: dict[str, Counters]
    markers: dict[str, int]


class LogConflict(Exception):
    """A log sequence number already holds another group's increments."""

    def __init__(self, owner: str, seq: int) -> None:
        super().__init__(f"log entry {seq} of {owner!r} holds another group")
        self.owner, self.seq = owner, seq


def log_id(owner: str, seq: int) -> str:
    return f"{owner}:{seq:012d}"


def pack(value: Any) -> Binary:
    """JSON-ready data as one compressed binary field: the local server stores documents as JSON and decodes
    every document it filters, deletes or updates, so a few hundred facts as one opaque value cost a fraction
    of the same facts as nested documents. Nothing ever queries inside these values."""
    return Binary(zlib.compress(json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode(), 1))


def unpack(blob: bytes) -> Any:
    return json.loads(zlib.decompress(blob))


def _stored_case(doc: dict[str, Any]) -> dict[str, Any]:
    """A ledger document as stored: state readable (the case browser filters on it), facts packed."""
    return {"_id": doc["_id"], "rev": doc["rev"], "n": len(doc["events"]), "facts": pack(doc["events"]),
            "s": doc["s"]}


def _loaded_case(doc: dict[str, Any]) -> dict[str, Any]:
    return {"_id": doc["_id"], "rev": doc["rev"], "events": unpack(doc["facts"]), "s": doc["s"]}


def escape_key(key: str) -> str:
    """A dimension key as a field name: no dots, no leading $, reversible."""
    return key.replace("%", "%25").replace(".", "%2E").replace("$", "%24")


def unescape_key(name: str) -> str:
    return name.replace("%24", "$").replace("%2E", ".").replace("%25", "%")


def rollup_location(rid: str) -> tuple[str, str, str]:
    """(collection, document id, field prefix) of a rollup id.

    Month rollups are one document each (``rollup_m``, what rankings and overviews read). Day rollups are
    packed into one document per dimension and day (``rollup_d``, ``k.<key>.<counter>``): a fold then updates
    a few per day instead of one per key and day. (Packing a whole month into one document was tried: the
    local server's update cost grows with the document, ~300 ms each, far worse.)"""
    dim, key, period = parse_rollup_id(rid)
    if len(period) == 7:
        return "rollup_m", rid, ""
    return "rollup_d", f"{dim}|{period}", f"k.{escape_key(key)}."


def _nested(counters: Counters) -> dict[str, Any]:
    """Flat counter names (``received``, ``rh.12``) as the stored shape (``rh: {"12": n}``), every counter present."""
    out: dict[str, Any] = {name: counters.get(name, 0) for name in COUNTERS}
    for hist in HISTOGRAMS:
        out[hist] = {}
    for name, value in counters.items():
        if "." in name:
            hist, bucket = name.split(".", 1)
            out[hist][bucket] = value
    return out


def _unpack(doc: dict[str, Any]) -> list[dict[str, Any]]:
    """A packed day document as one rollup-shaped document per key."""
    dim, day = doc["_id"].split("|", 1)
    out = []
    for name, sub in (doc.get("k") or {}).items():
        key = unescape_key(name)
        out.append({**sub, "_id": f"{dim}|{key}|{day}", "dim": dim, "key": key, "period": day})
    return out


def ledger_query(filters: LedgerFilters, now: datetime) -> dict[str, Any]:
    """The ledger filter of :class:`LedgerFilters` (on the case state ``s``); ``now`` decides what is overdue."""
    flt: dict[str, Any] = {}
    for name in ("unit", "category", "county", "status"):
        if (value := getattr(filters, name)) is not None:
            flt[f"s.{name}"] = value
    if filters.month is not None:
        first, last = month_bounds(filters.month)
        flt["s.received_day"] = {"$gte": first.isoformat(), "$lte": last.isoformat()}
    if filters.flagged is not None:
        flt["s.flagged"] = True if filters.flagged else {"$ne": True}
    if filters.overdue is not None:
        late = {"s.awaiting_reply": True, "s.closed_at": None, "s.deadline": {"$lt": now.isoformat()}}
        flt.update(late if filters.overdue else {"$or": [
            {"s.awaiting_reply": False}, {"s.closed_at": {"$ne": None}}, {"s.deadline": {"$gte": now.isoformat()}},
            {"s.deadline": None}]})
    return flt


async def _insert_or_replace(collection: Any, docs: list[dict[str, Any]]) -> None:
    """Insert documents just deleted by id; one that came back in between (another writer) is replaced."""
    try:
        await collection.insert_many(docs, ordered=False)
    except BulkWriteError as exc:
        errors = exc.details.get("writeErrors", [])
        if any(e.get("code") != DUPLICATE_KEY for e in errors):
            raise
        for err in errors:
            doc = docs[err["index"]]
            await collection.find_one_and_replace({"_id": doc["_id"]}, doc, upsert=True)


class StatsStore:
    def __init__(self, db: AsyncDatabase) -> None:
        self.db = db
        self.ledger = db["ledger"]
        self.batches = db["batches"]
        self.meta = db["meta"]
        self.log = db["rollup_log"]
        self.lists = db["case_lists"]

    async def ensure_indexes(self) -> None:
        """Nothing to index: every hot read and write is by ``_id``, and the rest reads small collections."""

    # ---------------------------------------------------------------- ledger

    async def load_cases(self, case_ids: Iterable[str]) -> dict[str, dict[str, Any]]:
        """Ledger documents by case id: one ``$in`` query per thousand ids."""
        out: dict[str, dict[str, Any]] = {}
        for chunk in id_chunks(list(case_ids)):
            async for doc in self.ledger.find({"_id": {"$in": chunk}}):
                out[doc["_id"]] = _loaded_case(doc)
        return out

    async def replace_cases(self, docs: list[dict[str, Any]], existing: set[str] | None = None) -> None:
        """Swap in new ledger documents: delete by ids, then insert. Not atomic, which is why the batch
        journal holds the same documents first and recovery repeats this step. ``existing`` (when the caller
        knows it) names the ids that are in the ledger now; the others only need the insert."""
        for chunk in id_chunks([_stored_case(d) for d in docs]):
            gone = [d["_id"] for d in chunk if existing is None or d["_id"] in existing]
            if gone:
                await self.ledger.delete_many({"_id": {"$in": gone}})
            await _insert_or_replace(self.ledger, chunk)

    async def ledger_size(self) -> int:
        return await self.ledger.estimated_document_count()

    async def browse(self, flt: dict[str, Any], skip: int, limit: int,
                     seconds: float | None = None) -> list[dict[str, Any]]:
        """A filtered page of the ledger: a scan of every case on the local server (it indexes ``_id`` only),
        so bounded in time: past ``seconds`` pymongo raises a timeout error."""
        with pymongo.timeout(seconds):
            cursor = self.ledger.find(flt, {"s": 1}).skip(skip).limit(limit)
            return await cursor.to_list()

    async def scan_revisions(self, batch_size: int = 5000):
        """Every ledger case's id, revision and state (rebuilding the bulletin lists)."""
        async for doc in self.ledger.find({}, {"rev": 1, "s": 1}, batch_size=batch_size):
            yield doc

    # ---------------------------------------------------------------- the bulletin's case lists

    async def case_lists(self) -> dict[str, Change]:
        """Every stored list change by case id (a listed case's state, or a removal not yet deleted)."""
        return {d["_id"]: {"rev": d["rev"], "s": unpack(d["s"]) if d.get("s") is not None else None}
                async for d in self.lists.find({})}

    async def save_case_lists(self, changes: dict[str, Change]) -> None:
        """Store list changes, each unless a newer revision is stored (delete by ids, insert). A case that left
        every list keeps a document without state, so that an older change met later cannot bring it back.
        Repeating it changes nothing."""
        for chunk in id_chunks(list(changes)):
            stored = {d["_id"]: d["rev"] async for d in self.lists.find({"_id": {"$in": chunk}}, {"rev": 1})}
            fresh = [cid for cid in chunk if changes[cid]["rev"] >= stored.get(cid, 0)]
            gone = [cid for cid in fresh if cid in stored]
            if gone:
                await self.lists.delete_many({"_id": {"$in": gone}})
            state = {cid: changes[cid]["s"] for cid in fresh}
            docs = [{"_id": cid, "rev": changes[cid]["rev"], "s": None if s is None else pack(s)}
                    for cid, s in state.items()]
            if docs:
                await _insert_or_replace(self.lists, docs)

    async def case_lists_built(self) -> bool:
        return await self.meta.find_one({"_id": "case_lists"}) is not None

    async def mark_case_lists_built(self) -> None:
        await self.meta.update_one({"_id": "case_lists"}, {"$set": {"at": datetime.now(UTC)}}, upsert=True)

    # ---------------------------------------------------------------- batches (journal of in-flight work)

    async def open_batch(self, batch_id: str, instance: str, group: str, seq: int, docs: list[dict[str, Any]],
                         deltas: dict[str, Counters], lists: dict[str, Change] | None = None) -> None:
        """Journal a batch: the ledger documents it writes and its rollup deltas. Present = not finished.
        ``seq`` is the log sequence number its group's flush will use."""
        await self.batches.insert_one({"_id": batch_id, "instance": instance, "group": group, "seq": seq,
                                       "work": pack({"docs": docs, "deltas": deltas, "lists": lists or {}}),
                                       "opened_at": datetime.now(UTC)})

    async def open_batches(self) -> list[dict[str, Any]]:
        """Unfinished batches in order, each with its ``docs`` and ``deltas`` unpacked."""
        journals = []
        for journal in await self.batches.find({}).to_list():
            journals.append({**journal, **unpack(journal.pop("work"))})
        return sorted(journals, key=lambda j: (j["instance"], j["seq"], j["opened_at"]))

    async def renumber_batches(self, batch_ids: list[str], seq: int) -> None:
        """Move journaled batches to another log sequence number (their first one was taken)."""
        for chunk in id_chunks(batch_ids):
            await self.batches.update_many({"_id": {"$in": chunk}}, {"$set": {"seq": seq}})

    async def close_batches(self, batch_ids: list[str]) -> None:
        for chunk in id_chunks(batch_ids):
            await self.batches.delete_many({"_id": {"$in": chunk}})

    # ---------------------------------------------------------------- rollup log

    # Each owner's log has its own small document in ``meta`` (``log:<owner>``: floor = last entry trimmed,
    # head = last entry appended, a hint for readers); only that owner writes it, because concurrent updates
    # of one document can lose one on the local server.

    async def register_owner(self, owner: str, head: int = 0) -> None:
        """Make ``owner``'s log known to readers (its floor starts at 0: nothing trimmed yet)."""
        await self.meta.update_one({"_id": f"log:{owner}"}, {"$set": {"kind": "rollup_log", "owner": owner},
                                                             "$max": {"floor": 0, "head": head}}, upsert=True)

    async def log_owners(self) -> dict[str, LogState]:
        """Every log owner's floor and head (a scan of ``meta``, which holds a few dozen small documents)."""
        return {d["owner"]: LogState(int(d.get("floor", 0)), int(d.get("head", 0)))
                async for d in self.meta.find({"kind": "rollup_log"})}

    async def log_floors(self) -> dict[str, int]:
        return {owner: state.floor for owner, state in (await self.log_owners()).items()}

    async def append_log(self, owner: str, seq: int, group: str, increments: dict[str, Counters],
                         lists: dict[str, Change] | None = None) -> bool:
        """Record a flush's counter increments as ``owner``'s log entry ``seq``; False if that group's entry
        is already there (a re-run). Raises :class:`LogConflict` if another group holds ``seq``."""
        record = {"_id": log_id(owner, seq), "owner": owner, "seq": seq, "group": group,
                  "at": datetime.now(UTC), "deltas": pack(increments)}
        if lists:
            record["lists"] = pack(lists)
        try:
            await self.log.insert_one(record)
            written = True
        except DuplicateKeyError:
            existing = await self.log.find_one({"_id": record["_id"]}, {"group": 1})
            if existing is None or existing.get("group") != group:
                raise LogConflict(owner, seq) from None
            written = False
        await self.register_owner(owner, head=seq)
        return written

    async def read_log(self, owner: str, after: int, chunk: int = 200) -> list[LogRecord]:
        """``owner``'s log entries after ``after``, in order, up to the first one missing."""
        out: list[LogRecord] = []
        while True:
            ids = [log_id(owner, seq) for seq in range(after + 1, after + chunk + 1)]
            found = {d["seq"]: d for d in await self.log.find({"_id": {"$in": ids}}).to_list()}
            for seq in range(after + 1, after + chunk + 1):
                if seq not in found:
                    return out
                doc = found[seq]
                lists = unpack(doc["lists"]) if doc.get("lists") is not None else {}
                out.append(LogRecord(owner, seq, doc["group"], unpack(doc["deltas"]), lists))
            after += chunk

    async def trim_log(self, owner: str, upto: int, floor: int) -> None:
        """Delete ``owner``'s entries ``floor+1..upto`` (all already in the rollup documents) and raise its floor."""
        if upto <= floor:
            return
        await self.meta.update_one({"_id": f"log:{owner}"}, {"$max": {"floor": upto}})
        for chunk in id_chunks([log_id(owner, seq) for seq in range(floor + 1, upto + 1)]):
            await self.log.delete_many({"_id": {"$in": chunk}})

    async def fold_state(self, owner: str) -> tuple[int, int | None]:
        """(last entry of ``owner`` folded into the documents, the last entry of a fold in progress or None)."""
        doc = await self.meta.find_one({"_id": f"fold:{owner}"}) or {}
        return int(doc.get("folded", 0)), doc.get("to")

    async def begin_fold(self, owner: str, to: int) -> None:
        await self.meta.update_one({"_id": f"fold:{owner}"}, {"$set": {"to": to}}, upsert=True)

    async def end_fold(self, owner: str, folded: int) -> None:
        await self.meta.update_one({"_id": f"fold:{owner}"}, {"$set": {"folded": folded, "to": None}}, upsert=True)

    # ---------------------------------------------------------------- rollup documents

    async def increment_once(self, increments: dict[str, Counters], marker: int, owner: str,
                             recovering: bool = False) -> None:
        """$inc each rollup document unless it already took ``marker`` from ``owner``: a re-run cannot double count.

        Each document keeps the last marker of each owner (``m.<owner>``: the last log entry of a fold); the
        filter skips a document that has it, and the same single-document update sets it. An owner folds one
        range of entries at a time and an interrupted fold is re-run with the same range and marker, so the
        last marker is all a document needs; it also tells a reader which of the owner's log entries the
        document already holds (every one up to the marker).
        All updates go in one unordered ``bulk_write`` (one round trip). When ``recovering``, the documents
        that already carry the marker are read first (by ids) and left out, because an upsert whose guard
        fails collides on ``_id`` and the local server then answers a bulk write in a shape pymongo cannot
        read (no ``nModified``). On MongoDB such a collision means "already applied"."""
        field = f"m.{escape_key(owner)}"
        ops: dict[tuple[str, str], dict[str, Any]] = {}
        for rid, counters in increments.items():
            if not counters:
                continue
            coll, doc_id, prefix = rollup_location(rid)
            dim, _key, period = parse_rollup_id(rid)
            op = ops.setdefault((coll, doc_id), {"inc": {}, "insert": {"dim": dim, "period": period}})
            if not prefix:
                op["insert"]["key"] = _key
            for name, n in counters.items():
                op["inc"][prefix + name] = op["inc"].get(prefix + name, 0) + n
        done: set[tuple[str, str]] = set()
        if recovering:
            for coll in {c for c, _i in ops}:
                ids = [i for c, i in ops if c == coll]
                for chunk in id_chunks(ids):
                    flt = {"_id": {"$in": chunk}, field: marker}
                    done.update((coll, d["_id"]) for d in await self.db[coll].find(flt, {"_id": 1}).to_list())
        by_coll: dict[str, list[UpdateOne]] = {}
        for (coll, doc_id), op in ops.items():
            if (coll, doc_id) in done:
                continue
            inc = {k: v for k, v in op["inc"].items() if v}
            if not inc:
                continue
            by_coll.setdefault(coll, []).append(UpdateOne(
                {"_id": doc_id, field: {"$ne": marker}},
                {"$inc": inc, "$set": {field: marker}, "$setOnInsert": op["insert"]}, upsert=True))
        for coll, requests in by_coll.items():
            for chunk in id_chunks(requests):
                try:
                    await self.db[coll].bulk_write(chunk, ordered=False)
                except BulkWriteError as exc:
                    if any(e.get("code") != DUPLICATE_KEY for e in exc.details.get("writeErrors", [])):
                        raise

    async def rollup_documents(self) -> list[StoredRollups]:
        """Every rollup document as its rollups (flat counters by rollup id) and its owners' markers."""
        out = []
        for coll in ("rollup_m", "rollup_d"):
            async for doc in self.db[coll].find({}):
                markers = {unescape_key(k): int(v) for k, v in (doc.get("m") or {}).items()}
                rows = _unpack(doc) if coll == "rollup_d" else [doc]
                out.append(StoredRollups(coll, doc["_id"], {row["_id"]: flatten(row) for row in rows}, markers))
        return out

    async def insert_rollups(self, rollups: dict[str, Counters]) -> None:
        """Write a fresh set of rollup documents with bulk inserts (seeding a benchmark database)."""
        by_doc: dict[tuple[str, str], dict[str, Any]] = {}
        for rid, counters in rollups.items():
            coll, doc_id, prefix = rollup_location(rid)
            dim, key, period = parse_rollup_id(rid)
            doc = by_doc.setdefault((coll, doc_id), {"_id": doc_id, "dim": dim, "period": period})
            if prefix:
                doc.setdefault("k", {})[escape_key(key)] = _nested(counters)
            else:
                doc.update(key=key, **_nested(counters))
        for coll in ("rollup_m", "rollup_d"):
            docs = [doc for (c, _i), doc in by_doc.items() if c == coll]
            for chunk in id_chunks(docs):
                await self.db[coll].insert_many(chunk, ordered=False)

    # ---------------------------------------------------------------- run markers

    async def mark_running(self, instance: str) -> bool:
        """Set this instance's running marker; True if it was already set (the last run did not stop cleanly)."""
        before = await self.meta.find_one_and_update(
            {"_id": f"running:{instance}"}, {"$set": {"since": datetime.now(UTC)}}, upsert=True)
        return before is not None

    async def clear_running(self, instance: str) -> None:
        await self.meta.find_one_and_delete({"_id": f"running:{instance}"})
