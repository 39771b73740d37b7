"""The platform's topics: their settings-given names and how they are created.

``python -m services.common.topics create`` creates any that are missing (used by ``make infra-up``);
production creates them with the same specs (see docker-compose.yml's ``kafka-init``).
"""

from __future__ import annotations

import argparse
import asyncio
from dataclasses import dataclass, field

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError

from services.common.config import TopicSettings, common_settings, topics

DAY_MS = 24 * 3600 * 1000


@dataclass(frozen=True)
class TopicSpec:
    key: str
    audience: str
    description: str
    config: dict[str, str] = field(default_factory=dict)


TOPIC_SPECS: tuple[TopicSpec, ...] = (
    TopicSpec("case_events", "public", "every case lifecycle event, no personal data",
              {"retention.ms": "-1", "cleanup.policy": "delete"}),
    TopicSpec("routing_decisions", "internal", "the router's decisions, applied by intake",
              {"retention.ms": str(30 * DAY_MS)}),
    TopicSpec("alerts", "public", "reminders, overdue alerts, escalations, hotspots",
              {"retention.ms": str(400 * DAY_MS)}),
    TopicSpec("case_contacts", "private", "case id -> how to reach the poster (compacted)",
              {"cleanup.policy": "compact", "min.compaction.lag.ms": "60000"}),
    TopicSpec("staff_contacts", "private", "staff id -> unit, roles, phone/e-mail, channels, quiet hours (compacted)",
              {"cleanup.policy": "compact", "min.compaction.lag.ms": "60000"}),
    TopicSpec("notifications", "private", "outbound messages to citizens for the gateways",
              {"retention.ms": str(14 * DAY_MS)}),
    TopicSpec("dead_letter", "operators", "messages a consumer could not process, with the reason",
              {"retention.ms": str(90 * DAY_MS)}),
)


def topic_name(spec: TopicSpec, names: TopicSettings | None = None) -> str:
    return getattr(names or topics(), spec.key)


async def create_topics(bootstrap: str, partitions: int, names: TopicSettings | None = None) -> list[str]:
    """Create the platform's topics that do not exist yet; returns the names created."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=30000)
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        wanted = [
            NewTopic(
                name=topic_name(spec, names),
                num_partitions=partitions,
                replication_factor=1,
                topic_configs=spec.config,
            )
            for spec in TOPIC_SPECS
            if topic_name(spec, names) not in existing
        ]
        if wanted:
            try:
                await admin.create_topics(wanted)
            except TopicAlreadyExistsError:
                pass  # a concurrent creator won; the topic is there, which is all we want
        return [t.name for t in wanted]
    finally:
        await admin.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m services.common.topics")
    sub = parser.add_subparsers(dest="command", required=True)
    create = sub.add_parser("create", help="create the platform's topics that are missing")
    create.add_argument("--bootstrap", default=common_settings().kafka_bootstrap)
    create.add_argument("--partitions", type=int, default=common_settings().topic_partitions)
    args = parser.parse_args(argv)
    created = asyncio.run(create_topics(args.bootstrap, args.partitions))
    print(f"[infra] topics created: {', '.join(created)}" if created else "[infra] topics: all present")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
