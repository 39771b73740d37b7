"""The bulletin's case lists, per month, in memory: typical cases (典型案例) by the month they were flagged,
overdue-alerted or escalated cases by the month they were received.

The monthly report needs these few cases, not the ledger: filtering the ledger for them scans every case on
the local MongoDB-wire server (it indexes ``_id`` only). So every batch says which of its cases are on a list
now, or were before it (a *change*: the case's ledger revision and its slim state, or ``None`` when it left
every list); a flush stores its changes (``case_lists``, one document per listed case) and puts them in its
rollup log entry, and every process's view applies them as it follows the log. A change applies only if its
revision is not older than the one held, so applying the same changes again, or in another order, leaves
the same lists. Pure: no I/O.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

LIST_FIELDS = ("tracking_number", "status", "unit", "category", "county", "received_at", "received_day",
               "deadline", "signed_at", "first_reply_at", "on_time", "rating", "second_handling", "returns",
               "closed_at", "flagged", "flagged_at", "flagged_day", "overdue_alerted", "escalated",
               "awaiting_reply", "invalid_reason", "merged_into", "reply_tenths")
REPORT_LIST_MAX = 500  # cases per list in one bulletin

Change = dict[str, Any]  # {"rev": int, "s": slim state | None}


def is_listed(s: Mapping[str, Any] | None) -> bool:
    """Whether a case belongs on a bulletin list of some month."""
    return bool(s) and bool(s.get("flagged_day") or s.get("overdue_alerted") or s.get("escalated"))


def list_change(rev: int, before: Mapping[str, Any] | None, after: Mapping[str, Any]) -> Change | None:
    """What a new ledger state changes in the lists: its slim state if listed, ``None`` state if it just left
    them, nothing (``None``) if it is on no list before or after."""
    if is_listed(after):
        return {"rev": rev, "s": {k: after.get(k) for k in LIST_FIELDS}}
    if before is None or is_listed(before):
        return {"rev": rev, "s": None}  # (an unknown before: say so, a removal of nothing is harmless)
    return None


def merge_changes(into: dict[str, Change], changes: Mapping[str, Change]) -> None:
    """Keep, per case, the newest change (the later one of the same revision)."""
    for case_id, change in changes.items():
        held = into.get(case_id)
        if held is None or change["rev"] >= held["rev"]:
            into[case_id] = change


def _in_order(s: Mapping[str, Any], when: str) -> tuple[str, str]:
    return (s.get(when) or "", s.get("tracking_number") or "")


class CaseLists:
    """The listed cases by id, with the revision of every change seen (removals too), indexed by month."""

    def __init__(self) -> None:
        self._revs: dict[str, int] = {}
        self._states: dict[str, dict[str, Any]] = {}
        self._typical: dict[str, set[str]] = {}  # flagged month -> case ids
        self._late: dict[str, set[str]] = {}  # received month -> case ids (overdue-alerted or escalated)

    def apply(self, changes: Mapping[str, Change]) -> None:
        for case_id, change in changes.items():
            if change["rev"] < self._revs.get(case_id, 0):
                continue  # an older state than the one held
            self._revs[case_id] = change["rev"]
            self._unindex(case_id)
            if change["s"] is not None:
                self._states[case_id] = dict(change["s"])
                self._index(case_id)

    def held(self) -> dict[str, Change]:
        """Every listed case's change (revision and slim state), by case id."""
        return {cid: {"rev": self._revs[cid], "s": dict(s)} for cid, s in self._states.items()}

    def typical(self, month: str, limit: int = REPORT_LIST_MAX) -> list[tuple[str, dict[str, Any]]]:
        """(case id, state) of the cases flagged typical in ``month``, in the order they were flagged."""
        return self._sorted(self._typical.get(month, ()), "flagged_at", limit)

    def late(self, month: str, limit: int = REPORT_LIST_MAX) -> list[tuple[str, dict[str, Any]]]:
        """(case id, state) of the cases received in ``month`` that were overdue-alerted or escalated."""
        return self._sorted(self._late.get(month, ()), "received_at", limit)

    def _sorted(self, ids: Iterable[str], when: str, limit: int) -> list[tuple[str, dict[str, Any]]]:
        rows = sorted(((cid, self._states[cid]) for cid in ids), key=lambda r: _in_order(r[1], when))
        return rows[:limit]

    def _index(self, case_id: str) -> None:
        s = self._states[case_id]
        if s.get("flagged_day"):
            self._typical.setdefault(s["flagged_day"][:7], set()).add(case_id)
        if (s.get("overdue_alerted") or s.get("escalated")) and s.get("received_day"):
            self._late.setdefault(s["received_day"][:7], set()).add(case_id)

    def _unindex(self, case_id: str) -> None:
        s = self._states.pop(case_id, None)
        if s is None:
            return
        for index, day in ((self._typical, s.get("flagged_day")), (self._late, s.get("received_day"))):
            if day and case_id in index.get(day[:7], ()):
                index[day[:7]].discard(case_id)


def changes_of(docs: Iterable[Mapping[str, Any]], removals: bool = False) -> dict[str, Change]:
    """The changes of ledger documents whose earlier state is unknown: the listed ones (a rebuild from the
    ledger), and with ``removals`` a removal for every other one (recovering a batch journaled without its
    changes, whose cases may have left a list)."""
    out: dict[str, Change] = {}
    for doc in docs:
        change = list_change(doc["rev"], None, doc["s"])
        if change is not None and (removals or change["s"] is not None):
            out[doc["_id"]] = change
    return out
