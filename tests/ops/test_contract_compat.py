"""The published event schemas stay compatible with the committed baseline (tests/ops/contract_baseline.json).

A breaking change needs a new schema version (a v2 file); accept a compatible change with
`python -m scripts.ops.contract_compat --update`.
"""

from __future__ import annotations

import copy

from scripts.ops.contract_compat import (
    FieldShape,
    baseline_of,
    breaking_changes,
    compare,
    load_baseline,
    load_schemas,
    shape,
)

BASE = {
    "type": "object",
    "required": ["id", "type", "data"],
    "properties": {
        "id": {"type": "string"},
        "type": {"const": "gov.wenzheng.case.rated", "type": "string"},
        "data": {
            "type": "object",
            "required": ["rating"],
            "properties": {
                "rating": {"$ref": "#/$defs/Rating"},
                "reason": {"anyOf": [{"type": "string"}, {"type": "null"}], "default": None},
                "tags": {"type": "array", "items": {"type": "string"}},
            },
        },
    },
    "$defs": {"Rating": {"enum": ["satisfied", "basically_satisfied", "unsatisfied"], "type": "string"}},
}


def changed(mutate) -> list[str]:
    new = copy.deepcopy(BASE)
    mutate(new)
    return breaking_changes(shape(BASE), shape(new))


def test_the_committed_schemas_are_compatible_with_the_baseline():
    problems = compare(load_baseline(), load_schemas())
    assert not problems, "breaking schema changes:\n" + "\n".join(problems)


def test_identical_schemas_are_compatible():
    assert changed(lambda s: None) == []


def test_an_added_optional_property_passes():
    assert changed(lambda s: s["properties"]["data"]["properties"].update(note={"type": "string"})) == []


def test_an_added_enum_value_passes():
    assert changed(lambda s: s["$defs"]["Rating"]["enum"].append("no_opinion")) == []


def test_a_removed_property_is_breaking():
    problems = changed(lambda s: s["properties"]["data"]["properties"].pop("reason"))
    assert problems == ["data.reason: property removed"]


def test_a_newly_required_property_is_breaking():
    assert changed(lambda s: s["properties"]["data"]["required"].append("reason")) == ["data.reason: became required"]


def test_an_added_required_property_is_breaking():
    def add(s):
        s["properties"]["data"]["properties"]["score"] = {"type": "integer"}
        s["properties"]["data"]["required"].append("score")
    assert changed(add) == ["data.score: new required property"]


def test_a_changed_type_is_breaking():
    problems = changed(lambda s: s["properties"]["data"]["properties"]["tags"]["items"].update(type="integer"))
    assert problems == ["data.tags[]: type changed from ['string'] to ['integer']"]


def test_a_narrowed_enum_through_a_ref_is_breaking():
    problems = changed(lambda s: s["$defs"]["Rating"]["enum"].remove("basically_satisfied"))
    assert problems == ["data.rating: enum lost ['basically_satisfied']"]


def test_a_changed_const_is_breaking():
    problems = changed(lambda s: s["properties"]["type"].update(const=2, type="integer"))
    assert "type: const changed from 'gov.wenzheng.case.rated' to 2" in problems
    assert "type: type changed from ['string'] to ['integer']" in problems


def test_a_breaking_change_is_accepted_as_a_new_version_file():
    baseline = dict(_as_baseline({"case.rated.v1.json": BASE}))
    narrowed = copy.deepcopy(BASE)
    narrowed["$defs"]["Rating"]["enum"] = ["satisfied", "unsatisfied"]
    assert compare(baseline, {"case.rated.v1.json": narrowed}) != []
    assert compare(baseline, {"case.rated.v2.json": narrowed}) == []


def test_a_schema_removed_without_a_successor_is_breaking():
    baseline = dict(_as_baseline({"case.rated.v1.json": BASE}))
    assert compare(baseline, {}) == ["case.rated.v1.json: schema removed without a newer version"]


def _as_baseline(schemas):
    for name, shapes in baseline_of(schemas).items():
        yield name, {path: FieldShape.from_json(raw) for path, raw in shapes.items()}
