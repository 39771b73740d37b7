"""The copies of new posts intake keeps for the router's decision, which comes a second after the post."""

from __future__ import annotations

from services.intake.store import JustPosted


def test_a_new_case_is_kept_as_inserted_without_its_outbox_and_handed_out_as_a_copy() -> None:
    kept = JustPosted(limit=10)
    kept.put({"_id": "c1", "version": 1, "timeline": [{"type": "submitted"}], "write_refs": ["w"], "outbox": []})
    first = kept.get("c1")
    assert first == {"_id": "c1", "version": 1, "timeline": [{"type": "submitted"}]}
    first["timeline"].append({"type": "assigned"})  # a handler adds to what it read
    assert kept.get("c1")["timeline"] == [{"type": "submitted"}]
    assert kept.get("c2") is None


def test_a_changed_case_is_forgotten_and_the_oldest_go_past_the_limit() -> None:
    kept = JustPosted(limit=3)
    for n in range(5):
        kept.put({"_id": f"c{n}", "version": 1})
    assert [kept.get(f"c{n}") is not None for n in range(5)] == [False, False, True, True, True]
    kept.forget("c3")  # its first change: the copy would be outdated
    assert kept.get("c3") is None
