"""The router's faust worker: case events in, routing decisions out.

At-least-once: a crash may replay events since the last commit; the per-case ``last_version`` in the
changelog-backed table skips what was already handled, and decisions carry a deterministic id, so intake
drops any that slip through twice. Malformed events go to the dead-letter topic and the worker goes on.
"""

from __future__ import annotations

import time
from typing import Any

import faust
from prometheus_client import Counter, Histogram

from services.common.config import CommonSettings, TopicSettings, common_settings, topics
from services.common.events import (
    CaseAssigned,
    CaseClosed,
    CaseLinked,
    CaseReplied,
    CaseReturned,
    CaseSubmitted,
    Contract,
    Event,
    EventValidationError,
    RoutingDecision,
    dead_letter_for,
    make_event,
    parse_event,
)
from services.common.logging import get_logger
from services.common.metrics import METRICS_CONTENT_TYPE, ConsumerHealth, render_metrics
from services.common.mongo import new_client, ping
from services.common.workdays import default_calendar
from services.router.config import RouterSettings
from services.router.engine import load_engine
from services.router.policies import CaseRouting, RoutingEngine, RoutingPolicy, route
from services.router.store import RouterStore

log = get_logger(__name__)
SOURCE = "/wenzheng/router"

DECISIONS = Counter("wenzheng_router_decisions_total", "Routing decisions", ["category", "outcome"])
CONFIDENCE = Histogram("wenzheng_router_confidence", "Confidence of the chosen category",
                       buckets=(0.1, 0.2, 0.3, 0.4, 0.45, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 1.0))
CLASSIFY_SECONDS = Histogram("wenzheng_router_classification_seconds", "Time to classify and route one case",
                             buckets=(0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25))
EVENTS = Counter("wenzheng_router_events_total", "Case events read", ["type", "outcome"])
DEAD_LETTERS = Counter("wenzheng_router_dead_letters_total", "Messages sent to the dead-letter topic")
CORRECTIONS = Counter("wenzheng_router_corrections_total", "Labelled corrections stored for retraining", ["kind"])
HEALTH = ConsumerHealth("router")


class RouterWorker:
    """The use cases behind the agent, independent of faust so they can be tested directly."""

    def __init__(self, engine: RoutingEngine, store: RouterStore, policy: RoutingPolicy) -> None:
        self.engine = engine
        self.store = store
        self.policy = policy
        self.calendar = default_calendar()

    async def handle(self, event: Event, state: dict[str, Any] | None) -> tuple[
            dict[str, Any] | None, RoutingDecision | None]:
        """Returns the case's new table row (None: unchanged) and a decision to publish, if any."""
        data = event.data
        case = CaseRouting.from_dict(state) if state else None
        version = getattr(data, "version", 0)
        if case is not None and version <= case.last_version:
            EVENTS.labels(event.short_type, "duplicate").inc()
            return None, None
        EVENTS.labels(event.short_type, "applied").inc()

        if isinstance(data, CaseSubmitted):
            case = CaseRouting(case_id=data.case_id, text=f"{data.title} {data.body}", location=data.location,
                               poster_ref=data.poster_ref, submitted_at=data.occurred_at, last_version=version)
            recent = []
            if data.poster_ref:
                await self.store.remember_post(case)
                recent = await self.store.recent_posts(data.poster_ref, data.occurred_at,
                                                       self.policy.duplicate_window)
            decision = self._route(case, event, recent)
            return case.to_dict(), decision
        if case is None:
            # an event for a case whose submission this worker never saw (e.g. topic retention): nothing to do
            return None, None
        case.last_version = version
        if isinstance(data, CaseAssigned):
            case.category = data.category
            if data.department_id not in case.tried:
                case.tried.append(data.department_id)
            if data.reassigned:
                await self.store.record_correction(event.id, case, label=data.category,
                                                   department_id=data.department_id, kind="reassigned")
                CORRECTIONS.labels("reassigned").inc()
            return case.to_dict(), None
        if isinstance(data, CaseReturned):
            case.returns = data.return_count
            case.routing_round += 1
            if data.department_id not in case.tried:
                case.tried.append(data.department_id)
            await self.store.record_correction(event.id, case, label=case.category,
                                               department_id=data.department_id, kind="returned")
            CORRECTIONS.labels("returned").inc()
            return case.to_dict(), self._route(case, event, None)
        if isinstance(data, CaseReplied | CaseClosed | CaseLinked):
            await self.store.mark_closed(case.case_id)
        return case.to_dict(), None

    def _route(self, case: CaseRouting, event: Event, recent) -> RoutingDecision:
        started = time.perf_counter()
        decision = route(case, self.engine, self.calendar, self.policy, source_event_id=event.id,
                         source_version=event.data.version, occurred_at=event.data.occurred_at, recent=recent)
        CLASSIFY_SECONDS.observe(time.perf_counter() - started)
        DECISIONS.labels(decision.category or "none", decision.outcome.value).inc()
        CONFIDENCE.observe(decision.confidence)
        return decision


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
        consumer_auto_offset_reset="earliest",
        broker_commit_interval=1.0,
        table_cleanup_interval=600,
        datadir=str(settings.data_dir / settings.app_id),
    )
    raw = {"key_serializer": "raw", "value_serializer": "raw"}
    case_events = app.topic(names.case_events, **raw)
    decisions = app.topic(names.routing_decisions, **raw)
    dead_letters = app.topic(names.dead_letter, **raw)
    table = app.Table("case-routing", default=None, partitions=settings.partitions)
    mongo = new_client(common.mongo_url)
    store = RouterStore(mongo[settings.database])
    policy = RoutingPolicy(triage_confidence=settings.triage_confidence, max_returns=settings.max_returns,
                           duplicate_similarity=settings.duplicate_similarity)
    engine = load_engine(settings.model_dir)
    worker = RouterWorker(engine, store, policy)
    worker_state = {"started": False}

    async def send(topic: faust.TopicT, payload: Contract) -> None:
        event = make_event(payload, source=SOURCE)
        await topic.send(key=event.key, value=event.to_json())

    @app.task
    async def start_up() -> None:
        await store.ensure_indexes()
        await store.record_model(engine.model_version)
        worker_state["started"] = True
        log.info("router_ready", model_version=engine.model_version)

    @app.agent(case_events)
    async def route_cases(stream: faust.StreamT) -> None:
        async for record in stream.events():
            message = record.message
            try:
                event = parse_event(message.value or b"", expected_topic="case_events")
            except EventValidationError as exc:
                letter = dead_letter_for(topic=message.topic, value=message.value, key=message.key,
                                         partition=message.partition, offset=message.offset, reason=str(exc),
                                         error_type=type(exc).__name__, service="router")
                await send(dead_letters, letter)
                DEAD_LETTERS.inc()
                log.warning("dead_lettered", offset=message.offset, reason=str(exc)[:300])
                continue
            new_state, decision = await worker.handle(event, table.get(event.subject))
            if decision is not None:
                await send(decisions, decision)
            if new_state is not None:
                table[event.subject] = new_state
            HEALTH.applied()

    @app.page("/healthz")
    async def healthz(web, request):
        return web.json({"status": "ok"})

    @app.page("/readyz")
    async def readyz(web, request):
        mongo_ok = await ping(mongo)
        ready = worker_state["started"] and mongo_ok and not app.rebalancing
        body = {"status": "ready" if ready else "starting", "mongodb": mongo_ok, "model": worker_state["started"],
                "rebalancing": bool(app.rebalancing)}
        return web.json(body, status=200 if ready else 503)

    @app.page("/metrics")
    async def metrics(web, request):
        return web.bytes(render_metrics(), content_type=METRICS_CONTENT_TYPE.split(";")[0])

    return app
