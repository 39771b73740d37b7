"""Use cases: apply a batch of facts exactly once, recover an interrupted batch, reconcile (:class:`Projector`);
answer the queries and build the monthly bulletin (:class:`StatsQueries`).

Crash safety without transactions (DESIGN.md §3). Applying a batch B of facts:

1. read the ledger documents of B's cases (one ``$in`` query per thousand cases), fold the new facts in and
   compute the rollup deltas, all in memory (pure domain code);
2. journal ``batches/B``: the new ledger documents and B's merged deltas, in one insert; the journal's
   existence means "B is not finished";
3. swap the new ledger documents in (delete by ids, insert_many);
4. B belongs to this instance's open group G, which has the next number N of this instance's rollup log
   (both are in B's journal). A *flush* closes G: it appends G's deltas, merged, as log entry N (readers
   follow the log, see ``view.py``), then deletes G's journals. Flushes run one at a time (the next group's
   batches may go to the ledger meanwhile). The group's bulletin list changes (``lists.py``) are stored
   first and ride in the same log entry.
5. Every ``fold_seconds`` a *fold* adds the entries since the last fold to the rollup documents: one ``$inc``
   per document for all of them, guarded by ``m.<instance> != T`` (T, the fold's last entry) which the same
   update sets, after noting T as the fold in progress. An interrupted fold is re-run with the same entries
   and T, so no document takes an entry twice.

A crash anywhere leaves journals or a fold in progress behind. :meth:`Projector.recover_all` takes the
journals group by group in order, redoes step 3 for every ledger document older than the journal's (or
missing), and flushes the group with its own number (an entry already there is not written again), then
finishes the fold. Kafka offsets may be committed after step 3: the journals hold everything a flush needs.
Events already in a case's facts are ignored.
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

from services.common.clock import Clock
from services.common.logging import get_logger
from services.common.mongo import id_chunks
from services.common.people import chinese_date, people_date, people_month
from services.common.workdays import WorkCalendar, default_calendar, local_date
from services.stats.config import StatsSettings
from services.stats.domain import (
    UNASSIGNED,
    Counters,
    InvalidQuery,
    LedgerFilters,
    Period,
    Summary,
    check_sort,
    contributions,
    daily_range,
    deltas,
    fold,
    merge_counters,
    month_bounds,
    praise_and_criticism,
    rank,
    resolve_period,
)
from services.stats.lists import Change, changes_of, list_change, merge_changes
from services.stats.naming import RATE_NAMES, key_name, named_row
from services.stats.reports import bulletin_xlsx, invalid_reason_name, ledger_row
from services.stats.store import LogConflict, StatsStore, ledger_query
from services.stats.view import RollupView

log = get_logger(__name__)


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
    fold_seconds: float = 30.0  # how often flushed entries go into the rollup documents (0: after every flush)
    log_keep: int = 300  # own log entries kept after they are in the documents: a reader's catch-up window
    trim_every: int = 50  # ... trimmed this many at a time
    view: RollupView = None  # type: ignore[assignment]  # the rollups in memory; one per store by default
    rollups_flushed: int = 0  # rollup increments written by finished flushes (a figure for benchmarks)
    _started: bool = False
    _next_seq: int = 1
    _floor: int = 0
    _last_fold: float = 0.0
    _group_id: str = ""
    _group_seq: int = 0
    _group: list[str] = field(default_factory=list)  # journaled, not yet flushed batches (in order)
    _merged: dict[str, Counters] = field(default_factory=dict)
    _lists: dict[str, Change] = field(default_factory=dict)  # the open group's bulletin list changes
    _group_facts: int = 0
    _group_since: float = 0.0
    _flushing: asyncio.Task | None = None

    def __post_init__(self) -> None:
        if self.view is None:
            self.view = RollupView(self.store)

    async def start(self) -> int:
        """Register this instance's log, load the view and finish interrupted work; returns batches recovered."""
        await self.store.register_owner(self.instance)
        if not await self.store.case_lists_built():
            await self.rebuild_lists()
        await self.view.catch_up()
        self._started = True
        return await self.recover_all()

    async def resume(self, *, unclean: bool) -> None:
        """Start-up of a replica: after an unclean stop (its running marker was still set) rebuild and fix the
        rollups from the ledger; otherwise load the view and finish interrupted work."""
        if not unclean:
            await self.start()
            return
        log.warning("unclean_shutdown_detected", instance=self.instance)
        report = await self.reconcile(fix=True)
        log.info("startup_reconcile", differences=report["differences"], cases=report["cases"])

    async def apply(self, facts: Iterable[Mapping[str, Any]], *, flush: bool = True) -> BatchResult:
        """Apply facts to the ledger; with ``flush`` (the default) the rollups too before returning."""
        if not self._started:
            await self.start()
        by_case: dict[str, dict[str, Mapping[str, Any]]] = defaultdict(dict)
        count = 0
        for fact in facts:
            by_case[fact["case_id"]][fact["id"]] = fact
            count += 1
        # an event repeated inside the batch is a duplicate too (at-least-once delivery)
        result = BatchResult(None, count, 0, 0, duplicates=count - sum(map(len, by_case.values())))
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
        lists: dict[str, Change] = {}
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
            rev = (doc["rev"] if doc else 0) + 1
            if (change := list_change(rev, doc["s"] if doc else {}, after)) is not None:
                lists[case_id] = change
            new_docs.append({"_id": case_id, "rev": rev, "events": events, "s": after})
        if not new_docs:
            return None, 0, duplicates
        batch_id = await self._journal(new_docs, merged, lists)
        await self.store.replace_cases(new_docs, existing=set(docs))
        return batch_id, len(new_docs), duplicates

    async def _journal(self, docs: list[dict[str, Any]], merged: dict[str, Counters],
                       lists: dict[str, Change] | None = None) -> str:
        """Journal a batch into the open group (opening one, with the next log number, if none is)."""
        if not self._group:
            self._group_id = uuid.uuid4().hex
            self._group_seq = self._next_seq
            self._next_seq += 1
            self._group_since = time.monotonic()
        batch_id = uuid.uuid4().hex
        await self.store.open_batch(batch_id, self.instance, self._group_id, self._group_seq, docs, merged, lists)
        self._group.append(batch_id)
        merge_counters(self._merged, merged)
        merge_changes(self._lists, lists or {})
        return batch_id

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
        work = self._flush_then_fold(self._group_id, self._group_seq, self._group, self._merged, self._lists)
        self._group, self._merged, self._lists, self._group_facts = [], {}, {}, 0
        if not wait:
            self._flushing = asyncio.create_task(work)
            return 0
        return await work

    async def _flush_then_fold(self, group_id: str, seq: int, batches: list[str], merged: dict[str, Counters],
                               lists: dict[str, Change]) -> int:
        touched = await self._apply_group(self.instance, group_id, seq, batches, merged, lists)
        if time.monotonic() - self._last_fold >= self.fold_seconds:
            await self.fold()
        return touched

    async def _apply_group(self, owner: str, group_id: str, seq: int, batches: list[str],
                           merged: dict[str, Counters], lists: dict[str, Change]) -> int:
        # the list changes are stored before the log entry that carries them: once the entry is trimmed,
        # the stored lists hold them (a re-run stores them again, which changes nothing)
        await self.store.save_case_lists(lists)
        seq, _written = await self._append(owner, group_id, seq, batches, merged, lists)
        self.view.apply(owner, seq, merged, lists)
        await self.store.close_batches(batches)
        self.rollups_flushed += len(merged)
        return len(merged)

    async def fold(self) -> int:
        """Add this instance's log entries since the last fold to the rollup documents, exactly once; an
        interrupted fold is finished first, with the same entries. Returns the entries folded."""
        self._last_fold = time.monotonic()
        folded, target = await self.store.fold_state(self.instance)
        entries = await self.store.read_log(self.instance, folded)
        if target is not None:
            entries = [e for e in entries if e.seq <= target]
            if not entries or entries[-1].seq != target:
                raise RuntimeError(f"fold {folded + 1}..{target} of {self.instance!r}: entries missing from the log")
        if not entries:
            return 0
        last = entries[-1].seq
        if target is None:
            await self.store.begin_fold(self.instance, last)
        merged: dict[str, Counters] = {}
        for entry in entries:
            merge_counters(merged, entry.deltas)
        await self.store.increment_once(merged, last, self.instance, recovering=target is not None)
        await self.store.end_fold(self.instance, last)
        # entries folded and older than the readers' window are no longer needed by anyone
        upto = min(last, self.view.heads.get(self.instance, last) - self.log_keep)
        if upto - self._floor >= self.trim_every:
            await self.store.trim_log(self.instance, upto, self._floor)
            self._floor = upto
        return len(entries)

    async def _append(self, owner: str, group_id: str, seq: int, batches: list[str],
                      merged: dict[str, Counters], lists: dict[str, Change]) -> tuple[int, bool]:
        """Append the group to ``owner``'s log as entry ``seq``: (the number used, whether written just now)."""
        while True:
            try:
                return seq, await self.store.append_log(owner, seq, group_id, merged, lists)
            except LogConflict:
                # another instance took this number (it recovered this owner's journals while it was away):
                # take the next free one, and say so in the journals before using it
                await self.view.catch_up()
                seq = max(seq, self.view.heads.get(owner, 0)) + 1
                await self.store.renumber_batches(batches, seq)
                if owner == self.instance:
                    self._next_seq = max(self._next_seq, seq + 1)
                log.warning("rollup_log_renumbered", owner=owner, seq=seq)

    async def recover_all(self) -> int:
        """Finish every interrupted group: this instance's, and other instances' after a grace period."""
        if not self._started:
            return await self.start()
        if self._flushing is not None:
            task, self._flushing = self._flushing, None
            task.cancel()
            with contextlib.suppress(BaseException):
                await task
        self._group, self._merged, self._lists, self._group_facts = [], {}, {}, 0
        by_owner: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
        for journal in await self.store.open_batches():
            by_owner[journal["instance"], journal["group"]].append(journal)
        recovered = 0
        for (owner, group_id), journals in sorted(by_owner.items(), key=lambda kv: (kv[0][0], kv[1][0]["seq"])):
            newest = max(j["opened_at"] for j in journals)
            if newest.tzinfo is None:
                newest = newest.replace(tzinfo=UTC)
            # another live replica may be finishing its own group right now: leave it a grace period
            if owner != self.instance and (datetime.now(UTC) - newest).total_seconds() < self.foreign_grace_seconds:
                continue
            merged: dict[str, Counters] = {}
            lists: dict[str, Change] = {}
            for journal in journals:
                await self._redo_ledger(journal["docs"])
                merge_counters(merged, journal["deltas"])
                # (a journal from before the lists: its cases' changes, from its documents)
                journaled = journal["lists"] if "lists" in journal else changes_of(journal["docs"], removals=True)
                merge_changes(lists, journaled)
            seq = max(j["seq"] for j in journals)  # all the same unless a renumbering was interrupted
            await self._apply_group(owner, group_id, seq, [j["_id"] for j in journals], merged, lists)
            log.info("batches_recovered", owner=owner, batches=len(journals), rollups=len(merged))
            recovered += len(journals)
        self._floor = (await self.store.log_floors()).get(self.instance, 0)
        await self.view.catch_up()
        self._next_seq = max(self.view.heads.get(self.instance, 0), self._floor) + 1
        await self.fold()
        return recovered

    async def _redo_ledger(self, docs: list[dict[str, Any]]) -> None:
        current = await self.store.load_cases(d["_id"] for d in docs)
        stale = [d for d in docs if d["_id"] not in current or current[d["_id"]]["rev"] < d["rev"]]
        if stale:
            await self.store.replace_cases(stale)

    async def reconcile(self, fix: bool = True) -> dict[str, Any]:
        """Rebuild every rollup from the ledger, compare with the stored ones, and (by default) fix them.

        A fix is one more group of increments (the differences), journaled and flushed like any other. Other
        replicas may be applying meanwhile: a rollup touched by a log entry written after the stored rollups
        were read, or by a batch still journaled, cannot be compared (its ledger and its rollups may be a
        moment apart); it is reported as in flight and left alone. Run it again when the stream is quiet to
        check those too."""
        await self.recover_all()
        await self.flush()
        await self.view.load()  # from the documents as stored, whatever happened to them
        heads, actual = dict(self.view.heads), self.view.rollups()
        listed_before = self.view.lists.held()
        expected: dict[str, Counters] = {}
        listed: dict[str, Change] = {}
        cases = 0
        async for doc in self.store.scan_revisions():
            cases += 1
            merge_counters(expected, contributions(doc["s"]))
            merge_changes(listed, changes_of([doc]))
        in_flight = await self._rollups_in_flight(heads)
        differences = []
        corrections: dict[str, Counters] = {}
        for rid in sorted((expected.keys() | actual.keys()) - in_flight):
            want, have = expected.get(rid, {}), actual.get(rid, {})
            if want != have:
                diff = {k: want.get(k, 0) - have.get(k, 0) for k in want.keys() | have.keys()
                        if want.get(k, 0) != have.get(k, 0)}
                differences.append({"rollup": rid, "missing": diff})
                corrections[rid] = diff
        list_fixes = self._list_corrections(listed, listed_before, in_flight)
        if fix and (corrections or list_fixes):
            await self._journal([], corrections, list_fixes)
            await self.flush()
        report = {"cases": cases, "rollups": len(expected), "differences": len(differences),
                  "list_differences": len(list_fixes),
                  "examples": differences[:20], "fixed": fix and bool(differences),
                  "in_flight": len(in_flight), "in_flight_examples": sorted(in_flight)[:20]}
        log.info("reconciled", cases=cases, rollups=len(expected), differences=len(differences),
                 in_flight=len(in_flight))
        return report

    @staticmethod
    def _list_corrections(listed: dict[str, Change], held: dict[str, Change], in_flight: set[str]
                          ) -> dict[str, Change]:
        """The list changes that make the view's lists (``held``) what the ledger says (``listed``), leaving
        cases in flight alone."""
        # (a fix takes the newer revision of the two: the ledger is right, whatever revision the view holds)
        fixes = {cid: {"rev": max(change["rev"], held.get(cid, {}).get("rev", 0)), "s": change["s"]}
                 for cid, change in listed.items() if held.get(cid, {}).get("s") != change["s"]}
        fixes.update({cid: {"rev": held[cid]["rev"], "s": None} for cid in held.keys() - listed.keys()})
        return {cid: change for cid, change in fixes.items() if f"case:{cid}" not in in_flight}

    async def rebuild_lists(self) -> int:
        """Store the bulletin lists from the ledger (the first start of a deployment that had none): one scan;
        returns the cases listed."""
        listed: dict[str, Change] = {}
        async for doc in self.store.scan_revisions():
            merge_changes(listed, changes_of([doc]))
        await self.store.save_case_lists(listed)
        await self.store.mark_case_lists_built()
        log.info("case_lists_rebuilt", cases=len(listed))
        return len(listed)

    async def _rollups_in_flight(self, heads: dict[str, int]) -> set[str]:
        """Rollups that log entries after ``heads``, or batches still journaled, change."""
        touched: set[str] = set()
        for owner, state in (await self.store.log_owners()).items():
            head = heads.get(owner, 0)
            if head < state.floor:
                raise RuntimeError(f"the rollup log of {owner!r} was trimmed during reconcile: run it again")
            for entry in await self.store.read_log(owner, head):
                touched.update(entry.deltas)
                touched.update(f"case:{cid}" for cid in entry.lists)
        for journal in await self.store.open_batches():
            touched.update(journal["deltas"])
            touched.update(f"case:{d['_id']}" for d in journal["docs"])
        return touched




# --------------------------------------------------------------------------------------------------
# Queries: every rate comes from the in-memory rollups (view.py); only the ledger browser reads the database
# --------------------------------------------------------------------------------------------------


@dataclass
class StatsQueries:
    """The questions the API answers, over the rollup view and the store; ``settings`` is read at each call."""

    settings: StatsSettings
    store: StatsStore
    view: RollupView
    clock: Clock

    def today(self) -> date:
        return local_date(self.clock.now())

    def period(self, month: str | None = None, start: str | None = None, end: str | None = None) -> Period:
        return resolve_period(month, start, end, self.view.months(), self.today())

    def overall(self, period: Period) -> dict[str, Any]:
        """The rates of every case in the period (cached until the rollups change)."""
        today = self.today()

        def compute() -> dict[str, Any]:
            return self.view.summaries("all", period.months, period.days).get("all", Summary()).rates(today)

        return self.view.cached(("overall", tuple(period.months), tuple(period.days), today), compute)

    def breakdown(self, dim: str, period: Period) -> list[dict[str, Any]]:
        """The named rates of every key of ``dim`` in the period, reused until the rollups change (each row
        is a copy: callers add a rank)."""
        today = self.today()

        def compute() -> list[dict[str, Any]]:
            by_key = self.view.summaries(dim, period.months, period.days)
            return [named_row(dim, key, summary.rates(today)) for key, summary in sorted(by_key.items())]

        rows = self.view.cached(("breakdown", dim, tuple(period.months), tuple(period.days), today), compute)
        return [dict(row) for row in rows]

    def overview(self, month: str | None, start: str | None, end: str | None) -> dict[str, Any]:
        period = self.period(month, start, end)
        rates = self.overall(period)
        return {"period": period.described, **rates, "invalid_reasons": invalid_reasons(rates)}

    def departments(self, month: str | None, start: str | None, end: str | None, sort: str,
                    min_sample: int | None) -> dict[str, Any]:
        check_sort(sort)
        period = self.period(month, start, end)
        minimum = min_sample or self.settings.min_sample
        ranked, small = rank(self.breakdown("unit", period), sort, minimum)
        return {"period": period.described, "sort": sort, "min_sample": minimum, "method": "wilson_lower_bound_95",
                "ranking": ranked, "below_min_sample": small}

    def department(self, unit_id: str, month: str | None, start: str | None, end: str | None) -> dict[str, Any]:
        period = self.period(month, start, end)
        row = next((r for r in self.breakdown("unit", period) if r["id"] == unit_id), None)
        if row is None:
            raise InvalidQuery("not_found", "no cases for this unit in the period", "unit_id", status=404)
        return {"period": period.described, **row}

    def items(self, dim: str, month: str | None, start: str | None, end: str | None) -> dict[str, Any]:
        period = self.period(month, start, end)
        return {"period": period.described, "items": self.breakdown(dim, period)}

    def timeseries(self, granularity: str, start: str | None, end: str | None) -> dict[str, Any]:
        if granularity not in ("daily", "monthly"):
            raise InvalidQuery("invalid_granularity", "granularity must be daily or monthly", "granularity")
        today = self.today()
        if granularity == "monthly":
            period = self.period(None, start, end)
            points = [{"period": m, "label": people_month(m), **rollup.rates(today)} for m in sorted(period.months)
                      if (rollup := self.view.rollup("all", "all", m))]
            return {"granularity": granularity, "period": period.described, "points": points}
        first, last, days = daily_range(start, end, today)
        points = [{"period": day.isoformat(), "label": chinese_date(day),
                   **self.view.rollup("all", "all", day.isoformat()).rates(today)} for day in days]
        return {"granularity": granularity, "period": {"from": first.isoformat(), "to": last.isoformat()},
                "points": points}

    def monthly_report(self, month: str, sort: str) -> dict[str, Any]:
        """The monthly bulletin, reused until the rollups or the lists change."""
        check_sort(sort)
        period = self.period(month)
        return self.view.cached(("monthly", month, sort, self.today()),
                                lambda: self._build_monthly_report(month, period, sort))

    def monthly_workbook(self, month: str, sort: str) -> bytes:
        """The bulletin as ``.xlsx`` (~100 ms of openpyxl), reused like the report."""
        report = self.monthly_report(month, sort)
        return self.view.cached(("monthly", month, sort, self.today(), "xlsx"), lambda: bulletin_xlsx(report))

    def _build_monthly_report(self, month: str, period: Period, sort: str) -> dict[str, Any]:
        """The monthly bulletin (月报): totals, the ranking with names, praise and criticism, the typical cases
        flagged in the month, the overdue and escalated cases, the issuing office and the period in Chinese."""
        today = self.today()
        totals = self.overall(period)
        by_unit = self.view.summaries("unit", period.months, period.days)
        rows = [named_row("unit", key, s.rates(today)) for key, s in sorted(by_unit.items())]
        waiting = by_unit.get(UNASSIGNED)
        ranked, small = rank(rows, sort, self.settings.min_sample)
        lists = praise_and_criticism(ranked, sort, self.settings.list_size)
        first, last = month_bounds(month)
        # the month's short lists come from the view (lists.py), never from a filtered read of the ledger
        late = [ledger_row({"_id": cid, "s": s}) for cid, s in self.view.lists.late(month)]
        typical = [ledger_row({"_id": cid, "s": s}) for cid, s in self.view.lists.typical(month)]
        label = people_month(month)
        return {
            "month": month, "period": period.described, "period_label": label,
            "period_range_label": f"{chinese_date(first)}至{chinese_date(last)}",
            "title": f"{self.settings.bulletin_title}（{label}）", "issuer": self.settings.bulletin_issuer,
            "generated_for": today.isoformat(), "generated_for_label": chinese_date(today),
            "sort": sort, "sort_name": RATE_NAMES[sort],
            "min_sample": self.settings.min_sample, "totals": totals, "ranking": ranked, "below_min_sample": small,
            # cases no unit is responsible for yet (routing, triage): in the totals, never ranked
            "unassigned": {"name": key_name("unit", UNASSIGNED), **waiting.rates(today)} if waiting else None,
            "praise": [_brief(r, sort) for r in lists["praise"]],
            "criticise": [_brief(r, sort) for r in lists["criticise"]],
            "invalid_reasons": invalid_reasons(totals),
            "typical_cases": [_case_brief(c) for c in typical],
            "overdue_and_escalated": [{**_case_brief(c), "escalated": c["escalated"],
                                       "replied": c["first_reply_at"] is not None} for c in late],
            "second_handling": {"cases": totals["second_handling"], "rated": totals["second_handling_rated"],
                                "satisfied": totals["second_handling_satisfied"]},
            "supervision": {  # 督办 notices and 回访 callbacks of the month's cases, per unit
                "notices_issued": totals["notices_issued"], "notices_answered": totals["notices_answered"],
                "callbacks": totals["callbacks"],
                "by_unit": [{"id": r["id"], "name": r.get("name"),
                             **{k: r[k] for k in ("notices_issued", "notices_answered", "callbacks")}}
                            for r in rows if r["notices_issued"] or r["callbacks"]],
            },
        }

    async def ledger_rows(self, filters: LedgerFilters, skip: int, limit: int) -> list[dict[str, Any]]:
        """A filtered read of the ledger: a scan on the local server, so bounded in time
        (``ledger_query_seconds``; past it the store raises pymongo's timeout error)."""
        docs = await self.store.browse(ledger_query(filters, self.clock.now()), skip, limit,
                                       self.settings.ledger_query_seconds)
        return [ledger_row(d) for d in docs]

    async def ledger_page(self, filters: LedgerFilters, page: int, page_size: int) -> dict[str, Any]:
        size = min(page_size, self.settings.page_size_max)
        return {"page": page, "page_size": size, "items": await self.ledger_rows(filters, (page - 1) * size, size)}

    async def ledger_export(self, filters: LedgerFilters) -> list[dict[str, Any]]:
        """Every matching row, up to ``ledger_export_max`` (a CSV or Excel download)."""
        return await self.ledger_rows(filters, 0, self.settings.ledger_export_max)

    def gauges(self) -> tuple[Summary, dict[str, Summary], date]:
        """All-time rates overall and by unit, for the live gauges."""
        months = self.view.months()
        everything = self.view.summaries("all", months, []).get("all", Summary())
        return everything, self.view.summaries("unit", months, []), self.today()


def ledger_label(filters: LedgerFilters) -> str:
    """The filters in words, for the title of an Excel ledger: the month (or 全部), then the unit, category
    and county names."""
    parts = [people_month(filters.month) if filters.month else "全部"]
    parts += [n for n in (key_name("unit", filters.unit), key_name("category", filters.category), filters.county)
              if n]
    return "，".join(parts)


def invalid_reasons(rates: dict[str, Any]) -> list[dict[str, Any]]:
    return [{"code": code, "name": invalid_reason_name(code), "count": n}
            for code, n in rates["invalid_by_reason"].items()]


def _case_brief(row: dict[str, Any]) -> dict[str, Any]:
    return {"tracking_number": row["tracking_number"], "unit": row["unit"], "unit_name": row["unit_name"],
            "category": row["category"], "category_name": row["category_name"], "county": row["county"],
            "status": row["status"], "status_name": row["status_name"], "received_at": row["received_at"],
            "received_label": _label(row["received_at"]), "flagged_at": row["flagged_at"],
            "flagged_label": _label(row["flagged_at"])}


def _label(value: str | None) -> str:
    return people_date(datetime.fromisoformat(value)) if value else ""


def _brief(row: dict[str, Any], sort: str) -> dict[str, Any]:
    return {"id": row["id"], "name": row["name"], "rank": row.get("rank"), sort: row[sort], "received": row["received"]}


__all__ = ["BatchResult", "Projector", "StatsQueries", "ledger_label"]
