"""Use cases: apply a batch of facts exactly once, recover an interrupted batch, reconcile, answer queries.

Crash safety without transactions (DESIGN.md §3), per batch B:

1. journal ``batches/B`` = open, listing the cases B changes;
2. each changed case's ledger document gets its new state, its new facts **and** ``pending.B`` (its rollup
   deltas) in one single-document write, guarded by the document's ``rev``;
3. the deltas of B, merged per rollup document, are ``$inc``-ed with a ``marks: {$ne: B}`` guard that also
   pushes B, so each rollup document takes B at most once;
4. ``batches/B`` = done; the B marks are pulled. ``pending.B`` entries of done batches are dropped lazily.

A crash anywhere leaves B open; :meth:`Projector.recover` re-reads ``pending.B`` from the ledger and
re-runs 3–4, which the marks make harmless. Kafka offsets are committed only after 4, so events of a batch
that never reached step 2 are simply delivered again; events already in a case's facts are ignored.
"""

from __future__ import annotations

import uuid
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import Any

from services.common.logging import get_logger
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


class ConcurrentUpdate(RuntimeError):
    """Another writer changed a case between our read and our write: the batch is retried."""


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
    done_batches: set[str] = field(default_factory=set)
    foreign_grace_seconds: float = 300.0

    async def apply(self, facts: Iterable[Mapping[str, Any]]) -> BatchResult:
        by_case: dict[str, dict[str, Mapping[str, Any]]] = defaultdict(dict)
        count = 0
        for fact in facts:
            by_case[fact["case_id"]][fact["id"]] = fact
            count += 1
        if not by_case:
            return BatchResult(None, 0, 0, 0)
        docs = await self.store.load_cases(by_case)
        batch_id = uuid.uuid4().hex
        writes: list[tuple[str, int | None, dict[str, Any]]] = []
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
            before = doc["s"] if doc else None
            after = fold(events, self.calendar)
            delta = deltas(before, after)
            pending = await self._still_pending(doc.get("pending", {}) if doc else {})
            if delta:
                pending[batch_id] = _encode(delta)
                merge_counters(merged, delta)
            rev = doc["rev"] if doc else None
            writes.append((case_id, rev, {"rev": (rev or 0) + 1, "events": events, "s": after, "pending": pending}))
        if not writes:
            return BatchResult(None, count, 0, 0, duplicates)
        await self.store.open_batch(batch_id, self.instance, [w[0] for w in writes])
        results = await self.store.write_cases(writes)
        if not all(results):
            # the cases that were written carry pending.B: finish B for them, then let the caller retry
            await self.recover(batch_id)
            raise ConcurrentUpdate(f"{results.count(False)} ledger documents changed under batch {batch_id}")
        await self._apply_rollups(batch_id, merged)
        return BatchResult(batch_id, count, len(writes), len(merged), duplicates)

    async def _still_pending(self, pending: Mapping[str, Any]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for bid, raw in pending.items():
            if bid in self.done_batches:
                continue
            journal = await self.store.batch(bid)
            if journal is None or journal.get("state") == "done":
                self.done_batches.add(bid)
                continue
            out[bid] = raw
        return out

    async def _apply_rollups(self, batch_id: str, merged: dict[str, Counters]) -> None:
        await self.store.ensure_rollups(merged)
        await self.store.increment_once(merged, batch_id)
        await self.store.set_batch_state(batch_id, "done")
        self.done_batches.add(batch_id)
        await self.store.clear_marker(merged, batch_id)

    async def recover(self, batch_id: str) -> int:
        """Finish an interrupted batch from the pending deltas its cases recorded; returns rollups touched."""
        journal = await self.store.batch(batch_id)
        if journal is None or journal.get("state") == "done":
            return 0
        docs = await self.store.load_cases(journal.get("cases", []))
        merged: dict[str, Counters] = {}
        for doc in docs.values():
            raw = (doc.get("pending") or {}).get(batch_id)
            if raw:
                merge_counters(merged, _decode(raw))
        await self._apply_rollups(batch_id, merged)
        log.info("batch_recovered", batch=batch_id, rollups=len(merged))
        return len(merged)

    async def recover_all(self) -> int:
        recovered = 0
        for journal in await self.store.open_batches():
            opened = journal.get("opened_at")
            mine = journal.get("instance") == self.instance
            # another live replica may be finishing its own batch right now: leave it a grace period
            if not mine and opened and (datetime.now(UTC) - opened).total_seconds() < self.foreign_grace_seconds:
                continue
            await self.recover(journal["_id"])
            recovered += 1
        return recovered

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
    return summarise(await store.rollups(dim, months, days))


async def overview(store: StatsStore, months: list[str], days: list[str], today: date) -> dict[str, Any]:
    by_key = await summaries(store, "all", months, days)
    return by_key.get("all", Summary()).rates(today)


def counters_of(summary: Summary) -> dict[str, int]:
    return {k: summary.get(k) for k in COUNTERS}


__all__ = ["BatchResult", "ConcurrentUpdate", "Projector", "overview", "parse_rollup_id", "summaries", "summarise"]
