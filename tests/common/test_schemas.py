"""schemas/ must match the models, and every sample event must validate against its JSON Schema."""

from __future__ import annotations

import jsonschema

from services.common.events import EVENT_SPECS, SPEC_BY_MODEL, make_event
from services.common.schemas import SCHEMA_DIR, render_all, schema_file_name, stale_files
from tests.common.samples import sample_payloads


def test_committed_schemas_are_up_to_date():
    stale = stale_files()
    assert not stale, f"schemas/ is stale for {stale}: run `make schemas` and commit the result"


def test_one_schema_per_event_type():
    assert len(render_all()) == len(EVENT_SPECS)


def test_stale_detection_sees_a_changed_schema(tmp_path):
    for name, text in render_all().items():
        (tmp_path / name).write_text(text, encoding="utf-8")
    assert stale_files(tmp_path) == []
    victim = next(iter(render_all()))
    (tmp_path / victim).write_text("{}", encoding="utf-8")
    assert stale_files(tmp_path) == [victim]


def test_sample_events_validate_against_the_generated_schemas():
    import json

    for payload in sample_payloads():
        spec = SPEC_BY_MODEL[type(payload)]
        schema = json.loads((SCHEMA_DIR / schema_file_name(spec.type, spec.schema_version)).read_text())
        jsonschema.Draft202012Validator(schema).validate(make_event(payload, source="/t").to_dict())


def test_schema_rejects_a_wrong_type_constant():
    import json

    payload = sample_payloads()[0]
    spec = SPEC_BY_MODEL[type(payload)]
    schema = json.loads((SCHEMA_DIR / schema_file_name(spec.type, spec.schema_version)).read_text())
    doc = make_event(payload, source="/t").to_dict()
    doc["type"] = "gov.wenzheng.case.closed"
    assert list(jsonschema.Draft202012Validator(schema).iter_errors(doc))
