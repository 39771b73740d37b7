"""The event contracts: envelope round trip, validation errors that name the field."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone

import pytest

from services.common.events import (
    EVENT_SPECS,
    CaseAssigned,
    CaseSubmitted,
    Channel,
    EventValidationError,
    Location,
    dead_letter_for,
    make_event,
    parse_event,
)
from tests.common.samples import sample_payloads

T0 = datetime(2026, 9, 28, 2, 0, tzinfo=UTC)


def submitted(**overrides) -> CaseSubmitted:
    fields = dict(case_id="c-1", tracking_number="WZ2609-ABCD-EFGH", version=1, occurred_at=T0,
                  actor="citizen", channel=Channel.WEB, title="路灯不亮", body="解放街道路灯坏了",
                  location=Location(county="章贡区"))
    return CaseSubmitted(**{**fields, **overrides})


def test_every_type_has_a_sample_and_round_trips_through_the_envelope():
    samples = sample_payloads()
    assert {EVENT_SPECS_BY_MODEL for EVENT_SPECS_BY_MODEL in (type(p) for p in samples)} == {
        spec.model for spec in EVENT_SPECS.values()
    }
    for payload in samples:
        event = make_event(payload, source="/test")
        parsed = parse_event(event.to_json())
        assert parsed.data == payload
        assert parsed.envelope == event.envelope
        assert parsed.envelope.specversion == "1.0"
        assert parsed.envelope.dataschema.endswith("/v1.json")


def test_envelope_carries_subject_key_and_case_version():
    event = make_event(submitted(version=3), source="/wenzheng/intake")
    body = json.loads(event.to_json())
    assert body["subject"] == "c-1" and event.key == b"c-1"
    assert body["type"] == "gov.wenzheng.case.submitted"
    assert body["sequence"] == 3
    assert body["time"].endswith("Z")


def test_times_are_normalised_to_utc_and_naive_times_rejected():
    shanghai = timezone(timedelta(hours=8))
    event = submitted(occurred_at=datetime(2026, 9, 28, 10, 0, tzinfo=shanghai))
    assert event.occurred_at == T0 and event.occurred_at.tzinfo == UTC
    with pytest.raises(ValueError, match="timezone"):
        submitted(occurred_at=datetime(2026, 9, 28, 10, 0))


@pytest.mark.parametrize(
    ("mutate", "field"),
    [
        (lambda e: e.pop("specversion"), "specversion"),
        (lambda e: e.update(specversion="0.3"), "specversion"),
        (lambda e: e.update(time="yesterday"), "time"),
        (lambda e: e.update(type="gov.wenzheng.case.exploded"), "type"),
        (lambda e: e["data"].pop("tracking_number"), "data.tracking_number"),
        (lambda e: e["data"].update(channel="pigeon"), "data.channel"),
        (lambda e: e["data"].update(title="x" * 101), "data.title"),
        (lambda e: e["data"].update(surprise=1), "data.surprise"),
        (lambda e: e.update(subject="c-other"), "subject"),
        (lambda e: e.update(extra_attr=1), "extra_attr"),
    ],
)
def test_a_bad_event_names_the_field(mutate, field):
    raw = make_event(submitted(), source="/t").to_dict()
    mutate(raw)
    with pytest.raises(EventValidationError) as info:
        parse_event(json.dumps(raw).encode())
    assert info.value.field == field
    assert field in str(info.value)


@pytest.mark.parametrize("raw", [b"\xff\xfe", b"not json", b"[1,2]", b"", b"null"])
def test_garbage_is_a_clear_error_not_a_crash(raw):
    with pytest.raises(EventValidationError):
        parse_event(raw)


def test_event_on_the_wrong_topic_is_rejected():
    raw = make_event(submitted(), source="/t").to_json()
    with pytest.raises(EventValidationError, match="does not belong"):
        parse_event(raw, expected_topic="alerts")


def test_assigned_requires_a_deadline_and_bounded_confidence():
    with pytest.raises(ValueError, match="confidence"):
        CaseAssigned(case_id="c", tracking_number="WZ-1234", version=2, occurred_at=T0, actor="router",
                     decision_id="d", category="urban_management", category_name="城市管理",
                     department_id="zhanggong_gov", department_name="章贡区人民政府", deadline=T0,
                     working_days=5, confidence=1.5, model_version="m1")


def test_dead_letter_keeps_the_bytes_and_the_reason():
    letter = dead_letter_for(topic="t", value=b"\xffbad", key=b"k", reason="message is not UTF-8",
                             error_type="EventValidationError", service="router", partition=2, offset=7)
    parsed = parse_event(make_event(letter, source="/router").to_json())
    assert parsed.data.value.endswith("bad") and parsed.data.offset == 7
