"""The read model of intake's lists: a compact summary of every case, held in memory.

The local MongoDB-wire server indexes only ``_id`` (DESIGN.md §4), so every filtered or sorted query scans
the whole collection: seconds at 20,000 cases. The staff lists, the inbox counts, the notices and the
public board are answered here instead, and only the page's documents are then read by ``_id``.

Pure: no I/O. A summary is built from a stored case document (:func:`summary_from_doc`); the store puts
one after each successful write and the :class:`~services.intake.case_follower.CaseFollower` after each
write another replica made, and a put only ever moves a case forward in ``version``.

Structures, so that a query over 100,000 cases stays in the low milliseconds:
- ``_order``: every summary, newest first (``created_at`` descending, ``_id`` ascending, as the DB sorted);
  kept sorted by insertion with bisect (a case's creation time never changes).
- sets of case ids per unit, per status, per county, per category and of the publishable cases: a query
  starts from the smallest set that one of its conditions names and checks the others case by case.
- counts per (unit, status) and, per (unit, status), the sorted deadlines: a bucket's count is a sum of
  set sizes or of two bisections, whatever the time is now.
- per unit, the cases with notices / open notices to it, and the number of open notices.
Times are whole milliseconds since the epoch, as MongoDB keeps them, so comparisons agree with the DB's.
"""

from __future__ import annotations

import bisect
import heapq
import sys
from collections import Counter, defaultdict
from collections.abc import Callable, Collection, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from itertools import chain
from typing import Any

from services.common.events import CaseStatus

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
ONE_MS = timedelta(milliseconds=1)
SEPARATOR = "\x00"  # between the fields of a case's searchable text
# The fields of a stored case document a summary is made of (the start-up scan and the follower read these)
SUMMARY_FIELDS = ("tracking_number", "version", "status", "department_id", "category", "county", "created_at",
                  "deadline", "pending_extension", "rating", "flagged", "publishable", "title", "body", "original",
                  "notices")
SUMMARY_PROJECTION = dict.fromkeys(SUMMARY_FIELDS, 1)


def to_ms(value: datetime | None) -> int | None:
    """A datetime as MongoDB stores it: whole milliseconds since the epoch (naive means UTC)."""
    if value is None:
        return None
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return (value - EPOCH) // ONE_MS


def _interned(value: str | None) -> str | None:
    return sys.intern(value) if value is not None else None


def _searchable(*texts: str | None) -> str:
    return SEPARATOR.join(t or "" for t in texts).lower()


@dataclass(slots=True, frozen=True)
class CaseSummary:
    case_id: str
    tracking_number: str
    version: int
    status: CaseStatus
    department_id: str | None
    category: str | None
    county: str | None
    created_ms: int
    deadline_ms: int | None
    pending_extension: bool
    rating: str | None
    flagged: bool
    publishable: bool
    text: str  # the redacted title and body, lower-cased: what the board and staff search
    original_text: str | None  # the citizen's own words when they differ from the redacted copy (staff search)
    notice_units: tuple[str, ...]  # the unit of each notice
    open_notice_units: tuple[str, ...]  # the unit of each notice not yet answered


def summary_from_doc(doc: dict[str, Any], previous: CaseSummary | None = None) -> CaseSummary:
    """A summary of a stored case document. A partial document (a command's ``$set``: no ``original``, and
    the title and body only when moderated) keeps the texts of ``previous``."""
    text = _searchable(doc.get("title"), doc.get("body"))
    if "title" not in doc and previous is not None:
        text = previous.text
    if "original" in doc or previous is None:
        original = doc.get("original") or {}
        original_text: str | None = _searchable(original.get("title"), original.get("body")) if original else None
    else:
        original_text = previous.original_text
    notices = doc.get("notices") or ()
    return CaseSummary(
        case_id=doc["_id"],
        tracking_number=doc["tracking_number"],
        version=int(doc["version"]),
        status=CaseStatus(doc["status"]),
        department_id=_interned(doc.get("department_id")),
        category=_interned(doc.get("category")),
        county=_interned(doc.get("county")),
        created_ms=to_ms(doc["created_at"]),  # type: ignore[arg-type]
        deadline_ms=to_ms(doc.get("deadline")),
        pending_extension=doc.get("pending_extension") is not None,
        rating=_interned(doc.get("rating")),
        flagged=doc.get("flagged") is True,
        publishable=doc.get("publishable") is True,
        text=text,
        original_text=None if original_text == text else original_text,
        notice_units=tuple(sys.intern(n["department_id"]) for n in notices),
        open_notice_units=tuple(sys.intern(n["department_id"]) for n in notices if n.get("answered_at") is None),
    )


@dataclass(frozen=True)
class StateWindow:
    """``status in states`` and, when bounded, ``after <= deadline < before`` (a bucket evaluated at a time)."""

    states: frozenset[CaseStatus]
    after_ms: int | None = None
    before_ms: int | None = None

    @property
    def bounded(self) -> bool:
        return self.after_ms is not None or self.before_ms is not None

    def holds(self, s: CaseSummary) -> bool:
        if s.status not in self.states:
            return False
        if not self.bounded:
            return True
        d = s.deadline_ms
        return d is not None and (self.after_ms is None or d >= self.after_ms) and (
            self.before_ms is None or d < self.before_ms)


@dataclass(frozen=True)
class CaseQuery:
    """A list's conditions, all of which must hold (None: no condition)."""

    unit: str | None = None
    status: CaseStatus | None = None
    within: tuple[StateWindow, ...] = ()  # each must hold (a bucket, "overdue")
    outside: tuple[StateWindow, ...] = ()  # none may hold ("not overdue")
    created_from_ms: int | None = None  # inclusive
    created_before_ms: int | None = None  # exclusive
    category: str | None = None
    county: str | None = None
    pending_extension: bool | None = None
    rating: str | None = None
    flagged: bool | None = None
    publishable: bool | None = None
    text: str | None = None  # a case-insensitive substring of the redacted title or body
    include_original: bool = False  # ... or of the citizen's own words (staff)
    tracking_number: str | None = None  # exactly this case


Check = Callable[[CaseSummary], bool]


def _contains(needle: str, text: str | None) -> bool:
    if text is None:
        return False
    if SEPARATOR in needle:  # never across two fields
        return any(needle in part for part in text.split(SEPARATOR))
    return needle in text


def _checks(q: CaseQuery) -> dict[str, Check]:
    """Every condition of ``q`` as a test of one summary, by the name of the set that can stand in for it."""
    checks: dict[str, Check] = {}
    if q.unit is not None:
        checks["unit"] = lambda s: s.department_id == q.unit
    if q.status is not None:
        checks["status"] = lambda s: s.status is q.status
    for number, window in enumerate(q.within):
        checks[f"within{number}"] = window.holds
    for number, window in enumerate(q.outside):
        checks[f"outside{number}"] = lambda s, w=window: not w.holds(s)
    if q.created_from_ms is not None:
        checks["from"] = lambda s: s.created_ms >= q.created_from_ms  # type: ignore[operator]
    if q.created_before_ms is not None:
        checks["before"] = lambda s: s.created_ms < q.created_before_ms  # type: ignore[operator]
    if q.category is not None:
        checks["category"] = lambda s: s.category == q.category
    if q.county is not None:
        checks["county"] = lambda s: s.county == q.county
    if q.pending_extension is not None:
        checks["pending_extension"] = lambda s: s.pending_extension is q.pending_extension
    if q.rating is not None:
        checks["rating"] = lambda s: s.rating == q.rating
    if q.flagged is not None:
        checks["flagged"] = lambda s: s.flagged is q.flagged
    if q.publishable is not None:
        checks["publishable"] = lambda s: s.publishable is q.publishable
    if q.text is not None:
        needle = q.text.lower()
        if q.include_original:
            checks["text"] = lambda s: _contains(needle, s.text) or _contains(needle, s.original_text)
        elif SEPARATOR not in needle:  # the board's search, the one over every publishable case: inlined
            checks["text"] = lambda s: needle in s.text
        else:
            checks["text"] = lambda s: _contains(needle, s.text)
    if q.tracking_number is not None:
        checks["tracking_number"] = lambda s: s.tracking_number == q.tracking_number
    return checks


def matches(q: CaseQuery, s: CaseSummary) -> bool:
    """The definition of a query's answer (the index finds the same cases faster)."""
    return all(check(s) for check in _checks(q).values())


def order_key(s: CaseSummary) -> tuple[int, str]:
    """Newest first, then by id: the order of every list."""
    return -s.created_ms, s.case_id


@dataclass
class _Source:
    """Candidates for a query: ``ids`` holds every case that meets condition ``covers``."""

    covers: frozenset[str]
    size: int
    ids: Callable[[], Iterable[str]]
    has: Check
    members: set[str] | None = None  # the ids as a set, when the source is one


def _intersection(sources: list[_Source]) -> _Source:
    """The cases in all of these set-backed sources (a set intersection, at C speed)."""
    first, *others = sorted(sources, key=lambda src: src.size)
    members = first.members.intersection(*(src.members for src in others)) if others else first.members
    assert members is not None
    return _Source(frozenset().union(*(src.covers for src in sources)), len(members), lambda: members,
                   lambda s: s.case_id in members, members)


@dataclass
class CaseIndex:
    _cases: dict[str, CaseSummary] = field(default_factory=dict)
    _order: list[CaseSummary] = field(default_factory=list)
    _by_tracking: dict[str, str] = field(default_factory=dict)
    _sets: dict[tuple[str, Any], set[str]] = field(default_factory=lambda: defaultdict(set))
    _unit_status: Counter[tuple[str | None, CaseStatus]] = field(default_factory=Counter)
    _deadlines: dict[tuple[str | None, CaseStatus], list[int]] = field(default_factory=lambda: defaultdict(list))
    _open_notices: Counter[str | None] = field(default_factory=Counter)

    # ------------------------------------------------------------------ writing
    def __len__(self) -> int:
        return len(self._cases)

    def version_of(self, case_id: str) -> int | None:
        s = self._cases.get(case_id)
        return s.version if s else None

    def summaries(self) -> Collection[CaseSummary]:
        return self._cases.values()

    def get(self, case_id: str) -> CaseSummary | None:
        return self._cases.get(case_id)

    def put(self, s: CaseSummary) -> bool:
        """Take ``s`` unless the index already holds this case at a later version; True if taken."""
        old = self._cases.get(s.case_id)
        if old is not None:
            if old.version > s.version:
                return False
            self._forget(old)
            position = bisect.bisect_left(self._order, order_key(old), key=order_key)
            if order_key(old) == order_key(s):
                self._order[position] = s
            else:  # never for a real case (its creation time does not change), but stay sorted anyway
                del self._order[position]
                bisect.insort(self._order, s, key=order_key)
        else:
            bisect.insort(self._order, s, key=order_key)
        self._cases[s.case_id] = s
        self._remember(s)
        return True

    def put_many(self, summaries: Iterable[CaseSummary]) -> None:
        """The start-up load: many at once, sorted once."""
        for s in summaries:
            old = self._cases.get(s.case_id)
            if old is not None:
                if old.version > s.version:
                    continue
                self._forget(old)
            self._cases[s.case_id] = s
            self._remember(s)
        self._order = sorted(self._cases.values(), key=order_key)

    def _memberships(self, s: CaseSummary) -> Iterator[tuple[str, Any]]:
        yield "status", s.status
        for name in ("unit", "county", "category"):
            value = getattr(s, "department_id" if name == "unit" else name)
            if value is not None:
                yield name, value
        if s.publishable:
            yield "publishable", True
        for unit in set(s.notice_units):
            yield "notice", unit
        if s.notice_units:
            yield "notice", None
        for unit in set(s.open_notice_units):
            yield "open_notice", unit
        if s.open_notice_units:
            yield "open_notice", None

    def _remember(self, s: CaseSummary) -> None:
        self._by_tracking[s.tracking_number] = s.case_id
        for key in self._memberships(s):
            self._sets[key].add(s.case_id)
        for unit in (s.department_id, None) if s.department_id is not None else (None,):
            self._unit_status[unit, s.status] += 1
            if s.deadline_ms is not None:
                bisect.insort(self._deadlines[unit, s.status], s.deadline_ms)
        self._open_notices.update(s.open_notice_units)
        self._open_notices[None] += len(s.open_notice_units)

    def _forget(self, s: CaseSummary) -> None:
        for key in self._memberships(s):
            self._sets[key].discard(s.case_id)
        for unit in (s.department_id, None) if s.department_id is not None else (None,):
            self._unit_status[unit, s.status] -= 1
            if s.deadline_ms is not None:
                deadlines = self._deadlines[unit, s.status]
                del deadlines[bisect.bisect_left(deadlines, s.deadline_ms)]
        self._open_notices.subtract(s.open_notice_units)
        self._open_notices[None] -= len(s.open_notice_units)

    # ------------------------------------------------------------------ reading
    def _set(self, name: str, value: Any) -> set[str]:
        return self._sets.get((name, value)) or set()

    def _sources(self, q: CaseQuery) -> list[_Source]:
        cases = self._cases
        sources = [_Source(frozenset({"all"}), len(cases), lambda: cases.keys(), lambda s: True)]
        if q.tracking_number is not None:
            found = self._by_tracking.get(q.tracking_number)
            sources.append(_Source(frozenset({"tracking_number"}), 1 if found else 0, lambda: [found] if found else [],
                                   lambda s: s.case_id == found))
        for name, value in (("unit", q.unit), ("county", q.county), ("category", q.category),
                            ("publishable", True if q.publishable else None)):
            if value is not None:
                ids = self._set(name, value)
                sources.append(_Source(frozenset({name}), len(ids), lambda ids=ids: ids,
                                       lambda s, ids=ids: s.case_id in ids, ids))
        status_conditions = [("status", frozenset({q.status}) if q.status is not None else None)]
        # a bounded window still narrows the states (its deadline is checked case by case: covers no check)
        status_conditions += [(f"within{n}" if not w.bounded else f"states{n}", w.states)
                              for n, w in enumerate(q.within)]
        for name, states in status_conditions:
            if states is not None:
                sets = [self._set("status", state) for state in states]
                sources.append(_Source(frozenset({name}), sum(map(len, sets)), lambda sets=sets: chain(*sets),
                                       lambda s, states=states: s.status in states))
        return sources

    def find(self, q: CaseQuery, *, offset: int, limit: int) -> tuple[list[CaseSummary], int]:
        """One page of the cases that meet ``q``, newest first, and how many meet it."""
        checks = _checks(q)
        sources = self._sources(q)
        with_sets = [src for src in sources if src.members is not None]
        if with_sets:
            sources = [src for src in sources if src.members is None] + [_intersection(with_sets)]
        source = min(sources, key=lambda src: (src.size, "all" in src.covers))
        rest = [check for name, check in checks.items() if name not in source.covers]
        wanted = offset + limit
        if not rest and "all" in source.covers:
            return self._order[offset:wanted], len(self._cases)
        if not rest and source.size * 16 >= len(self._cases):
            page = []  # most cases qualify: walk the newest-first list until the page is full
            for s in self._order:
                if len(page) >= wanted:
                    break
                if source.has(s):
                    page.append(s)
            return page[offset:], source.size
        candidates = map(self._cases.__getitem__, source.ids())
        if len(rest) == 1:
            hits = list(filter(rest[0], candidates))
        else:
            hits = [s for s in candidates if all(check(s) for check in rest)]
        if wanted * 8 < len(hits):
            return heapq.nsmallest(wanted, hits, key=order_key)[offset:], len(hits)
        return sorted(hits, key=order_key)[offset:wanted], len(hits)

    def count(self, unit: str | None, window: StateWindow) -> int:
        """How many cases of ``unit`` (None: all) the window holds, without looking at any one case."""
        total = 0
        for state in window.states:
            if not window.bounded:
                total += self._unit_status[unit, state]
                continue
            deadlines = self._deadlines.get((unit, state)) or []
            low = bisect.bisect_left(deadlines, window.after_ms) if window.after_ms is not None else 0
            high = bisect.bisect_left(deadlines, window.before_ms) if window.before_ms is not None else len(deadlines)
            total += max(0, high - low)
        return total

    def open_notice_count(self, unit: str | None) -> int:
        """Notices not yet answered, sent to ``unit`` (None: to any unit)."""
        return self._open_notices[unit]

    def cases_with_notices(self, unit: str | None, *, open_only: bool) -> Collection[str]:
        """Ids of the cases with (open) notices to ``unit`` (None: to any unit)."""
        return frozenset(self._set("open_notice" if open_only else "notice", unit))
