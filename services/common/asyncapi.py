"""Generate the platform's published contract, ``docs/asyncapi.yaml`` (AsyncAPI 3.0), from the code.

Channels come from :data:`services.common.topics.TOPIC_SPECS` (default names of
:class:`~services.common.config.TopicSettings`, so the document does not depend on the environment);
messages from :data:`services.common.events.EVENT_SPECS`, each payload a ``$ref`` to its JSON Schema in
``schemas/`` (``make schemas``).

``python -m services.common.asyncapi`` writes the file; ``--check`` exits non-zero when it is stale.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import yaml

from services.common.config import TopicSettings
from services.common.events import EVENT_SPECS, SPEC_VERSION, EventSpec, short_type
from services.common.schemas import schema_file_name
from services.common.topics import TOPIC_SPECS, TopicSpec

ROOT = Path(__file__).resolve().parents[2]
ASYNCAPI_FILE = ROOT / "docs" / "asyncapi.yaml"
SCHEMA_REF_PREFIX = "../schemas/"  # relative to docs/

WRITERS = {
    "case_events": "intake",
    "routing_decisions": "router",
    "alerts": "notifier",
    "case_contacts": "intake",
    "staff_contacts": "intake",
    "notifications": "notifier",
    "dead_letter": "any consumer",
}
READERS = {
    "case_events": "router, notifier, stats and other city systems",
    "routing_decisions": "intake",
    "alerts": "other city systems, supervisors' tools",
    "case_contacts": "notifier",
    "staff_contacts": "notifier",
    "notifications": "SMS, WeChat and e-mail gateways",
    "dead_letter": "operators",
}


def default_topic_name(key: str) -> str:
    """The default of the setting, not the environment's value: the document is the same everywhere."""
    return TopicSettings.model_fields[key].default


def channel_id(key: str) -> str:
    head, *rest = key.split("_")
    return head + "".join(part.capitalize() for part in rest)


def message_id(spec: EventSpec) -> str:
    words = short_type(spec.type).replace(".", "_").split("_")
    return words[0] + "".join(word.capitalize() for word in words[1:])


def _message(spec: EventSpec) -> dict[str, Any]:
    doc = (spec.model.__doc__ or spec.model.__name__).strip().splitlines()[0]
    return {
        "name": spec.type,
        "title": short_type(spec.type),
        "summary": doc,
        "contentType": "application/cloudevents+json",
        "payload": {"$ref": SCHEMA_REF_PREFIX + schema_file_name(spec.type, spec.schema_version)},
        "bindings": {
            "kafka": {
                "key": {"type": "string", "description": f"the event's subject: data.{spec.subject_field}"},
                "bindingVersion": "0.5.0",
            }
        },
        "x-cloudevents": {
            "specversion": SPEC_VERSION,
            "type": spec.type,
            "dataschema": spec.dataschema,
            "subject": f"data.{spec.subject_field}",
        },
    }


def _channel(topic: TopicSpec, messages: list[EventSpec]) -> dict[str, Any]:
    config: dict[str, Any] = {}
    if "cleanup.policy" in topic.config:
        config["cleanup.policy"] = topic.config["cleanup.policy"].split(",")
    if "retention.ms" in topic.config:
        config["retention.ms"] = int(topic.config["retention.ms"])
    return {
        "address": default_topic_name(topic.key),
        "title": topic.key,
        "description": (
            f"{topic.description}. Audience: {topic.audience}. Written by {WRITERS.get(topic.key, '?')}; "
            f"read by {READERS.get(topic.key, '?')}. The name is a setting: WENZHENG_TOPIC_{topic.key.upper()}."
        ),
        "messages": {message_id(spec): {"$ref": f"#/components/messages/{message_id(spec)}"} for spec in messages},
        "bindings": {"kafka": {"topic": default_topic_name(topic.key), "topicConfiguration": config,
                               "bindingVersion": "0.5.0"}},
        "x-audience": topic.audience,
    }


def build_document() -> dict[str, Any]:
    by_topic: dict[str, list[EventSpec]] = {t.key: [] for t in TOPIC_SPECS}
    for spec in EVENT_SPECS.values():
        by_topic.setdefault(spec.topic, []).append(spec)
    channels = {channel_id(t.key): _channel(t, by_topic[t.key]) for t in TOPIC_SPECS}
    operations = {
        f"send{channel_id(t.key)[0].upper()}{channel_id(t.key)[1:]}": {
            "action": "send",
            "summary": f"{WRITERS.get(t.key, '?')} publishes on {default_topic_name(t.key)}",
            "channel": {"$ref": f"#/channels/{channel_id(t.key)}"},
            "messages": [
                {"$ref": f"#/channels/{channel_id(t.key)}/messages/{message_id(spec)}"} for spec in by_topic[t.key]
            ],
        }
        for t in TOPIC_SPECS
    }
    return {
        "asyncapi": "3.0.0",
        "info": {
            "title": "Wenzheng (问政) event topics",
            "version": "1.0.0",
            "description": (
                "Every message is a CloudEvents 1.0 event in structured JSON mode, keyed by its subject "
                "(a case id), so all events of one case are in one partition and in order. `sequence` is the "
                "case version after the event: consumers use event id + sequence for idempotence. Delivery is "
                "at-least-once. Public topics never carry personal data. Payload schemas are JSON Schema "
                "2020-12 files in schemas/. Generated by `python -m services.common.asyncapi`; do not edit."
            ),
            "license": {"name": "Apache-2.0"},
        },
        "defaultContentType": "application/cloudevents+json",
        "servers": {
            "production": {"host": "kafka:9092", "protocol": "kafka", "description": "docker compose / cluster"},
            "local": {"host": "127.0.0.1:9092", "protocol": "kafka", "description": "`make run`"},
        },
        "channels": channels,
        "operations": operations,
        "components": {
            "messages": {message_id(spec): _message(spec) for spec in EVENT_SPECS.values()},
        },
    }


def render() -> str:
    header = "# Generated by `python -m services.common.asyncapi` from services/common; do not edit by hand.\n"
    return header + yaml.safe_dump(build_document(), allow_unicode=True, sort_keys=False, width=110)


def is_stale(path: Path = ASYNCAPI_FILE) -> bool:
    return not path.exists() or path.read_text(encoding="utf-8") != render()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m services.common.asyncapi")
    parser.add_argument("--check", action="store_true", help="fail if docs/asyncapi.yaml is not up to date")
    parser.add_argument("--output", type=Path, default=ASYNCAPI_FILE)
    args = parser.parse_args(argv)
    if args.check:
        if is_stale(args.output):
            print(f"stale or missing: {args.output} (run `python -m services.common.asyncapi`)")
            return 1
        return 0
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(render(), encoding="utf-8")
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
