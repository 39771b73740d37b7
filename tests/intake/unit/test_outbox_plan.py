"""What the relay may publish, decided from the writers' watermarks and the outbox documents alone."""

from __future__ import annotations

from typing import Any

from services.intake.outbox import (
    WriterMark,
    closed_ref,
    done_ref,
    group_ref,
    plan_publication,
    publication_order,
    window_ids,
)

NOW = 1_000_000


def event(event_id: str, doc: str | None = "c1", v: int | None = None) -> dict[str, Any]:
    return {"id": event_id, "topic": "case_events", "key": doc or "sms", "value": "{}", "v": v,
            "holder": "cases" if doc else None, "doc": doc}


def intent(writer: str, seq: int, *events: dict[str, Any], at_ms: int = NOW, complete: bool = False) -> dict:
    return {"_id": group_ref(writer, seq), "writer": writer, "seq": seq, "at_ms": at_ms, "events": list(events),
            "complete": complete}


def docs_of(*docs: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {d["_id"]: d for d in docs}


def done(writer: str, seq: int, *failed: str) -> dict[str, Any]:
    return {"_id": done_ref(group_ref(writer, seq)), "failed": list(failed)}


def plan(marks: list[WriterMark], docs: dict[str, dict[str, Any]], window: int = 8):
    return plan_publication(marks, docs, window=window, now_ms=NOW, abandon_ms=30_000)


def test_settled_groups_go_out_in_order_and_the_watermark_moves_once() -> None:
    docs = docs_of(intent("a", 1, event("e1")), done("a", 1), intent("a", 2, event("e2", "c2")), done("a", 2))
    result = plan([WriterMark("a", 0)], docs)
    assert [g.seq for g in result.ready] == [1, 2]
    assert result.watermarks == {"a": 2}
    assert set(result.consumed) == {group_ref("a", 1), done_ref(group_ref("a", 1)), group_ref("a", 2),
                                    done_ref(group_ref("a", 2))}
    assert result.backlog == 0 and not result.to_check


def test_failed_writes_named_by_the_done_marker_are_not_published() -> None:
    docs = docs_of(intent("a", 1, event("e1"), event("e2", "c2")), done("a", 1, "e2"))
    [group] = plan([WriterMark("a", 0)], docs).ready
    assert [e["id"] for e in group.events()] == ["e1"]


def test_a_group_still_being_written_stops_its_writer_but_not_the_others() -> None:
    docs = docs_of(intent("a", 1, event("e1")), intent("a", 2, event("e2", "c2")), done("a", 2),
                   intent("b", 1, event("e3", "c3")), done("b", 1))
    result = plan([WriterMark("a", 0), WriterMark("b", 0)], docs)
    # a:1 has a later group, so its writer gave up on it: settled from its documents
    assert [g.ref for g in result.to_check] == [group_ref("a", 1)]
    docs.pop(group_ref("a", 2))
    docs.pop(done_ref(group_ref("a", 2)))
    result = plan([WriterMark("a", 0), WriterMark("b", 0)], docs)
    assert [g.ref for g in result.ready] == [group_ref("b", 1)]
    assert result.watermarks == {"b": 1} and result.backlog == 1 and result.oldest_at_ms == NOW


def test_a_case_in_another_writers_group_in_flight_holds_back_its_later_events() -> None:
    docs = docs_of(intent("a", 1, event("e1", "c1", v=2)),  # in flight: no done marker yet
                   intent("b", 1, event("e2", "c1", v=3)), done("b", 1))
    result = plan([WriterMark("a", 0), WriterMark("b", 0)], docs)
    assert result.ready == [] and result.watermarks == {}
    docs[done_ref(group_ref("a", 1))] = done("a", 1)
    result = plan([WriterMark("a", 0), WriterMark("b", 0)], docs)
    events = publication_order([e for g in result.ready for e in g.events()])
    assert [e["id"] for e in events] == ["e1", "e2"]


def test_an_old_intent_without_its_done_marker_is_settled_from_its_documents() -> None:
    docs = docs_of(intent("a", 1, event("e1"), event("sms", None), at_ms=NOW - 31_000))
    result = plan([WriterMark("a", 0)], docs)
    [group] = result.to_check
    assert [e["id"] for e in group.events(reached=set())] == ["sms"]  # the case never got the write
    assert [e["id"] for e in group.events(reached={("cases", "c1")})] == ["e1", "sms"]


def test_a_message_only_group_is_complete_without_a_done_marker() -> None:
    docs = docs_of(intent("a", 1, event("sms", None), complete=True))
    assert [g.seq for g in plan([WriterMark("a", 0)], docs).ready] == [1]


def test_a_closed_writer_is_forgotten_once_drained() -> None:
    docs = docs_of(intent("a", 3, event("e1")), done("a", 3), {"_id": closed_ref("a")})
    result = plan([WriterMark("a", 2)], docs)
    assert result.retired == ["a"] and closed_ref("a") in result.consumed
    assert plan([WriterMark("a", 2)], docs_of(intent("a", 3, event("e1")))).retired == []  # closed not seen


def test_the_window_names_each_group_its_done_marker_and_the_closing_mark() -> None:
    ids = window_ids([WriterMark("w", 5)], 2)
    assert ids == [group_ref("w", 6), done_ref(group_ref("w", 6)), group_ref("w", 7), done_ref(group_ref("w", 7)),
                   closed_ref("w")]


def test_a_group_held_back_behind_its_own_writer_holds_back_another_writers_later_version() -> None:
    # d:1 (c9 v4) is in flight, so a:1 (c9 v5) waits, and a:2 (c1 v2) behind it; b:1 (c1 v3) must wait too
    docs = docs_of(intent("d", 1, event("e0", "c9", v=4)),
                   intent("a", 1, event("e1", "c9", v=5)), done("a", 1), intent("a", 2, event("e2", "c1", v=2)),
                   done("a", 2), intent("b", 1, event("e3", "c1", v=3)), done("b", 1),
                   intent("c", 1, event("e4", "c7")), done("c", 1))
    marks = [WriterMark(w, 0) for w in "abcd"]
    result = plan(marks, docs)
    assert [g.ref for g in result.ready] == [group_ref("c", 1)]
    assert result.backlog == 4
    docs[done_ref(group_ref("d", 1))] = done("d", 1)
    events = publication_order([e for g in plan(marks, docs).ready for e in g.events()])
    assert [e["id"] for e in events if e["doc"] == "c1"] == ["e2", "e3"]
    assert [e["id"] for e in events if e["doc"] == "c9"] == ["e0", "e1"]
