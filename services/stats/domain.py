"""The stats domain, pure: case facts -> ledger state -> rollup contributions -> deltas -> rates.

The ledger state of a case is a fold over the *set* of its applied facts sorted by version, so applying
an event twice, or two events out of order, gives the same state. Rollup counters never get
hand-written increments: a transition's deltas are ``contributions(after) - contributions(before)``, so
a counter moves exactly once per transition and a rebuild from the ledger gives the same numbers.
"""

from __future__ import annotations

import math
import re
from bisect import bisect_left, bisect_right
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from itertools import accumulate
from typing import Any

from services.common.events import Alert, AlertKind, CaseEvent, Event, InvalidReason, Rating
from services.common.workdays import WorkCalendar, default_calendar, local_date

UNASSIGNED = "_unassigned"
NONE = "_none"
DIMENSIONS = ("all", "unit", "category", "county")
SATISFIED = frozenset({Rating.SATISFIED.value, Rating.BASICALLY_SATISFIED.value})
HOURS_RESOLUTION = 10  # reply working hours are kept in tenths: the median is exact to 6 minutes
# counters a case contributes (besides the histograms below); the API and reconcile read these names
INVALID_COUNTERS = tuple(f"invalid_{reason.value}" for reason in InvalidReason)
COUNTERS = ("received", "replied", "on_time", "rated", "satisfied", "returns", "second_handling",
            "second_rated", "second_satisfied", "overdue_alerted", "escalated", "flagged", "closed",
            "notices", "notices_answered", "callbacks", "merged", "invalid", *INVALID_COUNTERS)
# events that record something about a case without moving it in its lifecycle
ATTRIBUTE_EVENTS = frozenset({"case.moderated", "case.notice_issued", "case.notice_answered",
                              "case.callback_recorded"})
# the case status an event leaves behind (the names of services.common.events.CaseStatus); events not listed
# (extension requested or denied, flagged) leave the status as it was: a flag is an attribute, not a status
STATUS_AFTER = {"case.submitted": "submitted", "case.assigned": "assigned", "case.triaged": "triage",
                "case.linked": "closed", "case.signed": "signed", "case.returned": "returned",
                "case.extended": "extended", "case.replied": "replied", "case.rated": "rated",
                "case.reopened": "reopened", "case.closed": "closed"}
HISTOGRAMS = ("rh", "du", "do")  # reply tenths-of-hours; deadline day of never-replied; of awaiting-open


# --------------------------------------------------------------------------------------------------
# Facts: the part of an event the ledger keeps (no personal data, no free text)
# --------------------------------------------------------------------------------------------------


def _iso(moment: datetime | None) -> str | None:
    return moment.astimezone(UTC).isoformat() if moment else None


def fact_from_event(event: Event) -> dict[str, Any] | None:
    """The compact, JSON-ready fact an event contributes to a case, or None if stats ignores it."""
    data = event.data
    if isinstance(data, Alert):
        if data.kind not in (AlertKind.OVERDUE, AlertKind.ESCALATED) or not data.case_id:
            return None
        return {"id": event.id, "type": f"alert.{data.kind.value}", "case_id": data.case_id, "version": 0,
                "at": _iso(data.raised_at), "tracking_number": data.tracking_number}
    if not isinstance(data, CaseEvent):
        return None
    fact: dict[str, Any] = {"id": event.id, "type": event.short_type, "case_id": data.case_id,
                            "version": data.version, "at": _iso(data.occurred_at),
                            "tracking_number": data.tracking_number}
    for name in ("department_id", "category", "county", "rating", "handling_round", "on_time", "disposition",
                 "invalid_reason", "linked_case_id"):
        value = getattr(data, name, None)
        if value is not None:
            fact[name] = value.value if hasattr(value, "value") else value
    deadline = getattr(data, "deadline", None)
    if deadline is not None:
        fact["deadline"] = _iso(deadline)
    return fact


# --------------------------------------------------------------------------------------------------
# Ledger state: a fold over the facts
# --------------------------------------------------------------------------------------------------


def _dt(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value) if value else None


def fold(facts: Iterable[Mapping[str, Any]], calendar: WorkCalendar | None = None) -> dict[str, Any]:
    """The ledger state of one case from its facts, whatever order or repetition they came in."""
    calendar = calendar or default_calendar()
    unique = {f["id"]: f for f in facts}
    ordered = sorted(unique.values(), key=lambda f: (f["version"], f["at"] or "", f["id"]))
    s: dict[str, Any] = {
        "tracking_number": None, "received_at": None, "unit": None, "category": None, "county": None,
        "deadline": None, "signed_at": None, "first_reply_at": None, "on_time": None, "reply_tenths": None,
        "rating": None, "rated_round": None, "second_handling": 0, "returns": 0, "returned_by": {},
        "closed_at": None, "flagged": False, "flagged_at": None, "overdue_alerted": False, "escalated": False,
        "awaiting_reply": False, "status": None, "version": 0, "merged_into": None, "invalid_reason": None,
        "notices": 0, "notices_answered": 0, "callbacks": 0,
    }
    for f in ordered:
        kind = f["type"]
        s["tracking_number"] = s["tracking_number"] or f.get("tracking_number")
        s["version"] = max(s["version"], f["version"])
        if kind == "alert.overdue":
            s["overdue_alerted"] = True
            continue
        if kind == "alert.escalated":
            s["escalated"] = True
            continue
        if kind in ATTRIBUTE_EVENTS:  # 督办 notices and 回访 callbacks, counted for the case's unit
            counter = {"case.notice_issued": "notices", "case.notice_answered": "notices_answered",
                       "case.callback_recorded": "callbacks"}.get(kind)
            if counter:
                s[counter] = s.get(counter, 0) + 1
            continue
        s["status"] = STATUS_AFTER.get(kind, s["status"])
        for name in ("category", "county"):
            if f.get(name):
                s[name] = f[name]
        if kind == "case.submitted":
            s["received_at"] = f["at"]
        elif kind == "case.assigned":
            s["unit"] = f["department_id"]
            s["deadline"] = f["deadline"]
            s["awaiting_reply"] = s["first_reply_at"] is None
        elif kind == "case.signed":
            s["signed_at"] = s["signed_at"] or f["at"]
        elif kind == "case.returned":
            s["returns"] += 1
            unit = f["department_id"]
            s["returned_by"][unit] = s["returned_by"].get(unit, 0) + 1
            s["awaiting_reply"] = False
            s["unit"] = None  # re-routing: nobody is responsible until the next assignment
        elif kind == "case.triaged":
            s["unit"] = None
            s["awaiting_reply"] = False
        elif kind == "case.linked":
            s["merged_into"] = f.get("linked_case_id")
            s["closed_at"] = f["at"]
            s["awaiting_reply"] = False
        elif kind == "case.extended":
            s["deadline"] = f["deadline"]
        elif kind == "case.replied":
            if s["first_reply_at"] is None:
                s["first_reply_at"] = f["at"]
                s["on_time"] = bool(f.get("on_time"))
            s["unit"] = s["unit"] or f.get("department_id")
            s["awaiting_reply"] = False
        elif kind == "case.rated":
            s["rating"] = f["rating"]
            s["rated_round"] = f.get("handling_round", 1)
        elif kind == "case.reopened":
            s["second_handling"] += 1
            s["deadline"] = f["deadline"]
            s["awaiting_reply"] = True
        elif kind == "case.closed":
            s["closed_at"] = f["at"]
            s["awaiting_reply"] = False
            s["invalid_reason"] = f.get("invalid_reason") if f.get("disposition") == "invalid" else None
        elif kind == "case.flagged":
            s["flagged"] = True
            s["flagged_at"] = s["flagged_at"] or f["at"]
    if s["first_reply_at"] and s["received_at"]:
        hours = calendar.working_hours_between(_dt(s["received_at"]), _dt(s["first_reply_at"]))
        s["reply_tenths"] = reply_tenths(hours)
    if s["received_at"]:
        s["received_day"] = local_date(_dt(s["received_at"])).isoformat()
    if s["flagged_at"]:
        s["flagged_day"] = local_date(_dt(s["flagged_at"])).isoformat()
    return s


def reply_tenths(hours: float) -> int:
    """Working hours rounded half-up to tenths (the resolution of the median)."""
    return math.floor(hours * HOURS_RESOLUTION + 0.5 + 1e-9)


def deadline_day(deadline_iso: str) -> str:
    """The last Shanghai day still in time: deadlines fall at 24:00, so it is the day before the instant."""
    return local_date(_dt(deadline_iso) - timedelta(microseconds=1)).strftime("%Y%m%d")


# --------------------------------------------------------------------------------------------------
# Rollups: contributions and deltas
# --------------------------------------------------------------------------------------------------

RollupKey = tuple[str, str, str]  # (dimension, key, period) with period "YYYY-MM-DD" or "YYYY-MM"
Counters = dict[str, int]


def rollup_id(dim: str, key: str, period: str) -> str:
    return f"{dim}|{key}|{period}"


def parse_rollup_id(rid: str) -> RollupKey:
    dim, key, period = rid.split("|", 2)
    return dim, key, period


def case_counters(s: Mapping[str, Any]) -> Counters:
    """What one case adds to every rollup it belongs to (returns are attributed separately for units).

    A duplicate merged into another case counts once, with its primary: it adds only ``merged``. A post closed
    as invalid (spam, not a government matter, ...) is not received at all: it adds ``invalid`` and its reason.
    """
    if not s.get("received_at"):
        return {}
    if s.get("merged_into"):
        return {"merged": 1}
    if s.get("invalid_reason"):
        return {"invalid": 1, f"invalid_{s['invalid_reason']}": 1}
    replied = s["first_reply_at"] is not None
    rated = s["rating"] is not None
    c: Counters = {
        "received": 1,
        "replied": int(replied),
        "on_time": int(replied and bool(s["on_time"])),
        "rated": int(rated),
        "satisfied": int(rated and s["rating"] in SATISFIED),
        "second_handling": int(s["second_handling"] > 0),
        "second_rated": int(rated and (s["rated_round"] or 1) >= 2),
        "second_satisfied": int(rated and (s["rated_round"] or 1) >= 2 and s["rating"] in SATISFIED),
        "overdue_alerted": int(s["overdue_alerted"]),
        "escalated": int(s["escalated"]),
        "flagged": int(s["flagged"]),
        "closed": int(s["closed_at"] is not None),
        "notices": s.get("notices", 0),
        "notices_answered": s.get("notices_answered", 0),
        "callbacks": s.get("callbacks", 0),
    }
    if replied and s["reply_tenths"] is not None:
        c[f"rh.{s['reply_tenths']}"] = 1
    if s["deadline"]:
        if not replied:
            c[f"du.{deadline_day(s['deadline'])}"] = 1
        if s["awaiting_reply"] and s["closed_at"] is None:
            c[f"do.{deadline_day(s['deadline'])}"] = 1
    return {k: v for k, v in c.items() if v}


def contributions(s: Mapping[str, Any]) -> dict[str, Counters]:
    """Every rollup document this case state adds to, by rollup id, day and month alike."""
    base = case_counters(s)
    if not base:
        return {}
    day = s["received_day"]
    keys = {"all": "all", "unit": s["unit"] or UNASSIGNED, "category": s["category"] or NONE,
            "county": s["county"] or NONE}
    out: dict[str, Counters] = defaultdict(dict)
    for period in (day, day[:7]):
        for dim, key in keys.items():
            counters = dict(base)
            if s["returns"]:
                if dim == "unit":  # a misroute counts against the unit that returned it
                    for unit, n in s["returned_by"].items():
                        target = out[rollup_id("unit", unit, period)]
                        target["returns"] = target.get("returns", 0) + n
                else:
                    counters["returns"] = s["returns"]
            target = out[rollup_id(dim, key, period)]
            for name, n in counters.items():
                target[name] = target.get(name, 0) + n
    return dict(out)


def deltas(before: Mapping[str, Any] | None, after: Mapping[str, Any]) -> dict[str, Counters]:
    """Counter changes of one transition; empty when nothing countable changed (e.g. a replay)."""
    old = contributions(before) if before else {}
    new = contributions(after)
    out: dict[str, Counters] = {}
    for rid in old.keys() | new.keys():
        a, b = old.get(rid, {}), new.get(rid, {})
        diff = {k: b.get(k, 0) - a.get(k, 0) for k in a.keys() | b.keys()}
        diff = {k: v for k, v in diff.items() if v}
        if diff:
            out[rid] = diff
    return out


def _add_to(target: dict, key: Any, n: int) -> None:
    total = target.get(key, 0) + n
    if total:
        target[key] = total
    else:
        target.pop(key, None)


def merge_counters(into: dict[str, Counters], more: Mapping[str, Mapping[str, int]]) -> dict[str, Counters]:
    for rid, counters in more.items():
        target = into.setdefault(rid, {})
        for k, v in counters.items():
            _add_to(target, k, v)
    return into


def flatten(doc: Mapping[str, Any]) -> Counters:
    """A rollup document's counters as flat names (``received``, ``rh.12``, ...)."""
    out: Counters = {}
    for name in COUNTERS:
        if doc.get(name):
            out[name] = int(doc[name])
    for hist in HISTOGRAMS:
        for k, v in (doc.get(hist) or {}).items():
            if v:
                out[f"{hist}.{k}"] = int(v)
    return out


# --------------------------------------------------------------------------------------------------
# Rates
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Ratio:
    numerator: int
    denominator: int

    @property
    def value(self) -> float | None:
        return self.numerator / self.denominator if self.denominator else None

    def as_dict(self) -> dict[str, Any]:
        value = self.value
        low, high = wilson_interval(self.numerator, self.denominator)
        return {
            "value": None if value is None else round(value, 4),
            "percent": None if value is None else f"{value * 100:.2f}%",
            "numerator": self.numerator,
            "denominator": self.denominator,
            "wilson_low": None if low is None else round(low, 4),
            "wilson_high": None if high is None else round(high, 4),
        }


def wilson_interval(successes: int, n: int, z: float = 1.96) -> tuple[float | None, float | None]:
    """The 95% Wilson score interval of a proportion: honest about small samples."""
    if n <= 0:
        return None, None
    p = successes / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


def median_from_histogram(hist: Mapping[int, int], values: list[int] | None = None) -> float | None:
    """The median of a histogram of integer values (the mean of the two middle values for an even count);
    ``values`` are its buckets in order, when the caller has them already."""
    values = sorted(hist) if values is None else values
    cumulative = list(accumulate(map(hist.__getitem__, values)))
    total = cumulative[-1] if cumulative else 0
    if total <= 0:
        return None
    low = values[bisect_right(cumulative, (total - 1) // 2)]
    high = values[bisect_right(cumulative, total // 2)]
    return (low + high) / 2


_BUCKETS: dict[int, int] = {}  # one int object per bucket value, shared by every histogram (a third of their memory)


class Summary:
    """Counters added up: plain counters by name, histograms (``rh``, ``du``, ``do``) by integer bucket.

    Kept apart because rates read whole histograms (a median, a count of deadlines before today): a unit's year
    has over a thousand buckets. So each histogram's buckets are also kept in order (sorted again only when a
    bucket appears or goes, which is rare once a period has many cases), and the last rates are remembered
    until the summary changes (a past month's ranking is not computed again when today's cases come in)."""

    __slots__ = ("_changes", "_ordered", "_rates", "counters", "hists")

    def __init__(self, counters: Mapping[str, int] | None = None) -> None:
        self.counters: Counters = {}
        self.hists: dict[str, dict[int, int]] = {}  # by name (rh, du, do), each only once it has a bucket
        self._ordered: dict[str, list[int]] = {}
        self._changes = 0
        self._rates: tuple[int, date, dict[str, Any]] | None = None
        if counters:
            self.add(counters)

    def add(self, counters: Mapping[str, int]) -> Summary:
        """Add flat counters (``received``, ``rh.12``, ...); a counter that comes to 0 is dropped."""
        self._changes += 1
        for name, n in counters.items():
            hist, _dot, bucket = name.partition(".")
            if bucket:
                number = int(bucket)
                self._add_bucket(hist, _BUCKETS.setdefault(number, number), n)
            else:
                _add_to(self.counters, name, n)
        return self

    def merge(self, other: Summary) -> Summary:
        self._changes += 1
        for name, n in other.counters.items():
            _add_to(self.counters, name, n)
        for hist, buckets in other.hists.items():
            for bucket, n in buckets.items():
                self._add_bucket(hist, bucket, n)
        return self

    def _add_bucket(self, hist: str, bucket: int, n: int) -> None:
        target = self.hists.setdefault(hist, {})
        if bucket not in target:
            self._ordered.pop(hist, None)
        _add_to(target, bucket, n)
        if bucket not in target:
            self._ordered.pop(hist, None)

    def buckets(self, hist: str) -> list[int]:
        """A histogram's buckets in order."""
        ordered = self._ordered.get(hist)
        if ordered is None:
            ordered = self._ordered[hist] = sorted(self.histogram(hist))
        return ordered

    def copy(self) -> Summary:
        out = Summary()
        out.counters = dict(self.counters)
        out.hists = {h: dict(b) for h, b in self.hists.items()}
        return out

    def flat(self) -> Counters:
        """The counters as flat names again (what rollup documents and log entries hold)."""
        out = dict(self.counters)
        for hist, buckets in self.hists.items():
            out.update((f"{hist}.{bucket}", n) for bucket, n in buckets.items())
        return out

    def __bool__(self) -> bool:
        return bool(self.counters) or any(self.hists.values())

    def get(self, name: str) -> int:
        return self.counters.get(name, 0)

    def histogram(self, prefix: str) -> dict[int, int]:
        return self.hists.get(prefix, {})

    def due_before(self, prefix: str, today: date) -> int:
        """Cases whose last in-time day is before today: their deadline has passed."""
        ordered = self.buckets(prefix)
        late = ordered[:bisect_left(ordered, int(today.strftime("%Y%m%d")))]
        return sum(map(self.histogram(prefix).__getitem__, late))

    def rates(self, today: date) -> dict[str, Any]:
        """Every published rate of these cases as of ``today`` (shared until the summary changes: copy to modify)."""
        if self._rates is not None and self._rates[:2] == (self._changes, today):
            return self._rates[2]
        rates = self._compute_rates(today)
        self._rates = (self._changes, today, rates)
        return rates

    def _compute_rates(self, today: date) -> dict[str, Any]:
        replied = self.get("replied")
        unreplied_late = self.due_before("du", today)
        median_tenths = median_from_histogram(self.histogram("rh"), self.buckets("rh"))
        return {
            "received": self.get("received"),
            "replied": replied,
            "reply_rate": Ratio(replied, self.get("received")).as_dict(),
            "on_time_rate": Ratio(self.get("on_time"), replied + unreplied_late).as_dict(),
            "rated": self.get("rated"),
            "satisfied": self.get("satisfied"),
            "satisfaction_rate": Ratio(self.get("satisfied"), self.get("rated")).as_dict(),
            "overdue_open": self.due_before("do", today),
            "median_reply_working_hours": None if median_tenths is None else round(median_tenths / 10, 2),
            "returns": self.get("returns"),
            "second_handling": self.get("second_handling"),
            "second_handling_rated": self.get("second_rated"),
            "second_handling_satisfied": self.get("second_satisfied"),
            "overdue_alerted": self.get("overdue_alerted"),
            "escalated": self.get("escalated"),
            "closed": self.get("closed"),
            "notices_issued": self.get("notices"),
            "notices_answered": self.get("notices_answered"),
            "callbacks": self.get("callbacks"),
            "merged": self.get("merged"),
            "invalid": self.get("invalid"),
            "invalid_by_reason": {reason.value: self.get(f"invalid_{reason.value}") for reason in InvalidReason},
        }


RANKABLE = {"reply_rate", "on_time_rate", "satisfaction_rate"}


def rank(rows: list[dict[str, Any]], by: str, min_sample: int) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Rank by the Wilson lower bound: a unit with 2/2 never outranks one with 95/100 on luck.

    Rows whose denominator is below ``min_sample`` are returned apart, unranked. Cases nobody is responsible
    for (``_unassigned``: waiting for routing or triage) are no unit and never ranked.
    """
    rows = [r for r in rows if r["id"] != UNASSIGNED]
    eligible = [r for r in rows if r[by]["denominator"] >= min_sample and r[by]["denominator"] > 0]
    small = [r for r in rows if r not in eligible]
    eligible.sort(key=lambda r: (-(r[by]["wilson_low"] or 0.0), -r[by]["denominator"], r["id"]))
    for position, row in enumerate(eligible, 1):
        row["rank"] = position
    return eligible, small


def praise_and_criticism(ranked: list[dict[str, Any]], by: str, size: int) -> dict[str, list[dict[str, Any]]]:
    """Praise the best lower bounds; criticise the worst upper bounds (clearly bad, not unlucky)."""
    praise = ranked[:size]
    worst = sorted(ranked, key=lambda r: (r[by]["wilson_high"] or 0.0, -r[by]["denominator"], r["id"]))
    criticise = [r for r in worst[:size] if r not in praise]
    return {"praise": praise, "criticise": criticise}


# --------------------------------------------------------------------------------------------------
# Periods: any period is a sum of whole months and the remaining days
# --------------------------------------------------------------------------------------------------


def month_bounds(month: str) -> tuple[date, date]:
    first = date.fromisoformat(month + "-01")
    nxt = date(first.year + (first.month == 12), first.month % 12 + 1, 1)
    return first, nxt - timedelta(days=1)


def period_keys(start: date, end: date) -> tuple[list[str], list[str]]:
    """(whole months, remaining days) covering [start, end] inclusive."""
    months: list[str] = []
    days: list[str] = []
    day = start
    while day <= end:
        first, last = month_bounds(day.strftime("%Y-%m"))
        if day == first and last <= end:
            months.append(day.strftime("%Y-%m"))
            day = last + timedelta(days=1)
        else:
            days.append(day.isoformat())
            day += timedelta(days=1)
    return months, days


# --------------------------------------------------------------------------------------------------
# Queries: what a question asks for, checked and resolved without I/O
# --------------------------------------------------------------------------------------------------

MONTH_FORMAT = re.compile(r"^\d{4}-(0[1-9]|1[0-2])$")


class InvalidQuery(ValueError):
    """A question that cannot be answered as asked (the API answers it with the error envelope)."""

    def __init__(self, code: str, message: str, field: str | None = None, *, status: int = 422) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.field = status, code, message, field


def check_month(month: str, field: str = "month") -> str:
    if not MONTH_FORMAT.match(month):
        raise InvalidQuery("invalid_month", "expected YYYY-MM", field)
    return month


def parse_day(value: str, field: str) -> date:
    try:
        return date.fromisoformat(value)
    except ValueError as exc:
        raise InvalidQuery("invalid_date", "expected a date YYYY-MM-DD", field) from exc


def check_sort(sort: str) -> str:
    if sort not in RANKABLE:
        raise InvalidQuery("invalid_sort", f"sort must be one of {sorted(RANKABLE)}", "sort")
    return sort


@dataclass(frozen=True)
class Period:
    months: list[str]  # whole months (rollup keys)
    days: list[str]  # the remaining days
    described: dict[str, Any]  # the period as the answer states it


def resolve_period(month: str | None, start: str | None, end: str | None, months_with_data: list[str],
                   today: date) -> Period:
    """The rollup keys of a month, or of ``start``..``end`` (either may be open), or of all time."""
    if month is not None:
        first, last = month_bounds(check_month(month))
        return Period([month], [], {"from": first.isoformat(), "to": last.isoformat(), "month": month})
    if start is None and end is None:
        return Period(months_with_data, [], {"from": None, "to": None, "all_time": True})
    first = parse_day(start, "from") if start else (
        month_bounds(months_with_data[0])[0] if months_with_data else today)
    last = parse_day(end, "to") if end else today
    asked = {"from": first.isoformat(), "to": last.isoformat()}
    # nothing was counted before the first month with data or after today: the same rates, fewer keys
    if months_with_data:
        first = max(first, month_bounds(months_with_data[0])[0])
    last = min(last, today)
    if last < first:  # an empty period (or 'to' before 'from'): no cases, every rate empty
        return Period([], [], {**asked, "empty": True})
    months, days = period_keys(first, last)
    return Period(months, days, asked)


def daily_range(start: str | None, end: str | None, today: date) -> tuple[date, date, list[date]]:
    """(first, last, the days) of a daily series: 30 days up to ``end`` (default today) unless ``start`` says
    otherwise, never more than 366 days up to ``end``; no days when ``start`` is after ``end``."""
    last = parse_day(end, "to") if end else today
    first = parse_day(start, "from") if start else last - timedelta(days=30)
    first = max(first, last - timedelta(days=366))
    return first, last, [first + timedelta(days=i) for i in range(max(0, (last - first).days + 1))]


@dataclass(frozen=True)
class LedgerFilters:
    """Filters of the ledger (台账): unit, category, county, status, received month, flagged, overdue."""

    unit: str | None = None
    category: str | None = None
    county: str | None = None
    status: str | None = None
    month: str | None = None
    flagged: bool | None = None
    overdue: bool | None = None

    def __post_init__(self) -> None:
        if self.month is not None:
            check_month(self.month)
