"""The subscriber example other city systems copy: validation without the project, and a real run."""

from __future__ import annotations

import ast
import json
from pathlib import Path

import pytest
from aiokafka import AIOKafkaProducer

from scripts.ops.subscribe_example import DEFAULT_SCHEMAS, EventValidator, describe, subscribe
from services.common.events import CASE_EVENT_TYPES, make_event
from tests.common.samples import sample_payloads

EXAMPLE = Path(__file__).resolve().parents[2] / "scripts" / "ops" / "subscribe_example.py"


def case_events(case_id: str = "c-1"):
    return [make_event(p, source="/wenzheng/intake") for p in sample_payloads(case_id)
            if make_event(p, source="x").type in CASE_EVENT_TYPES]


def test_the_example_imports_nothing_from_the_project():
    tree = ast.parse(EXAMPLE.read_text(encoding="utf-8"))
    modules = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
    modules |= {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    assert not {m for m in modules if m and m.split(".")[0] in ("services", "tests", "scripts")}


def test_every_case_event_validates_and_prints_one_line():
    validator = EventValidator(DEFAULT_SCHEMAS)
    for event in case_events():
        line = describe(validator.validate(event.to_json()))
        assert "\n" not in line and event.short_type in line and "WZ2609-ABCD-EFGH" in line


def test_broken_events_are_rejected_with_the_reason():
    validator = EventValidator(DEFAULT_SCHEMAS)
    event = case_events()[0].to_dict()
    del event["data"]["title"]
    with pytest.raises(ValueError, match="title"):
        validator.validate(json.dumps(event).encode())
    with pytest.raises(ValueError, match="not JSON"):
        validator.validate(b"{nope")
    with pytest.raises(ValueError, match="unknown event type"):
        validator.validate(json.dumps({**event, "type": "gov.other.thing"}).encode())


def test_a_tolerant_reader_accepts_a_new_optional_field_and_strict_mode_does_not():
    event = case_events()[0].to_dict()
    event["data"]["added_later"] = "x"
    raw = json.dumps(event).encode()
    assert EventValidator(DEFAULT_SCHEMAS).validate(raw)["data"]["added_later"] == "x"
    with pytest.raises(ValueError, match="added_later"):
        EventValidator(DEFAULT_SCHEMAS, strict=True).validate(raw)


@pytest.mark.integration
async def test_the_subscriber_follows_a_real_topic(kafka_bootstrap, test_topics, run_id):
    events = [e for e in case_events(f"c-{run_id}") if e.short_type in ("case.submitted", "case.assigned",
                                                                          "case.signed")]
    producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap)
    await producer.start()
    try:
        for event in events[:3]:
            await producer.send_and_wait(test_topics.case_events, event.to_json(), key=event.key)
        await producer.send_and_wait(test_topics.case_events, b"not json", key=events[0].key)
        await producer.send_and_wait(test_topics.case_events, events[0].to_json(), key=events[0].key)  # redelivery
    finally:
        await producer.stop()
    lines: list[str] = []
    handled = await subscribe(kafka_bootstrap, test_topics.case_events, f"example-{run_id}",
                              EventValidator(DEFAULT_SCHEMAS), max_events=5, idle_seconds=60, emit=lines.append)
    assert handled == 5
    assert [line.split()[1] for line in lines[:3]] == [e.short_type for e in events[:3]]
    assert lines[3].startswith("INVALID") and lines[4].startswith("duplicate")
