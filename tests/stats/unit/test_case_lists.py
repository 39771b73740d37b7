"""The bulletin's case lists as pure data: changes apply by revision, whatever their order or repetition."""

from __future__ import annotations

from services.stats.lists import CaseLists, list_change


def _state(**kw):
    base = {"tracking_number": "GZ1", "received_at": "2026-03-02T01:00:00+00:00", "received_day": "2026-03-02",
            "flagged_day": None, "flagged_at": None, "overdue_alerted": False, "escalated": False}
    return {**base, **kw}


def test_changes_apply_by_revision_whatever_the_order_or_repetition() -> None:
    flagged = _state(flagged=True, flagged_at="2026-04-01T02:00:00+00:00", flagged_day="2026-04-01")
    late = _state(overdue_alerted=True)
    changes = [{"c1": list_change(1, None, late)}, {"c1": list_change(2, late, flagged)},
               {"c2": list_change(1, None, late)}, {"c2": list_change(2, late, _state())}]
    assert changes[3]["c2"]["s"] is None  # left every list
    assert list_change(3, _state(), _state()) is None  # on no list before or after: nothing to say
    orders = [changes, changes[::-1], changes + changes, [changes[1], changes[0], changes[3], changes[2]]]
    seen = []
    for order in orders:
        lists = CaseLists()
        for change in order:
            lists.apply(change)
        seen.append((lists.typical("2026-04"), lists.late("2026-03"), lists.held()))
    assert all(s == seen[0] for s in seen)
    typical, late_march, _held = seen[0]
    assert [cid for cid, _s in typical] == ["c1"] and late_march == []  # c1 is no longer overdue-alerted
