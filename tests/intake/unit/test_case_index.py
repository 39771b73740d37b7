"""The lists' in-memory index against a brute-force reading of the same filters over the case documents.

The reference below reads the documents as the staff and board queries always meant (MongoDB's semantics:
a missing field is null, ``$ne: True`` holds for a missing flag, a deadline range never holds for null),
with the domain's own ``in_bucket``; the index must find the same cases in the same order and count the
same buckets, whatever was put, replaced or put out of order."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from services.common.events import CaseStatus, Rating
from services.common.workdays import default_calendar
from services.intake import domain
from services.intake.case_index import CaseIndex, summary_from_doc
from services.intake.handlers import (
    BoardFilter,
    CaseFilter,
    _day_start,
    board_query,
    bucket_window,
    staff_query,
    tracking_number_in,
)

NOW = datetime(2026, 11, 20, 2, 30, 0, 123456, tzinfo=UTC)
CALENDAR = default_calendar()
UNITS = ["zhanggong_gov", "water", "power"]
COUNTIES = ["章贡区", "南康区"]
CATEGORIES = ["urban_management", "water_supply"]
WORDS = ["路灯", "水管", "Road", "road", "噪音", "停水"]


def tracking(n: int) -> str:
    return f"WZ2026-{n:04d}-AB{n % 100:02d}"


text = st.lists(st.sampled_from(WORDS), max_size=3).map(" ".join)
moment = st.integers(-20, 20).map(lambda h: NOW + timedelta(hours=h * 7, milliseconds=h % 3))


@st.composite
def case_doc(draw: st.DrawFn, n: int, version: int, created_at: datetime) -> dict[str, Any]:
    title, body, other = draw(text), draw(text), draw(text)
    notices = [{"department_id": draw(st.sampled_from(UNITS)), "answered_at": draw(st.none() | moment)}
               for _ in range(draw(st.integers(0, 2)))]
    return {
        "_id": f"c{n}", "tracking_number": tracking(n), "version": version,
        "status": draw(st.sampled_from(list(CaseStatus))).value,
        "department_id": draw(st.none() | st.sampled_from(UNITS)),
        "category": draw(st.none() | st.sampled_from(CATEGORIES)),
        "county": draw(st.none() | st.sampled_from(COUNTIES)),
        "created_at": created_at,
        "deadline": draw(st.none() | moment),
        "pending_extension": draw(st.none() | st.just({"reason": "r", "extra_working_days": 2, "requested_at": NOW})),
        "rating": draw(st.none() | st.sampled_from(list(Rating)).map(lambda r: r.value)),
        "flagged": draw(st.booleans()), "publishable": draw(st.booleans()),
        "title": title, "body": body,
        "original": {"title": other if draw(st.booleans()) else title, "body": body},
        "notices": notices,
    }


@st.composite
def histories(draw: st.DrawFn) -> tuple[list[dict[str, Any]], dict[str, dict[str, Any]]]:
    """Puts in any order, later versions replacing earlier ones, some stale versions arriving late."""
    count = draw(st.integers(0, 20))
    puts, latest = [], {}
    for n in range(count):
        created_at = NOW - timedelta(days=draw(st.integers(0, 4)), hours=draw(st.sampled_from([0, 0, 5])))
        versions = [draw(case_doc(n, v, created_at)) for v in range(1, draw(st.integers(1, 3)) + 1)]
        puts += versions
        latest[f"c{n}"] = versions[-1]
    return draw(st.permutations(puts)), latest


def _searched(doc: dict[str, Any], q: str, fields: list[str]) -> bool:
    original = doc.get("original") or {} if "original" in fields else {}
    values = [doc.get(f) for f in fields if f != "original"] + [original.get("title"), original.get("body")]
    return any(v is not None and q.strip().lower() in v.lower() for v in values)


def _q_holds(doc: dict[str, Any], q: str | None, fields: list[str]) -> bool:
    if not q or not q.strip():
        return True
    number = tracking_number_in(q)
    return doc["tracking_number"] == number if number else _searched(doc, q, fields)


def _ms(value: datetime | None) -> datetime | None:
    return value.replace(microsecond=value.microsecond // 1000 * 1000) if value else None


def _in_bucket(doc: dict[str, Any], bucket: domain.Bucket) -> bool:
    # MongoDB keeps milliseconds: compare the deadline with `now` as the server would
    return domain.in_bucket(bucket, CaseStatus(doc["status"]), _ms(doc["deadline"]), _ms(NOW), CALENDAR)


def staff_reference(docs: list[dict[str, Any]], f: CaseFilter, unit: str | None) -> list[str]:
    def holds(d: dict[str, Any]) -> bool:
        created = d["created_at"]
        return all([
            unit is None or d["department_id"] == unit,
            f.status is None or d["status"] == f.status.value,
            f.overdue is None or _in_bucket(d, domain.Bucket.OVERDUE) is f.overdue,
            f.bucket is None or _in_bucket(d, f.bucket),
            _q_holds(d, f.q, ["title", "body", "original"]),
            f.since is None or created >= _day_start(f.since),
            f.until is None or created < _day_start(f.until) + timedelta(days=1),
            f.category is None or d["category"] == f.category,
            f.county is None or d["county"] == f.county,
            f.pending_extension is None or (d["pending_extension"] is not None) is f.pending_extension,
            f.rating is None or d["rating"] == f.rating.value,
            f.flagged is None or (d["flagged"] is True) is f.flagged,
            f.awaiting_moderation is None or (d["publishable"] is not True) is f.awaiting_moderation,
        ])
    return _ordered([d for d in docs if holds(d)])


def board_reference(docs: list[dict[str, Any]], f: BoardFilter) -> list[str]:
    return _ordered([d for d in docs if d["publishable"] and _q_holds(d, f.q, ["title", "body"]) and all(
        getattr(f, name) is None or d[field] == getattr(f, name)
        for name, field in (("county", "county"), ("category", "category"), ("department_id", "department_id")))
        and (f.status is None or d["status"] == f.status.value)])


def _ordered(docs: list[dict[str, Any]]) -> list[str]:
    docs = sorted(docs, key=lambda d: d["_id"])
    return [d["_id"] for d in sorted(docs, key=lambda d: d["created_at"], reverse=True)]


def indexed(puts: list[dict[str, Any]]) -> CaseIndex:
    index = CaseIndex()
    for doc in puts:
        index.put(summary_from_doc(doc))
    return index


q_text = st.none() | st.sampled_from(["路灯", "ROAD", " 水", "噪音 停", tracking(3),
                                     tracking(3).lower().replace("-", "")])
staff_filters = st.builds(
    CaseFilter, status=st.none() | st.sampled_from(list(CaseStatus)), overdue=st.none() | st.booleans(),
    bucket=st.none() | st.sampled_from(list(domain.Bucket)), q=q_text,
    since=st.none() | st.dates(date(2026, 11, 15), date(2026, 11, 21)),
    until=st.none() | st.dates(date(2026, 11, 15), date(2026, 11, 21)),
    category=st.none() | st.sampled_from(CATEGORIES), county=st.none() | st.sampled_from(COUNTIES),
    pending_extension=st.none() | st.booleans(), rating=st.none() | st.sampled_from(list(Rating)),
    flagged=st.none() | st.booleans(), awaiting_moderation=st.none() | st.booleans())
board_filters = st.builds(BoardFilter, q=q_text, county=st.none() | st.sampled_from(COUNTIES),
                          category=st.none() | st.sampled_from(CATEGORIES),
                          department_id=st.none() | st.sampled_from(UNITS),
                          status=st.none() | st.sampled_from(list(CaseStatus)))
pages = st.tuples(st.integers(0, 12), st.integers(1, 10))


@settings(max_examples=100, deadline=None)
@given(histories(), staff_filters, st.none() | st.sampled_from(UNITS), pages)
def test_a_staff_list_is_the_reference_page(history, f, unit, page) -> None:
    puts, latest = history
    expected = staff_reference(list(latest.values()), f, unit)
    offset, limit = page
    found, total = indexed(puts).find(staff_query(f, unit, NOW, CALENDAR), offset=offset, limit=limit)
    assert total == len(expected)
    assert [s.case_id for s in found] == expected[offset:offset + limit]


@settings(max_examples=100, deadline=None)
@given(histories(), board_filters, pages)
def test_the_board_is_the_reference_page(history, f, page) -> None:
    puts, latest = history
    expected = board_reference(list(latest.values()), f)
    offset, limit = page
    found, total = indexed(puts).find(board_query(f), offset=offset, limit=limit)
    assert (total, [s.case_id for s in found]) == (len(expected), expected[offset:offset + limit])


@settings(max_examples=100, deadline=None)
@given(histories(), st.none() | st.sampled_from(UNITS))
def test_counts_and_notices_are_the_reference(history, unit) -> None:
    puts, latest = history
    docs = [d for d in latest.values() if unit is None or d["department_id"] == unit]
    index = indexed(puts)
    for bucket in domain.Bucket:
        assert index.count(unit, bucket_window(bucket, NOW, CALENDAR)) == sum(_in_bucket(d, bucket) for d in docs)
    notices = [(d["_id"], n) for d in latest.values() for n in d["notices"]
               if unit is None or n["department_id"] == unit]
    assert index.open_notice_count(unit) == sum(n["answered_at"] is None for _, n in notices)
    assert set(index.cases_with_notices(unit, open_only=False)) == {i for i, _ in notices}
    assert set(index.cases_with_notices(unit, open_only=True)) == {i for i, n in notices if n["answered_at"] is None}


def test_a_command_keeps_the_texts_it_does_not_change() -> None:
    """A command's $set carries no `original`, and the title and body only when moderated."""
    doc = {"_id": "c1", "tracking_number": tracking(1), "version": 1, "status": "submitted", "created_at": NOW,
           "title": "路灯", "body": "坏了 13912345678", "original": {"title": "路灯", "body": "坏了 13912345678 张三"}}
    index = CaseIndex()
    index.put(summary_from_doc(doc))
    index.put(summary_from_doc({**doc, "version": 2, "status": "assigned", "title": None, "body": None}
                               | {"title": "路灯"}, index.get("c1")))
    fields = {k: v for k, v in doc.items() if k not in ("title", "body", "original")}
    index.put(summary_from_doc({**fields, "version": 3, "status": "signed"}, index.get("c1")))
    staff = staff_query(CaseFilter(q="张三"), None, NOW, CALENDAR)
    assert [s.case_id for s in index.find(staff, offset=0, limit=5)[0]] == ["c1"]
    assert index.find(board_query(BoardFilter(q="张三")), offset=0, limit=5)[1] == 0
    assert index.get("c1").status is CaseStatus.SIGNED
    assert not index.put(summary_from_doc({**doc, "version": 2}))  # an older version changes nothing
