"""The router's faust worker (wiring only; the use cases are in ``services.router.handlers``).

- ``route_cases``: case events and the private contacts (co-partitioned by case id) → the ``case-routing``
  table, decisions for re-routings, poster messages, corrections.
- ``route_posters``: the poster messages (an internal topic keyed by the poster's key) → the
  ``poster-posts`` table and the decisions of first routings (duplicates linked).
- ``store_corrections``: the corrections (an internal compacted topic) → MongoDB, one bulk write per batch.

Both tables pick a row's changelog partition from its key (:class:`KeyPartitionedTable`, through faust's
public ``partition_for_key``, instead of pointing faust's private "current event" at each event of a batch):
the partition of the key's messages on the topic the table is fed from (the same raw key bytes, the same
default murmur2 partitioner as intake's producer, the same partition count, checked when partitions are
assigned), so a restarted or rebalanced worker restores exactly the rows of its partitions
(tests/router/integration checks it on the real broker).

At-least-once: a crash may replay messages since the last commit; the per-case ``last_version`` skips what was
already applied, decisions carry a deterministic id (intake drops any that slip through twice), a replayed
post replaces itself in its poster's row and corrections are keyed by event id. Malformed events go to the
dead-letter topic and the worker goes on. Messages are taken in micro-batches (``stream.take_events``: up to
``batch_size``, or what arrived within ``batch_wait_seconds``) and acknowledged after the whole batch.
"""

from __future__ import annotations

import os
import re
import socket
import time
from datetime import timedelta

import faust
from aiokafka.partitioner import DefaultPartitioner

from services.common.config import CommonSettings, TopicSettings, common_settings, topics
from services.common.errors import error_body
from services.common.events import Contract, EventValidationError, dead_letter_for, make_event, parse_event
from services.common.kafka import PRODUCER_LINGER_MS, PRODUCER_MAX_BATCH_BYTES
from services.common.logging import get_logger
from services.common.metrics import METRICS_CONTENT_TYPE, render_metrics
from services.common.mongo import new_client, ping
from services.router.config import RouterSettings
from services.router.domain import ContactErased, Correction, PosterMessage, RoutingPolicy
from services.router.engine import load_engine
from services.router.handlers import (
    RouterWorker,
    flush_quality_counts,
    record_corrections,
    run_scheduled_retrain,
)
from services.router.live import LiveEngine
from services.router.metrics import (
    BATCH_EVENTS,
    BATCH_SECONDS,
    DEAD_LETTERS,
    HEALTH,
    TABLE_RESTORE_SECONDS,
    TABLE_ROWS,
)
from services.router.quality import TRIAGE, quality_report
from services.router.registry import ModelRegistry
from services.router.store import RouterStore

log = get_logger(__name__)
SOURCE = "/wenzheng/router"
_MONTH = re.compile(r"\d{4}-(0[1-9]|1[0-2])")


class KeyPartitionedTable(faust.Table):
    """A table whose row for a key goes to the changelog partition the default partitioner (murmur2, as in
    intake's producer and faust's) picks for that key among ``partitions``: the partition of the key's messages
    on the topic that feeds the table, which has as many. Computed here rather than asked of the producer, as
    faust's ``use_partitioner`` alone does: a producer that never wrote to a changelog may have no metadata for
    it yet, and then faust's eager partitioning fails the write."""

    def partition_for_key(self, key: bytes) -> int:
        return DefaultPartitioner()(key, list(range(self.partitions)), [])


def internal_topics(settings: RouterSettings) -> dict[str, str]:
    """The router's own topics (named after the app, like faust's changelogs): private, never for other
    services."""
    return {"posters": f"{settings.app_id}-poster-posts", "corrections": f"{settings.app_id}-corrections"}


def create_app(settings: RouterSettings | None = None, names: TopicSettings | None = None,
               common: CommonSettings | None = None) -> faust.App:
    settings = settings or RouterSettings()
    names = names or topics()
    common = common or common_settings()
    (settings.data_dir / settings.app_id).mkdir(parents=True, exist_ok=True)
    app = faust.App(
        settings.app_id,
        broker=[f"kafka://{host}" for host in common.kafka_bootstrap.split(",")],
        store="memory://",
        topic_partitions=settings.partitions,
        topic_replication_factor=1,
        web_enabled=True,
        web_port=settings.port,
        web_host="0.0.0.0",
        producer_acks=-1,
        # faust sends each message in a request of its own unless told to wait (its default linger is 0):
        # the router's changelog, repartition and decision messages of one poll then went out one by one
        producer_linger=PRODUCER_LINGER_MS / 1000,
        producer_max_batch_size=PRODUCER_MAX_BATCH_BYTES,
        consumer_auto_offset_reset="earliest",
        broker_commit_interval=1.0,
        table_cleanup_interval=600,
        datadir=str(settings.data_dir / settings.app_id),
    )
    raw = {"key_serializer": "raw", "value_serializer": "raw"}
    # the private contacts (keyed and partitioned like the case events) carry the poster's key for duplicates
    case_events = app.topic(names.case_events, names.case_contacts, **raw)
    topic_keys = {names.case_events: "case_events", names.case_contacts: "case_contacts"}
    decisions = app.topic(names.routing_decisions, **raw)
    dead_letters = app.topic(names.dead_letter, **raw)
    own = internal_topics(settings)
    # a week, however the broker is set: long enough for a router that was down, and poster keys in transit
    # do not outlive the duplicate window for long
    poster_messages = app.topic(own["posters"], internal=True, partitions=settings.partitions,
                                retention=timedelta(days=7), **raw)
    corrections = app.topic(own["corrections"], internal=True, partitions=settings.partitions, compacting=True,
                            **raw)
    # bytes keys (the UTF-8 id) are written raw; faust writes any other key as JSON ('"id"'), and the partition
    # must be that of the same bytes as the key of the messages the table is fed from
    tables = {"default": None, "partitions": settings.partitions, "use_partitioner": True, "key_type": bytes}
    cases = app.tables.add(KeyPartitionedTable(app, name="case-routing", **tables))
    posters = app.tables.add(KeyPartitionedTable(app, name="poster-posts", **tables))
    worker_state = {"started": False, "partitions_mismatch": False}
    assigned_at = {"monotonic": time.monotonic()}

    @app.on_partitions_assigned.connect
    async def partitions_assigned(sender, assigned, **kwargs) -> None:
        assigned_at["monotonic"] = time.monotonic()
        mismatch = False
        for topic in (names.case_events, names.case_contacts, own["posters"]):
            found = app.consumer.topic_partitions(topic)
            # 0 or None: a topic faust has just created is not in the metadata yet, which is no mismatch
            if found and found != settings.partitions:
                # rows would go to other partitions than their keys' messages: refuse to be ready
                mismatch = True
                log.error("router_partitions_mismatch", topic=topic, partitions=found, expected=settings.partitions)
        worker_state["partitions_mismatch"] = mismatch

    def report_restore(table) -> None:
        async def restored() -> None:
            TABLE_RESTORE_SECONDS.labels(table.name).set(time.monotonic() - assigned_at["monotonic"])
            TABLE_ROWS.labels(table.name).set(len(table))
        table.on_recover(restored)

    report_restore(cases)
    report_restore(posters)

    mongo = new_client(common.mongo_url, service="router")
    store = RouterStore(mongo[settings.database])
    registry = ModelRegistry(mongo[settings.database])
    policy = RoutingPolicy(triage_confidence=settings.triage_confidence, max_returns=settings.max_returns,
                           duplicate_similarity=settings.duplicate_similarity)
    shipped = load_engine(settings.model_dir)
    engine = LiveEngine(shipped, shipped.assigner, registry)
    worker = RouterWorker(engine, policy)
    owner = f"{socket.gethostname()}-{os.getpid()}-{int(time.time())}"

    async def send(topic: faust.TopicT, payload: Contract) -> None:
        event = make_event(payload, source=SOURCE)
        await topic.send(key=event.key, value=event.to_json())

    async def dead_letter(message, exc: Exception, *, private: bool = False) -> None:
        """``private``: the message's key and bytes hold a poster's key, which operators must not see."""
        letter = dead_letter_for(topic=message.topic, value=None if private else message.value,
                                 key=None if private else message.key,
                                 partition=message.partition, offset=message.offset, reason=str(exc),
                                 error_type=type(exc).__name__, service="router")
        await send(dead_letters, letter)
        DEAD_LETTERS.inc()
        log.warning("dead_lettered", offset=message.offset, reason=str(exc)[:300])

    @app.task
    async def start_up() -> None:
        await store.ensure_indexes()
        try:
            await engine.refresh()
        except Exception as exc:  # the registry unreachable: route with the shipped model, retry on the timer
            log.error("router_registry_unreadable", error=str(exc)[:300])
        await store.record_model(engine.model_version)
        worker_state["started"] = True
        log.info("router_ready", model_version=engine.model_version)

    @app.timer(settings.model_poll_seconds)
    async def follow_registry() -> None:
        if not worker_state["started"]:
            return
        try:
            if await engine.refresh():
                await store.record_model(engine.model_version)
        except Exception as exc:  # keep routing with the model loaded; the next poll tries again
            log.error("router_registry_unreadable", error=str(exc)[:300])

    @app.timer(settings.quality_flush_seconds)
    async def flush_quality() -> None:
        await flush_quality_counts(worker.quality, store, owner)

    if settings.retrain_every_hours > 0:
        @app.timer(min(settings.retrain_every_hours * 3600, 600))
        async def scheduled_retrain() -> None:
            await run_scheduled_retrain(store, settings.retrain_every_hours)

    @app.agent(case_events)
    async def route_cases(stream: faust.StreamT) -> None:
        async for records in stream.take_events(settings.batch_size, within=settings.batch_wait_seconds):
            started = time.perf_counter()
            parsed = []
            for record in records:
                message = record.message
                if message.value is None and message.topic == names.case_contacts:
                    if message.key:  # a contact erased after its retention period
                        parsed.append(ContactErased(message.key.decode()))
                    continue
                try:
                    parsed.append(parse_event(message.value or b"",
                                              expected_topic=topic_keys.get(message.topic, "case_events")))
                except EventValidationError as exc:
                    await dead_letter(message, exc)
            rows = {}
            steps = worker.handle_cases(parsed, lambda case_id: cases.get(case_id.encode()))
            for event, step in zip(parsed, steps, strict=True):
                if step.decision is not None:
                    await send(decisions, step.decision)
                if step.poster is not None:
                    await poster_messages.send(key=step.poster.poster_ref.encode(), value=step.poster.to_json())
                if step.correction is not None:
                    await corrections.send(key=step.correction.event_id.encode(), value=step.correction.to_json())
                if step.state is not None:
                    rows[event.subject] = step.state
                HEALTH.applied()
            for case_id, row in rows.items():  # the batch's last value of each row
                cases[case_id.encode()] = row
            BATCH_SECONDS.observe(time.perf_counter() - started)
            BATCH_EVENTS.observe(len(records))

    @app.agent(poster_messages)
    async def route_posters(stream: faust.StreamT) -> None:
        async for records in stream.take_events(settings.batch_size, within=settings.batch_wait_seconds):
            messages = []
            for record in records:
                try:
                    messages.append(PosterMessage.from_json(record.message.value or b""))
                except (ValueError, KeyError, TypeError) as exc:
                    await dead_letter(record.message, exc, private=True)
            batch = worker.handle_posters(messages, lambda poster: posters.get(poster.encode()))
            for decision in batch.decisions:
                await send(decisions, decision)
            for poster, row in batch.posters.items():
                if row is None:
                    posters.pop(poster.encode(), None)
                else:
                    posters[poster.encode()] = row

    @app.agent(corrections)
    async def store_corrections(stream: faust.StreamT) -> None:
        async for records in stream.take_events(settings.corrections_batch_size,
                                                within=settings.corrections_flush_seconds):
            batch = []
            for record in records:
                try:
                    batch.append(Correction.from_json(record.message.value or b""))
                except (ValueError, KeyError, TypeError) as exc:
                    await dead_letter(record.message, exc)
            await record_corrections(store, batch)

    @app.page("/healthz")
    async def healthz(web, request):
        return web.json({"status": "ok"})

    @app.page("/readyz")
    async def readyz(web, request):
        """Ready once the model is loaded and the tables are restored. MongoDB is reported but not required:
        routing does not use it (corrections and quality counts wait for it)."""
        mongo_ok = await ping(mongo)
        restored = app.tables.recovery.completed.is_set() and not app.in_recovery
        ready = worker_state["started"] and restored and not app.rebalancing and not worker_state["partitions_mismatch"]
        body = {"status": "ready" if ready else "starting", "mongodb": mongo_ok, "model": worker_state["started"],
                "rebalancing": bool(app.rebalancing), "tables_restored": restored,
                "partitions_mismatch": worker_state["partitions_mismatch"]}
        return web.json(body, status=200 if ready else 503)

    @app.page("/v1/router/shadow")
    async def shadow(web, request):
        """For supervisors: how the shadow model's choices compare with the current model's (this worker)."""
        return web.json({**engine.shadow_report(), "worker": owner})

    @app.page("/v1/router/quality")
    async def quality(web, request):
        """Per month, category and unit: the share of routing decisions later corrected (all workers)."""
        months = request.query.get("months")
        wanted = None
        if months:
            wanted = {m.strip() for m in months.split(",") if m.strip()}
            bad = sorted(m for m in wanted if not _MONTH.fullmatch(m))
            if bad:
                message = f"月份应写作 YYYY-MM（如 2026-09），不是 {bad[0]}"
                return web.json(error_body("invalid_month", message, "months"), status=422)
        docs = await store.quality_documents(wanted)
        assigner = shipped.assigner
        return web.json(quality_report(
            docs, lambda c: assigner.categories[c].name if c in assigner.categories else c,
            lambda u: "人工分拣" if u == TRIAGE else (assigner.units[u].name if u in assigner.units else u)))

    @app.page("/metrics")
    async def metrics(web, request):
        return web.bytes(render_metrics(), content_type=METRICS_CONTENT_TYPE.split(";")[0])

    return app
