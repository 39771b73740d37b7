"""Use cases: apply a batch of facts exactly once, recover an interrupted batch, reconcile, answer queries.

Crash safety without transactions (DESIGN.md §3). Applying a batch B of facts:

1. read the ledger documents of B's cases (one ``$in`` query per thousand cases), fold the new facts in and
   compute the rollup deltas, all in memory (pure domain code);
2. journal ``batches/B``: the new ledger documents and B's merged deltas, in one insert; the journal's
   existence means "B is not finished";
3. swap the new ledger documents in (delete by ids, insert_many);
4. B belongs to this instance's open group G (its id is in B's journal). A *flush* closes G and ``$inc``-s
   G's deltas, merged per rollup document, with a guard ``m.<instance> != G`` that the same update sets to G,
   so each rollup document takes G at most once; then G's journals are deleted. Flushes run one at a time
   (the next group's batches may go to the ledger meanwhile).

A crash anywhere leaves journals behind. :meth:`Projector.recover_all` takes the journals group by group in
order, redoes step 3 for every ledger document older than the journal's (or missing), and flushes the group
with its own id, which the guards make harmless. Kafka offsets may be committed after step 3: the
journals hold everything a flush needs. Events already in a case's facts are ignored (at-least-once).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import Any

from services.common.logging import get_logger
from services.common.mongo import id_chunks
from services.common.workdays import WorkCalendar, default_calendar
from services.stats.domain import (
    COUNTERS,
    Counters,
    Summary,
    contributions,
    deltas,
    flatten,
    fold,
    merge_counters,
    parse_rollup_id,
)
from services.stats.store import StatsStore

log = get_logger(__name__)


def _encode(delta: Mapping[str, Counters]) -> list[dict[str, Any]]:
    # counter names contain dots (histogram buckets), which cannot be document keys, and the local server
    # refuses nested arrays: names and values go in two parallel lists
    return [{"r": rid, "k": sorted(c), "v": [c[k] for k in sorted(c)]} for rid, c in sorted(delta.items())]


def _decode(raw: list[dict[str, Any]]) -> dict[str, Counters]:
    return {row["r"]: {name: int(n) for name, n in zip(row["k"], row["v"], strict=True)} for row in raw}


@dataclass
class BatchResult:
    batch_id: str | None
    facts: int
    cases_changed: int
    rollups_touched: int
    duplicates: int = 0


@dataclass
class Projector:
    store: StatsStore
    instance: str
    calendar: WorkCalendar = field(default_factory=default_calendar)
    foreign_grace_seconds: float = 300.0
    flush_seconds: float = 2.0  # with apply(flush=False): how long deltas may wait before a flush is due
    flush_facts: int = 50_000  # ... or how many facts
    rollups_flushed: int = 0  # rollup increments written by finished flushes (a figure for benchmarks)
    _group_id: str = ""
    _group: list[str] = field(default_factory=list)  # journaled, not yet flushed batches (in order)
    _merged: dict[str, Counters] = field(default_factory=dict)
    _group_facts: int = 0
    _group_since: float = 0.0
    _seq: int = 0
    _flushing: asyncio.Task | None = None

    async def apply(self, facts: Iterable[Mapping[str, Any]], *, flush: bool = True) -> BatchResult:
        """Apply facts to the ledger; with ``flush`` (the default) the rollups too before returning."""
        by_case: dict[str, dict[str, Mapping[str, Any]]] = defaultdict(dict)
        count = 0
        for fact in facts:
            by_case[fact["case_id"]][fact["id"]] = fact
            count += 1
        result = BatchResult(None, count, 0, 0)
        for case_ids in id_chunks(list(by_case)):
            chunk = {cid: by_case[cid] for cid in case_ids}
            batch_id, changed, duplicates = await self._apply_cases(chunk)
            result.batch_id = batch_id or result.batch_id
            result.cases_changed += changed
            result.duplicates += duplicates
        self._group_facts += count - result.duplicates
        if flush:
            result.rollups_touched = await self.flush()
        elif self.flush_due():
            await self.flush(wait=False)
        return result

    async def _apply_cases(self, by_case: dict[str, dict[str, Mapping[str, Any]]]) -> tuple[str | None, int, int]:
        docs = await self.store.load_cases(by_case)
        new_docs: list[dict[str, Any]] = []
        merged: dict[str, Counters] = {}
        duplicates = 0
        for case_id, new_facts in by_case.items():
            doc = docs.get(case_id)
            known = {f["id"] for f in doc["events"]} if doc else set()
            fresh = [f for fid, f in new_facts.items() if fid not in known]
            duplicates += len(new_facts) - len(fresh)
            if not fresh:
                continue
            events = [*(doc["events"] if doc else []), *fresh]
            after = fold(events, self.calendar)
            merge_counters(merged, deltas(doc["s"] if doc else None, after))
            new_docs.append({"_id": case_id, "rev": (doc["rev"] if doc else 0) + 1, "events": events, "s": after})
        if not new_docs:
            return None, 0, duplicates
        batch_id = uuid.uuid4().hex
        self._seq = max(self._seq + 1, time.time_ns())
        if not self._group:
            self._group_id = uuid.uuid4().hex
            self._group_since = time.monotonic()
        await self.store.open_batch(batch_id, self.instance, self._group_id, self._seq, new_docs, _encode(merged))
        await self.store.replace_cases(new_docs, existing=set(docs))
        self._group.append(batch_id)
        merge_counters(self._merged, merged)
        return batch_id, len(new_docs), duplicates

    def pending(self) -> bool:
        return bool(self._group)

    def flush_due(self) -> bool:
        return bool(self._group) and (self._group_facts >= self.flush_facts
                                      or time.monotonic() - self._group_since >= self.flush_seconds)

    async def flush(self, wait: bool = True) -> int:
        """Apply the unflushed group's deltas to the rollups exactly once; returns the rollups touched.

        Flushes run one at a time. With ``wait=False`` the flush runs in the background while the next
        batches go to the ledger (different documents); the next flush, or ``flush()``, waits for it and
        raises its error, if any."""
        if self._flushing is not None:
            task, self._flushing = self._flushing, None
            await task
        if not self._group:
            return 0
        work = self._apply_group(self.instance, self._group_id, self._group, self._merged)
        self._group, self._merged, self._group_facts = [], {}, 0
        if not wait:
            self._flushing = asyncio.create_task(work)
            return 0
        return await work

    async def _apply_group(self, owner: str, group_id: str, batches: list[str], merged: dict[str, Counters],
                           recovering: bool = False) -> int:
        await self.store.register(merged)
        await self.store.increment_once(merged, group_id, owner, recovering)
        await self.store.close_batches(batches)
        self.rollups_flushed += len(merged)
        return len(merged)

    async def recover_all(self) -> int:
        """Finish every interrupted group: this instance's, and other instances' after a grace period."""
        if self._flushing is not None:
            task, self._flushing = self._flushing, None
            task.cancel()
            with contextlib.suppress(BaseException):
                await task
        self._group, self._merged, self._group_facts = [], {}, 0
        by_owner: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
        for journal in await self.store.open_batches():
            by_owner[journal["instance"], journal["group"]].append(journal)
        recovered = 0
        for (owner, group_id), journals in sorted(by_owner.items(), key=lambda kv: kv[1][0]["seq"]):
            newest = max(j["opened_at"] for j in journals)
            if newest.tzinfo is None:
                newest = newest.replace(tzinfo=UTC)
            # another live replica may be finishing its own group right now: leave it a grace period
            if owner != self.instance and (datetime.now(UTC) - newest).total_seconds() < self.foreign_grace_seconds:
                continue
            merged: dict[str, Counters] = {}
            for journal in journals:
                await self._redo_ledger(journal["docs"])
                merge_counters(merged, _decode(journal["deltas"]))
            await self._apply_group(owner, group_id, [j["_id"] for j in journals], merged, recovering=True)
            log.info("batches_recovered", owner=owner, batches=len(journals), rollups=len(merged))
            recovered += len(journals)
        return recovered

    async def _redo_ledger(self, docs: list[dict[str, Any]]) -> None:
        current = await self.store.load_cases(d["_id"] for d in docs)
        stale = [d for d in docs if d["_id"] not in current or current[d["_id"]]["rev"] < d["rev"]]
        if stale:
            await self.store.replace_cases(stale)

    async def reconcile(self, fix: bool = True) -> dict[str, Any]:
        """Rebuild every rollup from the ledger, compare with the stored ones, and (by default) fix them."""
        await self.recover_all()
        expected: dict[str, Counters] = {}
        cases = 0
        async for doc in self.store.scan_states():
            cases += 1
            merge_counters(expected, contributions(doc["s"]))
        actual: dict[str, Counters] = {}
        for gran in ("d", "m"):
            for doc in await self.store.all_rollups(gran=gran):
                actual[doc["_id"]] = flatten(doc)
        differences = []
        for rid in sorted(expected.keys() | actual.keys()):
            want, have = expected.get(rid, {}), actual.get(rid, {})
            if want != have:
                diff = {k: want.get(k, 0) - have.get(k, 0) for k in want.keys() | have.keys()
                        if want.get(k, 0) != have.get(k, 0)}
                differences.append({"rollup": rid, "missing": diff})
                if fix:
                    await self.store.overwrite_rollup(rid, want)
        report = {"cases": cases, "rollups": len(expected), "differences": len(differences),
                  "examples": differences[:20], "fixed": fix and bool(differences)}
        log.info("reconciled", cases=cases, rollups=len(expected), differences=len(differences))
        return report


# --------------------------------------------------------------------------------------------------
# Queries
# --------------------------------------------------------------------------------------------------


def summarise(docs: Iterable[Mapping[str, Any]]) -> dict[str, Summary]:
    """Sum rollup documents by their key."""
    out: dict[str, Summary] = defaultdict(Summary)
    for doc in docs:
        out[doc["key"]].add(flatten(doc))
    return dict(out)


async def summaries(store: StatsStore, dim: str, months: list[str], days: list[str]) -> dict[str, Summary]:
    """Summaries by key of one dimension over a period; cached until the rollups change (callers must not
    modify the returned summaries)."""

    async def compute() -> dict[str, Summary]:
        return summarise(await store.rollups(dim, months, days))

    return await store.cached(("summaries", dim, tuple(months), tuple(days)), compute)


async def overview(store: StatsStore, months: list[str], days: list[str], today: date) -> dict[str, Any]:
    by_key = await summaries(store, "all", months, days)
    return by_key.get("all", Summary()).rates(today)


def counters_of(summary: Summary) -> dict[str, int]:
    return {k: summary.get(k) for k in COUNTERS}


__all__ = ["BatchResult", "Projector", "overview", "parse_rollup_id", "summaries", "summarise"]
