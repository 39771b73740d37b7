"""Generate the JSON Schema of every event type into ``schemas/`` (``make schemas``).

``python -m services.common.schemas --check`` exits non-zero when a committed schema is stale;
the test suite runs the same comparison.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from services.common.events import EVENT_SPECS, json_schema_for, short_type

SCHEMA_DIR = Path(__file__).resolve().parents[2] / "schemas"


def schema_file_name(event_type: str, version: int) -> str:
    return f"{short_type(event_type)}.v{version}.json"


def render_all() -> dict[str, str]:
    """File name -> exact file content, for every registered event type."""
    return {
        schema_file_name(spec.type, spec.schema_version): json.dumps(
            json_schema_for(spec), ensure_ascii=False, indent=2, sort_keys=True
        )
        + "\n"
        for spec in EVENT_SPECS.values()
    }


def stale_files(directory: Path = SCHEMA_DIR) -> list[str]:
    wanted = render_all()
    problems = [
        name for name, text in wanted.items()
        if not (directory / name).exists() or (directory / name).read_text(encoding="utf-8") != text
    ]
    extra = [p.name for p in directory.glob("*.json") if p.name not in wanted]
    return sorted(problems + extra)


def write_all(directory: Path = SCHEMA_DIR) -> list[str]:
    directory.mkdir(parents=True, exist_ok=True)
    wanted = render_all()
    for stray in directory.glob("*.json"):
        if stray.name not in wanted:
            stray.unlink()
    for name, text in wanted.items():
        (directory / name).write_text(text, encoding="utf-8")
    return sorted(wanted)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m services.common.schemas")
    parser.add_argument("--check", action="store_true", help="fail if schemas/ is not up to date")
    args = parser.parse_args(argv)
    if args.check:
        stale = stale_files()
        for name in stale:
            print(f"stale or missing schema: schemas/{name} (run `make schemas`)")
        return 1 if stale else 0
    written = write_all()
    print(f"wrote {len(written)} schemas into {SCHEMA_DIR}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
