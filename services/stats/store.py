"""MongoDB adapter for the ledger, the rollups, the batch journal and the run markers.

Every single-document read and write goes through ``find_one`` / ``find_one_and_update`` by ``_id``:
on the local FerretDB (SQLite) those are index lookups, while ``update_one``/``bulk_write`` and
``find`` without a limit scan the collection (measured: 30 ms per update at 10k documents). The writes
of a batch are issued concurrently, which is the bulk path that stays fast on both servers.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Iterable
from datetime import UTC, datetime
from typing import Any

from pymongo import ReturnDocument
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import DuplicateKeyError

from services.stats.domain import COUNTERS, Counters, parse_rollup_id


def _rollup_collection(rid: str) -> str:
    return "rollup_m" if len(parse_rollup_id(rid)[2]) == 7 else "rollup_d"


class StatsStore:
    def __init__(self, db: AsyncDatabase, concurrency: int = 16) -> None:
        self.db = db
        self.ledger = db["ledger"]
        self.batches = db["batches"]
        self.meta = db["meta"]
        self._sem = asyncio.Semaphore(concurrency)
        self._known_rollups: set[str] = set()
        self._meta_lock = asyncio.Lock()

    async def _limited(self, aw: Awaitable[Any]) -> Any:
        async with self._sem:
            return await aw

    async def gather(self, calls: Iterable[Awaitable[Any]]) -> list[Any]:
        return list(await asyncio.gather(*(self._limited(c) for c in calls)))

    async def ensure_indexes(self) -> None:
        for name in ("rollup_d", "rollup_m"):
            await self.db[name].create_index([("dim", 1), ("period", 1)])
        await self.batches.create_index([("state", 1)])

    # ---------------------------------------------------------------- ledger

    async def load_cases(self, case_ids: Iterable[str]) -> dict[str, dict[str, Any]]:
        ids = list(case_ids)
        docs = await self.gather(self.ledger.find_one({"_id": cid}) for cid in ids)
        return {cid: doc for cid, doc in zip(ids, docs, strict=True) if doc is not None}

    async def write_case(self, case_id: str, expected_rev: int | None, fields: dict[str, Any]) -> bool:
        """Replace a case's ledger fields if nobody changed it since ``expected_rev`` (None: new case)."""
        if expected_rev is None:
            result = await self.ledger.find_one_and_update(
                {"_id": case_id}, {"$setOnInsert": fields}, upsert=True, return_document=ReturnDocument.AFTER)
            return result is not None and result.get("rev") == fields["rev"]
        # one consumer owns a case's partition, so the guard is a read-back, not a filter: on FerretDB a
        # filter beyond _id turns the update into a collection scan
        result = await self.ledger.find_one_and_update({"_id": case_id}, {"$set": fields})
        return result is not None and result.get("rev") == expected_rev

    async def write_cases(self, writes: list[tuple[str, int | None, dict[str, Any]]]) -> list[bool]:
        return await self.gather(self.write_case(cid, rev, fields) for cid, rev, fields in writes)

    async def ledger_size(self) -> int:
        return await self.ledger.estimated_document_count()

    async def scan_states(self, batch_size: int = 5000):
        cursor = self.ledger.find({}, {"s": 1, "pending": 1}, batch_size=batch_size)
        async for doc in cursor:
            yield doc

    async def browse(self, flt: dict[str, Any], skip: int, limit: int) -> list[dict[str, Any]]:
        cursor = self.ledger.find(flt, {"s": 1}).skip(skip).limit(limit)
        return await cursor.to_list()

    # ---------------------------------------------------------------- batches (journal of in-flight work)

    async def open_batch(self, batch_id: str, instance: str, case_ids: list[str]) -> None:
        await self.batches.insert_one({"_id": batch_id, "instance": instance, "state": "open",
                                       "cases": case_ids, "opened_at": datetime.now(UTC)})

    async def set_batch_state(self, batch_id: str, state: str, **extra: Any) -> None:
        await self.batches.find_one_and_update({"_id": batch_id}, {"$set": {"state": state, **extra}})

    async def batch(self, batch_id: str) -> dict[str, Any] | None:
        return await self.batches.find_one({"_id": batch_id})

    async def open_batches(self) -> list[dict[str, Any]]:
        return await self.batches.find({"state": {"$ne": "done"}}).to_list()

    async def forget_done_batches(self, keep: int = 1000) -> None:
        """Pending entries of done batches are dropped lazily; the journal only needs recent ones."""
        done = await self.batches.find({"state": "done"}, {"_id": 1}).to_list()
        if len(done) > keep * 2:
            await self.batches.delete_many({"_id": {"$in": [d["_id"] for d in done[: len(done) - keep]]}})

    # ---------------------------------------------------------------- rollups

    async def ensure_rollups(self, rollup_ids: Iterable[str]) -> None:
        missing = [rid for rid in rollup_ids if rid not in self._known_rollups]

        async def ensure(rid: str) -> None:
            dim, key, period = parse_rollup_id(rid)
            await self.db[_rollup_collection(rid)].find_one_and_update(
                {"_id": rid}, {"$setOnInsert": {"dim": dim, "key": key, "period": period, "marks": []}},
                upsert=True)
            await self.register_keys(dim, key, period)
            self._known_rollups.add(rid)

        await self.gather(ensure(rid) for rid in missing)

    async def register_keys(self, dim: str, key: str, period: str) -> None:
        """Directories of keys and months, so queries read rollups by _id instead of scanning (FerretDB)."""
        await self._add_to_set(f"keys:{dim}", "keys", key)
        if len(period) == 7:
            await self._add_to_set("periods", "months", period)

    async def _add_to_set(self, doc_id: str, field: str, value: str) -> None:
        # FerretDB applies findAndModify as read-modify-write: two concurrent $addToSet on one document can
        # lose a value, so this process serialises them (one rollup document is never updated concurrently)
        async with self._meta_lock:
            await self._add_to_set_unlocked(doc_id, field, value)

    async def _add_to_set_unlocked(self, doc_id: str, field: str, value: str) -> None:
        try:
            await self.meta.find_one_and_update({"_id": doc_id}, {"$addToSet": {field: value}}, upsert=True)
        except DuplicateKeyError:  # two concurrent upserts created it: the second now simply updates
            await self.meta.find_one_and_update({"_id": doc_id}, {"$addToSet": {field: value}})

    async def keys(self, dim: str) -> list[str]:
        doc = await self.meta.find_one({"_id": f"keys:{dim}"})
        return sorted((doc or {}).get("keys") or [])

    async def increment_once(self, increments: dict[str, Counters], marker: str) -> None:
        """$inc each rollup unless it already carries ``marker``: re-running a batch cannot double count.

        The marker is read, then pushed in the same single-document update as the increments. A batch is
        only ever finished by one process at a time (its owner, or a recoverer after the owner's grace
        period), so read-then-update is safe, and it keeps every write an ``_id`` lookup on FerretDB.
        """

        async def one(rid: str, counters: Counters) -> None:
            coll = self.db[_rollup_collection(rid)]
            doc = await coll.find_one({"_id": rid}, {"marks": 1})
            if doc is not None and marker in (doc.get("marks") or []):
                return
            await coll.find_one_and_update({"_id": rid}, {"$inc": counters, "$push": {"marks": marker}})

        await self.gather(one(rid, counters) for rid, counters in increments.items() if counters)

    async def clear_marker(self, rollup_ids: Iterable[str], marker: str) -> None:
        await self.gather(
            self.db[_rollup_collection(rid)].find_one_and_update({"_id": rid}, {"$pull": {"marks": marker}})
            for rid in rollup_ids)

    async def rollups(self, dim: str, months: list[str], days: list[str]) -> list[dict[str, Any]]:
        """The rollup documents of one dimension over whole months plus single days."""
        docs: list[dict[str, Any]] = []
        keys = ["all"] if dim == "all" else await self.keys(dim)
        ids = [f"{dim}|{key}|{month}" for key in keys for month in months]
        if dim == "all":
            ids += [f"all|all|{d}" for d in days]
        found = await self.gather(self.db[_rollup_collection(rid)].find_one({"_id": rid}) for rid in ids)
        docs += [d for d in found if d]
        if days and dim != "all":  # partial months of a breakdown: rare, scans the day rollups
            docs += await self.db["rollup_d"].find({"dim": dim, "period": {"$in": days}}).to_list()
        return docs

    async def all_rollups(self, dim: str | None = None, gran: str = "m") -> list[dict[str, Any]]:
        flt = {"dim": dim} if dim else {}
        return await self.db[f"rollup_{gran}"].find(flt).to_list()

    async def rollup_periods(self) -> list[str]:
        doc = await self.meta.find_one({"_id": "periods"})
        return sorted((doc or {}).get("months") or [])

    async def overwrite_rollup(self, rid: str, counters: Counters) -> None:
        """Set a rollup's counters to exact values (reconcile); names missing from ``counters`` become 0."""
        dim, key, period = parse_rollup_id(rid)
        plain = {name: counters.get(name, 0) for name in COUNTERS}
        nested: dict[str, dict[str, int]] = {"rh": {}, "du": {}, "do": {}}
        for name, value in counters.items():
            if "." in name:
                hist, bucket = name.split(".", 1)
                nested[hist][bucket] = value
        await self.db[_rollup_collection(rid)].find_one_and_replace(
            {"_id": rid}, {"dim": dim, "key": key, "period": period, "marks": [], **plain, **nested}, upsert=True)
        await self.register_keys(dim, key, period)
        self._known_rollups.add(rid)

    async def all_rollup_ids(self) -> list[str]:
        ids: list[str] = []
        for name in ("rollup_d", "rollup_m"):
            ids += [d["_id"] for d in await self.db[name].find({}, {"_id": 1}).to_list()]
        return ids

    # ---------------------------------------------------------------- run markers

    async def mark_running(self, instance: str) -> bool:
        """Set this instance's running marker; True if it was already set (the last run did not stop cleanly)."""
        before = await self.meta.find_one_and_update(
            {"_id": f"running:{instance}"}, {"$set": {"since": datetime.now(UTC)}}, upsert=True)
        return before is not None

    async def clear_running(self, instance: str) -> None:
        await self.meta.find_one_and_delete({"_id": f"running:{instance}"})
