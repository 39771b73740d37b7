"""Routing quality: per category and per unit, the share of the router's decisions that were later
corrected, by month — and which categories supervisors moved posts from and to.

The worker counts in memory (:class:`QualityTally`: nothing per post touches the database) and adds its
counts every few seconds to its own document per month (``quality_tallies``, ``_id`` =
``"<YYYY-MM>|<owner>"``: one writer per document, so the local server's lost concurrent updates cannot
bite). A month is the Asia/Shanghai month the case was submitted in, for decisions and corrections alike,
so a correction is counted against the month, category and unit of the decision it corrects:

- a return (退单) corrects the unit that returned the case, under the category it was routed to;
- a supervisor's reassignment (改派) corrects the category and unit the case had before it, and counts
  ``confusion[from][to]`` when the category changed.

A replay after a crash (at-least-once) can count a batch twice; the figures are shares, which that barely
moves. :func:`quality_report` turns the documents into the JSON the dashboard shows.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping
from datetime import datetime
from typing import Any

from services.common.workdays import SHANGHAI

TRIAGE = "triage"  # decisions that went to the triage desk have no unit


def month_of(moment: datetime | None) -> str | None:
    return moment.astimezone(SHANGHAI).strftime("%Y-%m") if moment else None


class QualityTally:
    def __init__(self) -> None:
        self._counts: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))  # month -> path -> n

    def _add(self, month: str | None, *paths: str) -> None:
        if month is None:
            return
        for path in paths:
            self._counts[month][path] += 1

    def decision(self, month: str | None, category: str | None, unit: str | None) -> None:
        if category:
            self._add(month, f"decisions.category.{category}", f"decisions.unit.{unit or TRIAGE}")

    def returned(self, month: str | None, category: str | None, unit: str) -> None:
        self._add(month, f"returns.category.{category or 'none'}", f"returns.unit.{unit}")

    def reassigned(self, month: str | None, old_category: str | None, old_unit: str | None,
                   new_category: str | None) -> None:
        self._add(month, f"reassignments.category.{old_category or 'none'}",
                  f"reassignments.unit.{old_unit or TRIAGE}")
        if old_category and new_category and old_category != new_category:
            self._add(month, f"confusion.{old_category}.{new_category}")

    def drain(self) -> dict[str, dict[str, int]]:
        """month → ``$inc`` fields, and start counting afresh."""
        counts, self._counts = self._counts, defaultdict(lambda: defaultdict(int))
        return {month: dict(paths) for month, paths in counts.items() if paths}

    def restore(self, drained: Mapping[str, Mapping[str, int]]) -> None:
        """Put back counts whose write failed, to go with the next flush."""
        for month, paths in drained.items():
            for path, n in paths.items():
                self._counts[month][path] += n


def _merge(target: dict, source: Mapping) -> None:
    for key, value in source.items():
        if isinstance(value, Mapping):
            _merge(target.setdefault(key, {}), value)
        else:
            target[key] = target.get(key, 0) + value


def quality_report(docs: Iterable[Mapping[str, Any]], category_name: Callable[[str], str],
                   unit_name: Callable[[str], str]) -> dict[str, Any]:
    """Per month: for each category and each unit, decisions, returns, reassignments and the share of
    decisions corrected (returns + reassignments over decisions; None with no decisions), and the
    categories confused (moved from → to by supervisors), commonest first."""
    months: dict[str, dict] = {}
    for doc in docs:
        _merge(months.setdefault(str(doc["_id"]).split("|", 1)[0], {}), {k: v for k, v in doc.items() if k != "_id"})

    def rows(counts: Mapping, dim: str, name: Callable[[str], str]) -> list[dict[str, Any]]:
        decisions, returns = counts.get("decisions", {}).get(dim, {}), counts.get("returns", {}).get(dim, {})
        moved = counts.get("reassignments", {}).get(dim, {})
        out = []
        for key in sorted(set(decisions) | set(returns) | set(moved)):
            n, r, m = decisions.get(key, 0), returns.get(key, 0), moved.get(key, 0)
            out.append({"id": key, "name": name(key), "decisions": n, "returns": r, "reassignments": m,
                        "corrected_share": round((r + m) / n, 4) if n else None})
        return sorted(out, key=lambda row: (-(row["corrected_share"] or 0), -row["decisions"]))

    result = []
    for month in sorted(months):
        counts = months[month]
        confusion = [{"from": a, "from_name": category_name(a), "to": b, "to_name": category_name(b), "posts": n}
                     for a, targets in counts.get("confusion", {}).items() for b, n in targets.items()]
        result.append({"month": month,
                       "categories": rows(counts, "category", category_name),
                       "units": rows(counts, "unit", unit_name),
                       "confusion": sorted(confusion, key=lambda row: -row["posts"])})
    return {"months": result}
