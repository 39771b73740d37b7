"""Compatibility of the published event schemas against a committed baseline.

Each schema is flattened into its *shape*: one entry per property path (``data.location.county``) with
its JSON types, whether it is required, its enum and const. A change is breaking for subscribers when a
property disappears, a property becomes required, a type changes, an enum loses values or a const
changes. Adding optional properties or enum values is not. A breaking change needs a new schema version
(``<type>.v2.json``): the old version's file disappearing while a newer one exists is accepted.

    python -m scripts.ops.contract_compat            # compare schemas/ with the baseline
    python -m scripts.ops.contract_compat --update   # accept the current schemas as the new baseline
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
SCHEMA_DIR = ROOT / "schemas"
BASELINE_FILE = ROOT / "tests" / "ops" / "contract_baseline.json"
FILE_PATTERN = re.compile(r"^(?P<type>.+)\.v(?P<version>\d+)\.json$")


@dataclass(frozen=True)
class FieldShape:
    types: tuple[str, ...]
    required: bool
    enum: tuple[Any, ...] | None = None
    const: Any = None
    has_const: bool = False

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"types": list(self.types), "required": self.required}
        if self.enum is not None:
            out["enum"] = list(self.enum)
        if self.has_const:
            out["const"] = self.const
        return out

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> FieldShape:
        return cls(
            types=tuple(raw["types"]),
            required=raw["required"],
            enum=tuple(raw["enum"]) if "enum" in raw else None,
            const=raw.get("const"),
            has_const="const" in raw,
        )


def _resolve(node: dict[str, Any], root: dict[str, Any]) -> dict[str, Any]:
    seen = 0
    while "$ref" in node and seen < 32:
        ref = node["$ref"]
        if not ref.startswith("#/"):
            raise ValueError(f"only local $refs are supported, not {ref!r}")
        target: Any = root
        for part in ref[2:].split("/"):
            target = target[part]
        node = {**target, **{k: v for k, v in node.items() if k != "$ref"}}
        seen += 1
    return node


def _alternatives(node: dict[str, Any], root: dict[str, Any]) -> list[dict[str, Any]]:
    node = _resolve(node, root)
    for key in ("anyOf", "oneOf"):
        if key in node:
            return [alt for option in node[key] for alt in _alternatives(option, root)]
    if "allOf" in node and len(node["allOf"]) == 1:
        return _alternatives({**node["allOf"][0], **{k: v for k, v in node.items() if k != "allOf"}}, root)
    return [node]


def _type_of(node: dict[str, Any]) -> set[str]:
    if "type" in node:
        declared = node["type"]
        return set(declared if isinstance(declared, list) else [declared])
    if "const" in node:
        return {_json_type(node["const"])}
    if "enum" in node:
        return {_json_type(v) for v in node["enum"]}
    if "properties" in node:
        return {"object"}
    return {"any"}


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    return "array" if isinstance(value, list) else "object"


def shape(schema: dict[str, Any]) -> dict[str, FieldShape]:
    """Property path -> shape, for every property reachable through objects and arrays (``[]``)."""
    out: dict[str, FieldShape] = {}

    def walk(node: dict[str, Any], prefix: str, required: bool) -> None:
        alternatives = _alternatives(node, schema)
        types: set[str] = set()
        enum: list[Any] | None = None
        const: Any = None
        has_const = False
        for alt in alternatives:
            types |= _type_of(alt)
            if "enum" in alt:
                enum = [*(enum or []), *[v for v in alt["enum"] if v is not None]]
            if "const" in alt:
                const, has_const = alt["const"], True
        if prefix:
            out[prefix] = FieldShape(tuple(sorted(types)), required,
                                     tuple(sorted(set(enum), key=str)) if enum is not None else None,
                                     const, has_const)
        for alt in alternatives:
            needed = set(alt.get("required", []))
            for name, child in (alt.get("properties") or {}).items():
                walk(child, f"{prefix}.{name}" if prefix else name, name in needed)
            if isinstance(alt.get("items"), dict):
                walk(alt["items"], f"{prefix}[]", True)

    walk(schema, "", True)
    return out


def breaking_changes(old: dict[str, FieldShape], new: dict[str, FieldShape]) -> list[str]:
    """What a subscriber written against ``old`` would trip over in ``new``; empty when compatible."""
    problems = []
    for path, before in sorted(old.items()):
        after = new.get(path)
        if after is None:
            problems.append(f"{path}: property removed")
            continue
        if after.required and not before.required:
            problems.append(f"{path}: became required")
        if after.types != before.types:
            problems.append(f"{path}: type changed from {list(before.types)} to {list(after.types)}")
        if before.enum is not None:
            lost = set(before.enum) - set(after.enum or ()) if after.enum is not None else set()
            if lost:
                problems.append(f"{path}: enum lost {sorted(lost, key=str)}")
        if before.has_const and (not after.has_const or after.const != before.const):
            problems.append(f"{path}: const changed from {before.const!r} to {after.const!r}")
    for path, after in sorted(new.items()):
        if path not in old and after.required and _parent_exists(path, old):
            problems.append(f"{path}: new required property")
    return problems


def _parent_exists(path: str, shapes: dict[str, FieldShape]) -> bool:
    parent = path.rsplit(".", 1)[0] if "." in path else ""
    return parent == "" or parent in shapes


def load_schemas(directory: Path = SCHEMA_DIR) -> dict[str, dict[str, Any]]:
    return {p.name: json.loads(p.read_text(encoding="utf-8")) for p in sorted(directory.glob("*.json"))}


def baseline_of(schemas: dict[str, dict[str, Any]]) -> dict[str, Any]:
    return {name: {path: s.to_json() for path, s in sorted(shape(schema).items())}
            for name, schema in sorted(schemas.items())}


def load_baseline(path: Path = BASELINE_FILE) -> dict[str, dict[str, FieldShape]]:
    raw = json.loads(path.read_text(encoding="utf-8"))
    return {name: {p: FieldShape.from_json(s) for p, s in shapes.items()} for name, shapes in raw["schemas"].items()}


def _versions(names: list[str]) -> dict[str, list[int]]:
    versions: dict[str, list[int]] = {}
    for name in names:
        match = FILE_PATTERN.match(name)
        if match:
            versions.setdefault(match["type"], []).append(int(match["version"]))
    return versions


def compare(baseline: dict[str, dict[str, FieldShape]], current: dict[str, dict[str, Any]]) -> list[str]:
    """Every breaking change of ``current`` (file name -> schema) against ``baseline``."""
    problems = []
    current_versions = _versions(list(current))
    for name, old in sorted(baseline.items()):
        if name in current:
            problems += [f"{name}: {p} (publish it as a new version instead)"
                         for p in breaking_changes(old, shape(current[name]))]
            continue
        match = FILE_PATTERN.match(name)
        newer = match and any(v > int(match["version"]) for v in current_versions.get(match["type"], []))
        if not newer:
            problems.append(f"{name}: schema removed without a newer version")
    return problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m scripts.ops.contract_compat")
    parser.add_argument("--update", action="store_true", help="write the current schemas' shapes as the baseline")
    args = parser.parse_args(argv)
    current = load_schemas()
    if args.update:
        BASELINE_FILE.write_text(json.dumps({
            "about": "Shapes of the published event schemas; tests/ops/test_contract_compat.py compares schemas/ "
                     "with them. Update with `python -m scripts.ops.contract_compat --update` only for a "
                     "compatible change or a new schema version.",
            "schemas": baseline_of(current),
        }, ensure_ascii=False, indent=1, sort_keys=False) + "\n", encoding="utf-8")
        print(f"wrote {BASELINE_FILE.relative_to(ROOT)} ({len(current)} schemas)")
        return 0
    problems = compare(load_baseline(), current)
    for problem in problems:
        print(problem, file=sys.stderr)
    print(f"{len(current)} schemas checked, {len(problems)} breaking changes")
    return 1 if problems else 0


if __name__ == "__main__":
    raise SystemExit(main())
