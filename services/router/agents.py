"""The router's faust worker: case events in, routing decisions out.

At-least-once: a crash may replay events since the last commit; the per-case ``last_version`` in the
changelog-backed table skips what was already handled, and decisions carry a deterministic id, so intake
drops any that slip through twice. Malformed events go to the dead-letter topic and the worker goes on.

Events are taken from the stream in micro-batches (``stream.take_events``: up to ``batch_size`` events, or
what arrived within ``batch_wait_seconds``) and acknowledged only after the whole batch is handled; within a
batch they are applied in offset order, so a case's events keep their order. Routing a batch costs one
classification call and a few MongoDB round trips however many events it holds (see ``bench.router_latency``).
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import socket
import sys
import time
import weakref
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import date, datetime
from typing import Any, Protocol

import faust
from faust.streams import _current_event
from prometheus_client import Counter, Histogram

from services.common.config import CommonSettings, TopicSettings, common_settings, topics
from services.common.events import (
    CaseAssigned,
    CaseClosed,
    CaseContact,
    CaseLinked,
    CaseReplied,
    CaseReturned,
    CaseSubmitted,
    Contract,
    Event,
    EventValidationError,
    RoutingDecision,
    RoutingOutcome,
    dead_letter_for,
    make_event,
    parse_event,
)
from services.common.logging import get_logger
from services.common.metrics import METRICS_CONTENT_TYPE, ConsumerHealth, render_metrics
from services.common.mongo import new_client, ping
from services.common.workdays import WorkCalendar, default_calendar, local_date
from services.router.config import RouterSettings
from services.router.engine import load_engine
from services.router.live import LiveEngine
from services.router.policies import CaseRouting, RecentPost, RoutingEngine, RoutingPolicy, route
from services.router.quality import TRIAGE, QualityTally, month_of, quality_report
from services.router.registry import ModelRegistry
from services.router.store import RouterStore

log = get_logger(__name__)
SOURCE = "/wenzheng/router"

DECISIONS = Counter("wenzheng_router_decisions_total", "Routing decisions", ["category", "outcome"])
CONFIDENCE = Histogram("wenzheng_router_confidence", "Confidence of the chosen category",
                       buckets=(0.1, 0.2, 0.3, 0.4, 0.45, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 1.0))
CLASSIFY_SECONDS = Histogram("wenzheng_router_classification_seconds", "Time to classify and route one case",
                             buckets=(0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25))
BATCH_SECONDS = Histogram("wenzheng_router_batch_seconds", "Time to handle one batch of events, publishing included",
                          buckets=(0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0))
BATCH_EVENTS = Histogram("wenzheng_router_batch_events", "Events per batch",
                         buckets=(1, 2, 5, 10, 20, 50, 100, 200, 500))
EVENTS = Counter("wenzheng_router_events_total", "Case events read", ["type", "outcome"])
DEAD_LETTERS = Counter("wenzheng_router_dead_letters_total", "Messages sent to the dead-letter topic")
CORRECTIONS = Counter("wenzheng_router_corrections_total", "Labelled corrections stored for retraining", ["kind"])
HEALTH = ConsumerHealth("router")


class BatchRoutingEngine(RoutingEngine, Protocol):
    def preclassified(self, texts: Sequence[str]) -> RoutingEngine: ...


@dataclass
class _Job:
    """A case to route, as it stood after event ``index`` of a batch."""

    index: int
    case: CaseRouting
    source_event_id: str  # the event the decision answers (the submission, even when its contact came later)
    source_version: int
    occurred_at: datetime
    first_routing: bool  # a submission (look for a duplicate), not a re-routing after a return


@dataclass
class _BatchState:
    """What the events of one batch change, gathered while the batch is read in order."""

    cases: dict[str, CaseRouting | None] = field(default_factory=dict)
    jobs: list[_Job] = field(default_factory=list)
    submitted: dict[str, list[tuple[int, RecentPost]]] = field(default_factory=dict)  # poster → posts
    closed: list[CaseRouting] = field(default_factory=list)
    closed_at: dict[str, int] = field(default_factory=dict)  # case id → index of the event that closed it
    corrections: list[tuple[str, CaseRouting, str | None, str, str]] = field(default_factory=list)

    def closed_before(self, case_id: str, index: int) -> bool:
        closed = self.closed_at.get(case_id)
        return closed is not None and closed < index


class RouterWorker:
    """The use cases behind the agent, independent of faust so they can be tested directly.

    Events are handled a batch at a time (as the agent takes them from the stream): the batch is read in
    order, each event seeing the state the previous ones left (several events of one case in a batch are
    applied in turn), then one MongoDB query finds the recent posts of every poster in the batch, one
    classification call covers every text to route, and the store's writes go out as one bulk write per
    collection. The decisions are what handling the events one by one would give."""

    def __init__(self, engine: BatchRoutingEngine, store: RouterStore, policy: RoutingPolicy,
                 quality: QualityTally | None = None) -> None:
        self.engine = engine
        self.store = store
        self.policy = policy
        self.calendar = DeadlineCache(default_calendar())
        self.quality = quality or QualityTally()

    async def handle(self, event: Event, state: dict[str, Any] | None) -> tuple[
            dict[str, Any] | None, RoutingDecision | None]:
        """Returns the case's new table row (None: unchanged) and a decision to publish, if any."""
        return (await self.handle_batch([event], lambda _: state))[0]

    async def handle_batch(self, events: Sequence[Event], state_of: Callable[[str], dict[str, Any] | None]) -> list[
            tuple[dict[str, Any] | None, RoutingDecision | None]]:
        """For each event in order: the case's new table row (None: unchanged) and a decision, if any.
        ``state_of(case id)`` reads a case's row as it was before the batch."""
        batch = _BatchState()
        results: list[tuple[dict[str, Any] | None, RoutingDecision | None]] = []
        for index, event in enumerate(events):
            if event.subject not in batch.cases:
                raw = state_of(event.subject)
                batch.cases[event.subject] = CaseRouting.from_dict(raw) if raw else None
            results.append((self._apply(index, event, batch), None))
        if batch.jobs:
            decisions = await self._route_all(batch)
            for job, decision in zip(batch.jobs, decisions, strict=True):
                results[job.index] = (results[job.index][0], decision)
        await self.store.mark_closed(batch.closed)
        await self.store.record_corrections(batch.corrections)
        return results

    def _apply(self, index: int, event: Event, batch: _BatchState) -> dict[str, Any] | None:
        """Apply one event to its case; queue the routing and the store's writes it calls for."""
        data = event.data
        case = batch.cases[event.subject]
        version = getattr(data, "version", 0)
        if case is not None and version <= case.last_version and not isinstance(data, CaseContact):
            EVENTS.labels(event.short_type, "duplicate").inc()
            return None
        EVENTS.labels(event.short_type, "applied").inc()

        if isinstance(data, CaseContact):
            return self._apply_contact(index, data, case, batch)
        if isinstance(data, CaseSubmitted):
            return self._apply_submission(index, event, data, case, batch)
        if case is None or case.submitted_at is None:
            # an event for a case whose submission this worker never saw (e.g. topic retention): nothing to do
            return None
        case.last_version = version
        month = month_of(case.submitted_at)
        if isinstance(data, CaseAssigned):
            if data.reassigned:
                self.quality.reassigned(month, case.category, case.tried[-1] if case.tried else None, data.category)
            case.category = data.category
            if data.department_id not in case.tried:
                case.tried.append(data.department_id)
            if data.reassigned:
                batch.corrections.append((event.id, _snapshot(case), data.category, data.department_id, "reassigned"))
                CORRECTIONS.labels("reassigned").inc()
        elif isinstance(data, CaseReturned):
            self.quality.returned(month, case.category, data.department_id)
            case.returns = data.return_count
            case.routing_round += 1
            if data.department_id not in case.tried:
                case.tried.append(data.department_id)
            batch.corrections.append((event.id, _snapshot(case), case.category, data.department_id, "returned"))
            CORRECTIONS.labels("returned").inc()
            batch.jobs.append(_Job(index, _snapshot(case), event.id, version, data.occurred_at, first_routing=False))
        elif isinstance(data, CaseReplied | CaseClosed | CaseLinked):
            batch.closed.append(_snapshot(case))
            batch.closed_at.setdefault(case.case_id, index)
        return case.to_dict()

    def _apply_submission(self, index: int, event: Event, data: CaseSubmitted, earlier: CaseRouting | None,
                          batch: _BatchState) -> dict[str, Any]:
        """Route now if the poster's key is known (its contact came first, or an old event carried it on the
        public topic); otherwise wait for the contact, which intake publishes with the submission."""
        poster_ref = data.poster_ref or (earlier.poster_ref if earlier is not None else None)
        known = bool(data.poster_ref) or (earlier is not None and earlier.contact_seen)
        case = CaseRouting(case_id=data.case_id, text=f"{data.title} {data.body}", location=data.location,
                           poster_ref=poster_ref, submitted_at=data.occurred_at, last_version=data.version,
                           awaiting_contact=not known, contact_seen=known, submission_event_id=event.id)
        batch.cases[event.subject] = case
        if known:
            self._queue_first_routing(index, case, batch)
        return case.to_dict()

    def _apply_contact(self, index: int, contact: CaseContact, case: CaseRouting | None,
                       batch: _BatchState) -> dict[str, Any] | None:
        EVENTS.labels("case.contact", "applied").inc()
        if case is None:  # the contact came first: remember the key for the submission
            case = CaseRouting(case_id=contact.case_id, text="", poster_ref=contact.poster_ref, contact_seen=True)
            batch.cases[contact.case_id] = case
            return case.to_dict()
        if not case.awaiting_contact:
            return None  # already routed (a replayed or corrected contact changes nothing)
        case.poster_ref, case.awaiting_contact, case.contact_seen = contact.poster_ref, False, True
        self._queue_first_routing(index, case, batch)
        return case.to_dict()

    @staticmethod
    def _queue_first_routing(index: int, case: CaseRouting, batch: _BatchState) -> None:
        assert case.submitted_at is not None and case.submission_event_id is not None
        batch.jobs.append(_Job(index, _snapshot(case), case.submission_event_id, 1, case.submitted_at,
                               first_routing=True))
        if case.poster_ref:
            batch.submitted.setdefault(case.poster_ref, []).append(
                (index, RecentPost(case.case_id, case.text, case.submitted_at)))

    async def _route_all(self, batch: _BatchState) -> list[RoutingDecision]:
        posters = [(job.case.poster_ref, job.case.submitted_at) for job in batch.jobs
                   if job.first_routing and job.case.poster_ref and job.case.submitted_at]
        stored, existing = await self.store.recent_posts_of(posters, self.policy.duplicate_window) if posters else (
            {}, set())
        in_batch = {post.case_id for posts in batch.submitted.values() for _, post in posts}
        writes = asyncio.ensure_future(self.store.remember_posts(
            [job.case for job in batch.jobs if job.first_routing], existing))
        await asyncio.sleep(0)  # let the write go out while the batch is classified
        started = time.perf_counter()
        engine = self.engine.preclassified([job.case.text for job in batch.jobs])
        decisions = []
        for job in batch.jobs:
            recent = None
            if job.first_routing:
                poster = job.case.poster_ref
                earlier = [post for position, post in batch.submitted.get(poster, []) if position < job.index]
                candidates = [post for post in stored.get(poster, []) if post.case_id not in in_batch] + earlier
                recent = [replace(post, open=False) if batch.closed_before(post.case_id, job.index) else post
                          for post in candidates]
            decision = route(job.case, engine, self.calendar, self.policy, source_event_id=job.source_event_id,
                             source_version=job.source_version, occurred_at=job.occurred_at, recent=recent)
            DECISIONS.labels(decision.category or "none", decision.outcome.value).inc()
            if decision.outcome is not RoutingOutcome.DUPLICATE:
                self.quality.decision(month_of(job.case.submitted_at), decision.category, decision.department_id)
            CONFIDENCE.observe(decision.confidence)
            decisions.append(decision)
        per_case = (time.perf_counter() - started) / len(batch.jobs)
        for _ in batch.jobs:
            CLASSIFY_SECONDS.observe(per_case)
        await writes
        return decisions


class DeadlineCache:
    """``add_working_days`` memoised by the start's Shanghai date: a deadline depends on nothing else, and the
    holiday lookups cost more than classifying a post."""

    def __init__(self, calendar: WorkCalendar, size: int = 4096) -> None:
        self.calendar = calendar
        self.size = size
        self.deadlines: dict[tuple[date, int], datetime] = {}

    def add_working_days(self, start: datetime, days: int) -> datetime:
        key = (local_date(start), days)
        deadline = self.deadlines.get(key)
        if deadline is None:
            if len(self.deadlines) >= self.size:
                self.deadlines.clear()
            deadline = self.deadlines[key] = self.calendar.add_working_days(start, days)
        return deadline

    def __getattr__(self, name: str) -> Any:
        return getattr(self.calendar, name)


_MONTH = re.compile(r"\d{4}-(0[1-9]|1[0-2])")


async def flush_quality_counts(tally: QualityTally, store: RouterStore, owner: str) -> None:
    counts = tally.drain()
    try:
        await store.add_quality(owner, counts)
    except Exception as exc:  # kept for the next flush
        tally.restore(counts)
        log.warning("router_quality_flush_failed", error=str(exc)[:300])


async def run_scheduled_retrain(store: RouterStore, every_hours: float) -> None:
    """Once per period, in one worker: whichever inserts the period's run document first runs
    ``python -m services.router retrain`` as a child process (it promotes only a candidate not worse)."""
    period = int(time.time() // (every_hours * 3600))
    if not await store.claim_retrain(f"retrain:{every_hours}:{period}"):
        return
    process = await asyncio.create_subprocess_exec(sys.executable, "-m", "services.router", "retrain",
                                                   stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await process.communicate()
    if process.returncode:
        log.error("router_scheduled_retrain_failed", returncode=process.returncode, error=err.decode()[-300:])
        return
    result = json.loads(out.decode() or "{}")
    log.info("router_scheduled_retrain", action=result.get("action"), candidate=result.get("candidate_model_version"),
             held_out_macro_f1=result.get("candidate", {}).get("macro_f1"))


def _snapshot(case: CaseRouting) -> CaseRouting:
    return replace(case, tried=list(case.tried))


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
    # the private contacts (keyed and partitioned like the case events) carry the poster's key for duplicates
    case_events = app.topic(names.case_events, names.case_contacts, **raw)
    topic_keys = {names.case_events: "case_events", names.case_contacts: "case_contacts"}
    decisions = app.topic(names.routing_decisions, **raw)
    dead_letters = app.topic(names.dead_letter, **raw)
    table = app.Table("case-routing", default=None, partitions=settings.partitions)
    mongo = new_client(common.mongo_url, service="router")
    store = RouterStore(mongo[settings.database])
    registry = ModelRegistry(mongo[settings.database])
    policy = RoutingPolicy(triage_confidence=settings.triage_confidence, max_returns=settings.max_returns,
                           duplicate_similarity=settings.duplicate_similarity)
    shipped = load_engine(settings.model_dir)
    engine = LiveEngine(shipped, shipped.assigner, registry)
    worker = RouterWorker(engine, store, policy)
    worker_state = {"started": False}
    owner = f"{socket.gethostname()}-{os.getpid()}-{int(time.time())}"

    async def send(topic: faust.TopicT, payload: Contract) -> None:
        event = make_event(payload, source=SOURCE)
        await topic.send(key=event.key, value=event.to_json())

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
        # micro-batches: what arrived within batch_wait (at most batch_size events) is routed together; the
        # events are acknowledged only after the whole batch is handled (at-least-once)
        async for records in stream.take_events(settings.batch_size, within=settings.batch_wait_seconds):
            started = time.perf_counter()
            parsed = []
            for record in records:
                message = record.message
                if message.value is None and message.topic == names.case_contacts:
                    continue  # a contact erased after its retention period: nothing for the router
                try:
                    parsed.append((record, parse_event(message.value or b"",
                                                       expected_topic=topic_keys.get(message.topic, "case_events"))))
                except EventValidationError as exc:
                    letter = dead_letter_for(topic=message.topic, value=message.value, key=message.key,
                                             partition=message.partition, offset=message.offset, reason=str(exc),
                                             error_type=type(exc).__name__, service="router")
                    await send(dead_letters, letter)
                    DEAD_LETTERS.inc()
                    log.warning("dead_lettered", offset=message.offset, reason=str(exc)[:300])
            results = await worker.handle_batch([event for _, event in parsed], table.get)
            for (record, event), (new_state, decision) in zip(parsed, results, strict=True):
                if decision is not None:
                    await send(decisions, decision)
                if new_state is not None:
                    # the table writes its changelog to the partition of the "current" event: this one's
                    _current_event.set(weakref.ref(record))
                    table[event.subject] = new_state
                HEALTH.applied()
            BATCH_SECONDS.observe(time.perf_counter() - started)
            BATCH_EVENTS.observe(len(records))

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
                return web.json({"error": {"code": "invalid_month", "message": f"months are YYYY-MM, not {bad[0]}",
                                           "field": "months"}}, status=422)
        docs = await store.quality_documents(wanted)
        assigner = shipped.assigner
        return web.json(quality_report(
            docs, lambda c: assigner.categories[c].name if c in assigner.categories else c,
            lambda u: "人工分拣" if u == TRIAGE else (assigner.units[u].name if u in assigner.units else u)))

    @app.page("/metrics")
    async def metrics(web, request):
        return web.bytes(render_metrics(), content_type=METRICS_CONTENT_TYPE.split(";")[0])

    return app
