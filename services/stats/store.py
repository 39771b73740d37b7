"""MongoDB adapter for the ledger, the rollups, the batch journal and the run markers.

Shaped by what the local MongoDB-wire server (FerretDB, SQLite) does fast: only ``_id`` filters use an index
(``_id: {$in: [...]}`` too), ``insert_many``/``delete_many`` by ids/``find`` by ids are one round trip for a
thousand documents, while every update is a read-modify-write of its own (~800 documents/s however it is sent).
So the hot path never updates a ledger document: a batch's new ledger documents are journaled (one insert),
then swapped in (one delete by ids + one insert_many). Rollups are the only updates, one per rollup document
per flush, sent as one ``bulk_write``; the day rollups of a breakdown (unit, category, county) are packed into
one document per dimension and day, so a flush touches a few hundred documents, not thousands.
Everything used here behaves the same on MongoDB.
"""

from __future__ import annotations

import json
import uuid
import zlib
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

from bson import Binary
from pymongo import UpdateOne
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import BulkWriteError, DuplicateKeyError

from services.common.mongo import DUPLICATE_KEY, id_chunks
from services.stats.domain import COUNTERS, Counters, parse_rollup_id


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
    packed into one document per dimension and day (``rollup_d``, ``k.<key>.<counter>``): a flush then updates
    a few per day instead of one per key and day. (Packing a whole month into one document was tried: the
    local server's update cost grows with the document, ~300 ms each, far worse.)"""
    dim, key, period = parse_rollup_id(rid)
    if len(period) == 7:
        return "rollup_m", rid, ""
    return "rollup_d", f"{dim}|{period}", f"k.{escape_key(key)}."


def _nested(counters: Counters) -> dict[str, Any]:
    """Flat counter names (``received``, ``rh.12``) as the stored shape (``rh: {"12": n}``), every counter present."""
    out: dict[str, Any] = {name: counters.get(name, 0) for name in COUNTERS}
    for hist in ("rh", "du", "do"):
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


class StatsStore:
    def __init__(self, db: AsyncDatabase, cache_size: int = 256) -> None:
        self.db = db
        self.ledger = db["ledger"]
        self.batches = db["batches"]
        self.meta = db["meta"]
        self._known_keys: set[tuple[str, str]] = set()
        self._known_months: set[str] = set()
        self._cache: dict[tuple, tuple[str, Any]] = {}
        self._cache_size = cache_size

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
            try:
                await self.ledger.insert_many(chunk, ordered=False)
            except BulkWriteError as exc:  # a document came back in between (another writer): replace it
                errors = exc.details.get("writeErrors", [])
                if any(e.get("code") != DUPLICATE_KEY for e in errors):
                    raise
                for err in errors:
                    doc = chunk[err["index"]]
                    await self.ledger.find_one_and_replace({"_id": doc["_id"]}, doc, upsert=True)

    async def ledger_size(self) -> int:
        return await self.ledger.estimated_document_count()

    async def scan_states(self, batch_size: int = 5000):
        cursor = self.ledger.find({}, {"s": 1}, batch_size=batch_size)
        async for doc in cursor:
            yield doc

    async def browse(self, flt: dict[str, Any], skip: int, limit: int) -> list[dict[str, Any]]:
        cursor = self.ledger.find(flt, {"s": 1}).skip(skip).limit(limit)
        return await cursor.to_list()

    # ---------------------------------------------------------------- batches (journal of in-flight work)

    async def open_batch(self, batch_id: str, instance: str, group: str, seq: int, docs: list[dict[str, Any]],
                         deltas: list[dict[str, Any]]) -> None:
        """Journal a batch: the ledger documents it writes and its rollup deltas. Present = not finished."""
        await self.batches.insert_one({"_id": batch_id, "instance": instance, "group": group, "seq": seq,
                                       "work": pack({"docs": docs, "deltas": deltas}), "opened_at": datetime.now(UTC)})

    async def open_batches(self) -> list[dict[str, Any]]:
        """Unfinished batches in order, each with its ``docs`` and ``deltas`` unpacked."""
        journals = []
        for journal in await self.batches.find({}).to_list():
            journals.append({**journal, **unpack(journal.pop("work"))})
        return sorted(journals, key=lambda j: (j["instance"], j["seq"]))

    async def close_batches(self, batch_ids: list[str]) -> None:
        for chunk in id_chunks(batch_ids):
            await self.batches.delete_many({"_id": {"$in": chunk}})

    # ---------------------------------------------------------------- rollups

    async def register(self, rollup_ids: Iterable[str]) -> None:
        """Directories of keys and months, so queries read rollups by _id instead of scanning (FerretDB).

        One ``$addToSet ... $each`` per dimension with new keys; this process's writes to the directory are
        sequential (the local server's updates are read-modify-write, so two at once could lose a value)."""
        new_keys: dict[str, set[str]] = {}
        new_months: set[str] = set()
        for rid in rollup_ids:
            dim, key, period = parse_rollup_id(rid)
            if (dim, key) not in self._known_keys:
                new_keys.setdefault(dim, set()).add(key)
            if len(period) == 7 and period not in self._known_months:
                new_months.add(period)
        for dim, keys in sorted(new_keys.items()):
            await self._add_to_set(f"keys:{dim}", "keys", sorted(keys))
            self._known_keys.update((dim, k) for k in keys)
        if new_months:
            await self._add_to_set("periods", "months", sorted(new_months))
            self._known_months.update(new_months)

    async def _add_to_set(self, doc_id: str, field: str, values: list[str]) -> None:
        update = {"$addToSet": {field: {"$each": values}}}
        try:
            await self.meta.update_one({"_id": doc_id}, update, upsert=True)
        except DuplicateKeyError:  # two concurrent upserts created it: the second now simply updates
            await self.meta.update_one({"_id": doc_id}, update)

    async def keys(self, dim: str) -> list[str]:
        doc = await self.meta.find_one({"_id": f"keys:{dim}"})
        return sorted((doc or {}).get("keys") or [])

    async def increment_once(self, increments: dict[str, Counters], marker: str, owner: str,
                             recovering: bool = False) -> None:
        """$inc each rollup document unless it already took ``marker`` from ``owner``: a re-run cannot double count.

        Each document keeps the last marker of each owner (``m.<owner>``); the filter skips a document that has
        it, and the same single-document update sets it. An owner flushes one group at a time and recovery
        re-runs an interrupted group with the same marker, so the last marker is all a document needs.
        All updates go in one unordered ``bulk_write`` (one round trip). A fresh marker is on no document;
        when ``recovering``, the documents that already carry it are read first (by ids) and left out, because
        an upsert whose guard fails collides on ``_id`` and the local server then answers a bulk write in a
        shape pymongo cannot read (no ``nModified``). On MongoDB such a collision means "already applied"."""
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
        await self.changed()

    async def changed(self) -> None:
        """A new token for the query cache: a write that sets it always happens after the rollup writes."""
        await self.meta.update_one({"_id": "rollups_token"}, {"$set": {"token": uuid.uuid4().hex}}, upsert=True)

    async def _token(self) -> str:
        doc = await self.meta.find_one({"_id": "rollups_token"})
        return (doc or {}).get("token", "")

    async def _by_ids(self, coll: str, ids: list[str]) -> list[dict[str, Any]]:
        docs: list[dict[str, Any]] = []
        for chunk in id_chunks(ids):
            docs += await self.db[coll].find({"_id": {"$in": chunk}}, {"m": 0}).to_list()
        return docs

    async def rollups(self, dim: str, months: list[str], days: list[str]) -> list[dict[str, Any]]:
        """The rollup documents of one dimension over whole months plus single days, read by ``_id`` only."""
        keys = ["all"] if dim == "all" else await self.keys(dim)
        docs = await self._by_ids("rollup_m", [f"{dim}|{key}|{month}" for key in keys for month in months])
        for packed in await self._by_ids("rollup_d", [f"{dim}|{d}" for d in days]):
            docs += _unpack(packed)
        return docs

    async def cached(self, key: tuple, compute: Any) -> Any:
        """``await compute()`` for a query over the rollups, reused while the rollups' change token (one small
        document, rewritten after every flush and every repair) stays the same: a repeated query costs one
        ``find_one``, and any change to the rollups makes the next query compute again."""
        token = await self._token()
        hit = self._cache.get(key)
        if hit is not None and hit[0] == token:
            return hit[1]
        value = await compute()
        if len(self._cache) >= self._cache_size:
            self._cache.pop(next(iter(self._cache)))
        self._cache[key] = (token, value)
        return value

    async def all_rollups(self, dim: str | None = None, gran: str = "m") -> list[dict[str, Any]]:
        """Every rollup of a granularity ("m" or "d"), packed day documents unpacked (reconcile, tests)."""
        flt = {"dim": dim} if dim else {}
        docs = await self.db[f"rollup_{gran}"].find(flt, {"m": 0}).to_list()
        if gran == "d":
            return [one for packed in docs for one in _unpack(packed)]
        return docs

    async def rollup_periods(self) -> list[str]:
        async def compute() -> list[str]:
            doc = await self.meta.find_one({"_id": "periods"})
            return sorted((doc or {}).get("months") or [])

        return list(await self.cached(("periods",), compute))

    async def overwrite_rollup(self, rid: str, counters: Counters) -> None:
        """Set a rollup's counters to exact values (reconcile); names missing from ``counters`` become 0."""
        coll, doc_id, prefix = rollup_location(rid)
        dim, key, period = parse_rollup_id(rid)
        if prefix:
            await self.db[coll].update_one({"_id": doc_id}, {"$set": {prefix.rstrip("."): _nested(counters)},
                                                             "$setOnInsert": {"dim": dim, "period": period}},
                                           upsert=True)
        else:
            await self.db[coll].find_one_and_replace(
                {"_id": rid}, {"dim": dim, "key": key, "period": period, **_nested(counters)}, upsert=True)
        await self.register([rid])
        await self.changed()

    async def insert_rollups(self, rollups: dict[str, Counters]) -> None:
        """Write a fresh set of rollups with bulk inserts (seeding a benchmark database)."""
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
        await self.register(rollups)
        await self.changed()

    # ---------------------------------------------------------------- run markers

    async def mark_running(self, instance: str) -> bool:
        """Set this instance's running marker; True if it was already set (the last run did not stop cleanly)."""
        before = await self.meta.find_one_and_update(
            {"_id": f"running:{instance}"}, {"$set": {"since": datetime.now(UTC)}}, upsert=True)
        return before is not None

    async def clear_running(self, instance: str) -> None:
        await self.meta.find_one_and_delete({"_id": f"running:{instance}"})
