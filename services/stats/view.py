"""The rollups in memory, for queries: the stored rollup documents plus the log entries not yet in them.

Reading rollups per query from the local MongoDB-wire server costs seconds for a year's ranking at a million
cases (a thousand month documents with their histograms), and every flush would invalidate a cache of them.
So each process loads the rollup documents once and then follows the rollup log: every flush of every
instance is one log entry (``<owner>:<seq>``, consecutive per owner), which the view adds once, in order.

Loading is consistent without transactions: an owner appends an entry before a later *fold* ``$inc``s it into
the documents, and each document keeps, per owner, the last entry of the last fold it took (``m.<owner>``;
folds of one owner run one after another, over consecutive entries). So after reading the documents, then
the log, an entry is already in a document exactly when its number is not above that document's marker.

Year and all-time sums of the month rollups are kept too: a year's ranking or the all-time overview reads
one summary per key, whatever the number of cases.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import defaultdict
from collections.abc import Callable, Iterable
from typing import Any

from services.common.logging import get_logger
from services.stats.domain import Counters, Summary, parse_rollup_id, rollup_id
from services.stats.lists import CaseLists, Change
from services.stats.store import StatsStore, rollup_location

log = get_logger(__name__)
ALL_TIME = "*"


class RollupView:
    def __init__(self, store: StatsStore, cache_size: int = 256) -> None:
        self.store = store
        self.loaded = False
        self.version = 0  # changes whenever any rollup does
        self.heads: dict[str, int] = {}  # per owner, the last log entry included
        self._rollups: dict[str, Summary] = {}  # day and month rollups by id
        self._sums: dict[str, Summary] = {}  # year ("YYYY") and all-time ("*") sums of the month rollups
        self._keys: dict[str, set[str]] = defaultdict(set)
        self._months: set[str] = set()
        self.lists = CaseLists()  # the bulletin's case lists (典型案例, overdue and escalated) by month
        self._lock = asyncio.Lock()
        self._cache: dict[tuple, Any] = {}
        self._cache_version = -1
        self._cache_size = cache_size

    # ------------------------------------------------------------------ following the log

    async def load(self) -> None:
        """(Re)build the view from the rollup documents and the log."""
        async with self._lock:
            await self._load()

    async def catch_up(self, probe_all: bool = True) -> None:
        """Add the log entries written since the last call (loading first if needed). Without ``probe_all``,
        only owners whose head hint moved are read: the hint is written after the entry, so an owner that died
        in between has its last entry found by the next full probe."""
        async with self._lock:
            if not self.loaded:
                await self._load()
                return
            for owner, state in (await self.store.log_owners()).items():
                head = self.heads.get(owner, 0)
                if head < state.floor:  # entries we never saw were trimmed: only the documents have them now
                    log.warning("rollup_view_reload", owner=owner, head=head, floor=state.floor)
                    await self._load()
                    return
                if probe_all or state.head > head:
                    for record in await self.store.read_log(owner, head):
                        self.apply(owner, record.seq, record.deltas, record.lists)

    async def follow(self, stop: asyncio.Event, every: float, probe_every: float = 30.0) -> None:
        """Catch up every ``every`` seconds until ``stop``: other instances' flushes reach this process. Owners
        whose head hint did not move are read every ``probe_every`` seconds only (replicas that are gone)."""
        last_probe = time.monotonic()
        while not stop.is_set():
            try:
                probe_all = time.monotonic() - last_probe >= probe_every
                await self.catch_up(probe_all=probe_all)
                if probe_all:
                    last_probe = time.monotonic()
            except Exception as exc:
                log.warning("rollup_view_catch_up_failed", error=str(exc)[:200], error_type=type(exc).__name__)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=every)

    def apply(self, owner: str, seq: int, deltas: dict[str, Counters],
              lists: dict[str, Change] | None = None) -> bool:
        """Add ``owner``'s log entry ``seq`` if it is the next one; True if the view includes it now."""
        head = self.heads.get(owner, 0)
        if seq != head + 1:
            return seq <= head
        for rid, counters in deltas.items():
            self._add(rid, counters)
        self.lists.apply(lists or {})
        self.heads[owner] = seq
        self.version += 1
        return True

    async def _load(self) -> None:
        for _attempt in range(5):
            # documents first: an owner registers before its first entry, so any owner whose increments they
            # hold is among the floors read next
            documents = await self.store.rollup_documents()
            stored_lists = await self.store.case_lists()  # changes are stored before their log entry
            floors = await self.store.log_floors()
            entries = {owner: await self.store.read_log(owner, floor) for owner, floor in floors.items()}
            if await self.store.log_floors() != floors:  # trimmed meanwhile: read again
                continue
            markers = {(d.collection, d.doc_id): d.markers for d in documents}
            self._rollups, self._sums, self._keys, self._months = {}, {}, defaultdict(set), set()
            self.lists = CaseLists()
            self.lists.apply(stored_lists)
            for document in documents:
                for rid, counters in document.rollups.items():
                    self._add(rid, counters)
            self.heads = dict(floors)
            for owner, records in entries.items():
                for record in records:
                    for rid, counters in record.deltas.items():
                        coll, doc_id, _prefix = rollup_location(rid)
                        if record.seq > markers.get((coll, doc_id), {}).get(owner, 0):
                            self._add(rid, counters)
                    self.lists.apply(record.lists)  # (again if stored already: the same lists)
                    self.heads[owner] = record.seq
            self.loaded = True
            self.version += 1
            return
        raise RuntimeError("the rollup log was trimmed faster than this process could read it")

    def _add(self, rid: str, counters: Counters) -> None:
        self._rollups.setdefault(rid, Summary()).add(counters)
        dim, key, period = parse_rollup_id(rid)
        self._keys[dim].add(key)
        if len(period) == 7:
            self._months.add(period)
            for total in (period[:4], ALL_TIME):
                self._sums.setdefault(rollup_id(dim, key, total), Summary()).add(counters)

    # ------------------------------------------------------------------ queries

    def months(self) -> list[str]:
        return sorted(self._months)

    def keys(self, dim: str) -> list[str]:
        return sorted(self._keys.get(dim, ()))

    def rollup(self, dim: str, key: str, period: str) -> Summary:
        """One rollup (a copy), empty if it has no cases."""
        found = self._rollups.get(rollup_id(dim, key, period))
        return found.copy() if found is not None else Summary()

    def rollups(self) -> dict[str, Counters]:
        """Every day and month rollup as flat counters, by id: what reconcile compares with the ledger."""
        return {rid: s.flat() for rid, s in self._rollups.items() if s}

    def summaries(self, dim: str, months: Iterable[str], days: Iterable[str]) -> dict[str, Summary]:
        """Summaries by key of one dimension over whole months plus single days (keys with cases only).

        Read-only: a summary may be the view's own, which the next log entry changes."""
        periods = [*self._cover(list(months)), *days]
        out: dict[str, Summary] = {}
        for key in self._keys.get(dim, ()):
            parts = [c for p in periods if (c := self._get(rollup_id(dim, key, p)))]
            if not parts:
                continue
            if len(parts) == 1:  # the stored summary itself: no copy of a thousand buckets per key
                out[key] = parts[0]
                continue
            summary = parts[0].copy()
            for more in parts[1:]:
                summary.merge(more)
            out[key] = summary
        return out

    def cached(self, key: tuple, compute: Callable[[], Any]) -> Any:
        """``compute()`` reused until any rollup changes."""
        if self._cache_version != self.version:
            self._cache, self._cache_version = {}, self.version
        if key not in self._cache:
            if len(self._cache) >= self._cache_size:
                self._cache.pop(next(iter(self._cache)))
            self._cache[key] = compute()
        return self._cache[key]

    def _get(self, rid: str) -> Summary | None:
        return self._rollups.get(rid) or self._sums.get(rid)

    def _cover(self, months: list[str]) -> list[str]:
        """The fewest stored periods that add up to these months: all time, whole years, single months."""
        wanted = set(months)
        if wanted and wanted == self._months:
            return [ALL_TIME]
        by_year: dict[str, set[str]] = defaultdict(set)
        for month in wanted:
            by_year[month[:4]].add(month)
        out: list[str] = []
        for year, ms in sorted(by_year.items()):
            out += [year] if len(ms) == 12 else sorted(ms)
        return out
