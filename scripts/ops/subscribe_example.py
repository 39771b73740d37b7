"""How another city system follows Wenzheng's public case events: a self-contained subscriber.

It needs only ``aiokafka`` and ``jsonschema`` (``pip install aiokafka jsonschema``) and a copy of the
published JSON Schemas (the ``schemas/`` folder). It imports nothing from the Wenzheng code base.

    python scripts/ops/subscribe_example.py --bootstrap 127.0.0.1:9092 --group my-city-system

prints one line per event, e.g.

    2026-09-28T02:00:00Z case.assigned WZ2609-ABCD-EFGH v2 department_id=zhanggong_gov category=urban_management

What a subscriber must know:
- every message is a CloudEvents 1.0 event in structured JSON; ``type`` picks the schema, ``dataschema``
  names its version, the message key (= ``subject``) is the case id, so one case's events arrive in order;
- delivery is at-least-once: skip an event whose ``id`` you have seen, or whose ``sequence`` (the case
  version) is not newer than the last one you applied for that case;
- be a tolerant reader: a new *optional* field is a compatible change, so by default this example ignores
  properties its copy of the schemas does not know (``--strict`` rejects them);
- offsets are committed after the events are handled: a crash replays, it never skips.
"""

from __future__ import annotations

import argparse
import asyncio
import copy
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jsonschema
from aiokafka import AIOKafkaConsumer

DEFAULT_SCHEMAS = Path(__file__).resolve().parents[2] / "schemas"
SHOWN_FIELDS = ("department_id", "category", "status", "rating", "deadline", "on_time", "handling_round", "kind")


def _tolerant(schema: Any) -> Any:
    """The same schema without ``additionalProperties: false``: unknown (newer) fields are ignored."""
    if isinstance(schema, dict):
        return {k: _tolerant(v) for k, v in schema.items() if not (k == "additionalProperties" and v is False)}
    if isinstance(schema, list):
        return [_tolerant(v) for v in schema]
    return schema


class EventValidator:
    """Validates a whole CloudEvent against the JSON Schema its ``type`` names."""

    def __init__(self, schema_dir: Path, *, strict: bool = False) -> None:
        self.validators: dict[str, jsonschema.protocols.Validator] = {}
        for path in sorted(schema_dir.glob("*.json")):
            schema = json.loads(path.read_text(encoding="utf-8"))
            schema = copy.deepcopy(schema) if strict else _tolerant(schema)
            validator_class = jsonschema.validators.validator_for(schema)
            # a newer version of a type's schema wins (files are <type>.v<N>.json)
            event_type = schema["properties"]["type"]["const"]
            self.validators[event_type] = validator_class(schema, format_checker=validator_class.FORMAT_CHECKER)
        if not self.validators:
            raise SystemExit(f"no JSON Schemas in {schema_dir}")

    def validate(self, raw: bytes) -> dict[str, Any]:
        """The event as a dict; raises ``ValueError`` saying what is wrong."""
        try:
            event = json.loads(raw)
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ValueError(f"not JSON: {exc}") from exc
        if not isinstance(event, dict) or not isinstance(event.get("type"), str):
            raise ValueError("not a CloudEvent: no type")
        validator = self.validators.get(event["type"])
        if validator is None:
            raise ValueError(f"unknown event type {event['type']!r} (update your copy of the schemas)")
        error = jsonschema.exceptions.best_match(validator.iter_errors(event))
        if error is not None:
            where = ".".join(str(p) for p in error.absolute_path) or "(event)"
            raise ValueError(f"{where}: {error.message}")
        return event


def describe(event: dict[str, Any]) -> str:
    """One line per event: time, type, tracking number, case version and a few telling fields."""
    data = event.get("data", {})
    short_type = event["type"].removeprefix("gov.wenzheng.")
    details = " ".join(f"{name}={data[name]}" for name in SHOWN_FIELDS if data.get(name) is not None)
    tracking = data.get("tracking_number", event.get("subject", "?"))
    return f"{event['time']} {short_type} {tracking} v{event.get('sequence', '?')} {details}".rstrip()


async def subscribe(bootstrap: str, topic: str, group: str, validator: EventValidator, *,
                    from_beginning: bool = True, max_events: int | None = None, idle_seconds: float | None = None,
                    emit: Callable[[str], None] = print) -> int:
    """Consume until ``max_events`` messages (or ``idle_seconds`` without any); returns the count handled."""
    consumer = AIOKafkaConsumer(
        topic, bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False,
        auto_offset_reset="earliest" if from_beginning else "latest",
    )
    last_version: dict[str, int] = {}  # case id -> last sequence applied (keep it in your own database)
    handled = 0
    await consumer.start()
    try:
        while max_events is None or handled < max_events:
            batch = await consumer.getmany(timeout_ms=1000)
            if not batch:
                if idle_seconds is not None:
                    idle_seconds -= 1
                    if idle_seconds <= 0:
                        break
                continue
            for partition, messages in batch.items():
                for message in messages:
                    handled += 1
                    try:
                        event = validator.validate(message.value)
                    except ValueError as exc:
                        emit(f"INVALID partition={partition.partition} offset={message.offset}: {exc}")
                        continue
                    case_id, sequence = event["subject"], event.get("sequence")
                    if sequence is not None and sequence <= last_version.get(case_id, 0):
                        emit(f"duplicate {event['id']} (case version {sequence} already applied)")
                        continue
                    if sequence is not None:
                        last_version[case_id] = sequence
                    emit(describe(event))
            await consumer.commit()
    finally:
        await consumer.stop()
    return handled


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Follow Wenzheng's public case events")
    parser.add_argument("--bootstrap", default="127.0.0.1:9092")
    parser.add_argument("--topic", default="wenzheng.case-events.v1")
    parser.add_argument("--group", default="city-system-example", help="your consumer group: resumes where it left")
    parser.add_argument("--schemas", type=Path, default=DEFAULT_SCHEMAS, help="folder with the *.json schemas")
    parser.add_argument("--latest", action="store_true", help="a new group starts at the end, not the beginning")
    parser.add_argument("--strict", action="store_true", help="reject fields the schemas do not know")
    parser.add_argument("--max-events", type=int)
    args = parser.parse_args(argv)
    validator = EventValidator(args.schemas, strict=args.strict)
    try:
        asyncio.run(subscribe(args.bootstrap, args.topic, args.group, validator,
                              from_beginning=not args.latest, max_events=args.max_events))
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
