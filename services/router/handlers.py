"""The router's use cases, independent of faust (``services.router.agents`` wires them to Kafka), so that tests
drive them directly with plain dicts for the tables.

Routing is two steps, each a batch at a time as the agents take messages from their streams:

1. :meth:`RouterWorker.handle_cases`: the case events and the private contacts, on the case's partition,
   with the per-case table (keyed by case id). Every event is applied in order to its case's row (several
   events of one case in a batch see each other), and each says what it calls for (:class:`CaseStep`): the
   row's new value, a decision to publish now (a re-routing after a return, or the first routing of a post
   that has no poster key), a :class:`~services.router.domain.PosterMessage` for the poster's partition (a
   first routing to check for a duplicate, a case closed, a contact erased) and a correction for retraining.
2. :meth:`RouterWorker.handle_posters`: those messages, repartitioned by the poster's key, with the
   per-poster table of recent posts. A first routing looks for a near-duplicate among the poster's open
   posts of the window, is decided, and is remembered; a close marks the post; an erasure drops the row.

Why a repartition by poster rather than a faust GlobalTable of posts: each poster's posts then have one
writer, the owner of the poster's partition, so no update is lost and no decision is made on a stale copy of
another worker's writes; each worker holds only its own partitions' posters, in an ordinary changelog-backed
table restored on rebalance like the case table. A GlobalTable would copy every poster to every worker,
replicate writes asynchronously (two workers could each miss the other's post of the same poster) and is
documented by faust to loop in recovery with several instances. The price is one internal message per first
routing, which the poster's partition reads in batches like the case events.

Nothing here touches MongoDB: corrections leave as messages (stored in batches by the agent that reads them),
quality counts are tallied in memory and added by a timer. One classification call covers every text a batch
routes; the decisions are what handling the messages one at a time would give.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from services.common.events import (
    CaseAssigned,
    CaseClosed,
    CaseContact,
    CaseLinked,
    CaseReplied,
    CaseReturned,
    CaseSubmitted,
    Event,
    RoutingDecision,
    RoutingOutcome,
)
from services.common.logging import get_logger
from services.common.workdays import default_calendar
from services.router.domain import (
    CaseRouting,
    ContactErased,
    Correction,
    DeadlineCache,
    PosterChange,
    PosterMessage,
    PosterPosts,
    RecentPost,
    RoutingEngine,
    RoutingPolicy,
    route,
)
from services.router.metrics import CLASSIFY_SECONDS, CONFIDENCE, CORRECTIONS, DECISIONS, EVENTS
from services.router.quality import QualityTally, month_of
from services.router.store import RouterStore

log = get_logger(__name__)

Row = dict[str, Any]


class BatchRoutingEngine(RoutingEngine, Protocol):
    def preclassified(self, texts: Sequence[str]) -> RoutingEngine: ...


@dataclass
class CaseStep:
    """What one case event (or contact, or erased contact) calls for."""

    state: Row | None = None  # the case's new table row (None: unchanged)
    decision: RoutingDecision | None = None
    poster: PosterMessage | None = None
    correction: Correction | None = None


@dataclass
class PosterBatch:
    decisions: list[RoutingDecision]
    posters: dict[str, Row | None]  # poster key → the row's new value (None: delete the row)


@dataclass
class _Job:
    """A case to decide, as it stood after message ``index`` of a batch."""

    index: int
    case: CaseRouting
    source_event_id: str  # the event the decision answers (the submission, even when its contact came later)
    source_version: int
    occurred_at: datetime
    recent: list[RecentPost] | None  # a first routing: the poster's posts to compare with; None: a re-routing


class RouterWorker:
    def __init__(self, engine: BatchRoutingEngine, policy: RoutingPolicy, quality: QualityTally | None = None) -> None:
        self.engine = engine
        self.policy = policy
        self.calendar = DeadlineCache(default_calendar())
        self.quality = quality or QualityTally()

    # -- step 1: on the case's partition ------------------------------------------------------------------

    def handle_cases(self, events: Sequence[Event | ContactErased],
                     state_of: Callable[[str], Row | None]) -> list[CaseStep]:
        """One :class:`CaseStep` per event, in order. ``state_of(case id)``: the case's row before the batch."""
        cases: dict[str, CaseRouting | None] = {}
        jobs: list[_Job] = []
        steps = []
        for index, event in enumerate(events):
            if event.subject not in cases:
                raw = state_of(event.subject)
                cases[event.subject] = CaseRouting.from_dict(raw) if raw else None
            steps.append(self._apply(index, event, cases, jobs))
        for job, decision in zip(jobs, self._decide(jobs), strict=True):
            steps[job.index].decision = decision
        return steps

    def _apply(self, index: int, event: Event | ContactErased, cases: dict[str, CaseRouting | None],
               jobs: list[_Job]) -> CaseStep:
        if isinstance(event, ContactErased):
            return self._erase(event, cases)
        data = event.data
        case = cases[event.subject]
        version = getattr(data, "version", 0)
        if case is not None and version <= case.last_version and not isinstance(data, CaseContact):
            EVENTS.labels(event.short_type, "duplicate").inc()
            return CaseStep()
        EVENTS.labels(event.short_type, "applied").inc()

        if isinstance(data, CaseContact):
            return self._apply_contact(index, data, case, cases, jobs)
        if isinstance(data, CaseSubmitted):
            return self._apply_submission(index, event, data, case, cases, jobs)
        if case is None or case.submitted_at is None:
            # an event for a case whose submission this worker never saw (e.g. topic retention): nothing to do
            return CaseStep()
        case.last_version = version
        month = month_of(case.submitted_at)
        step = CaseStep()
        if isinstance(data, CaseAssigned):
            if data.reassigned:
                self.quality.reassigned(month, case.category, case.tried[-1] if case.tried else None, data.category)
            case.category = data.category
            if data.department_id not in case.tried:
                case.tried.append(data.department_id)
            if data.reassigned:
                step.correction = Correction.of(event.id, case, data.category, data.department_id, "reassigned",
                                                data.occurred_at)
                CORRECTIONS.labels("reassigned").inc()
        elif isinstance(data, CaseReturned):
            self.quality.returned(month, case.category, data.department_id)
            case.returns = data.return_count
            case.routing_round += 1
            if data.department_id not in case.tried:
                case.tried.append(data.department_id)
            step.correction = Correction.of(event.id, case, case.category, data.department_id, "returned",
                                            data.occurred_at)
            CORRECTIONS.labels("returned").inc()
            jobs.append(_Job(index, case.snapshot(), event.id, version, data.occurred_at, recent=None))
        elif isinstance(data, CaseReplied | CaseClosed | CaseLinked) and case.poster_ref:
            step.poster = PosterMessage(PosterChange.CLOSED, case.poster_ref, case.case_id)
        step.state = case.to_dict()
        return step

    def _apply_submission(self, index: int, event: Event, data: CaseSubmitted, earlier: CaseRouting | None,
                          cases: dict[str, CaseRouting | None], jobs: list[_Job]) -> CaseStep:
        """Route now if the poster's key is known (its contact came first, or an old event carried it on the
        public topic); otherwise wait for the contact, which intake publishes with the submission."""
        poster_ref = data.poster_ref or (earlier.poster_ref if earlier is not None else None)
        known = bool(data.poster_ref) or (earlier is not None and earlier.contact_seen)
        case = CaseRouting(case_id=data.case_id, text=f"{data.title} {data.body}", location=data.location,
                           poster_ref=poster_ref, submitted_at=data.occurred_at, last_version=data.version,
                           awaiting_contact=not known, contact_seen=known, submission_event_id=event.id)
        cases[event.subject] = case
        return CaseStep(state=case.to_dict(), poster=self._first_routing(index, case, jobs) if known else None)

    def _apply_contact(self, index: int, contact: CaseContact, case: CaseRouting | None,
                       cases: dict[str, CaseRouting | None], jobs: list[_Job]) -> CaseStep:
        EVENTS.labels("case.contact", "applied").inc()
        if case is None:  # the contact came first: remember the key for the submission
            case = CaseRouting(case_id=contact.case_id, text="", poster_ref=contact.poster_ref, contact_seen=True)
            cases[contact.case_id] = case
            return CaseStep(state=case.to_dict())
        if not case.awaiting_contact:
            return CaseStep()  # already routed (a replayed or corrected contact changes nothing)
        case.poster_ref, case.awaiting_contact, case.contact_seen = contact.poster_ref, False, True
        return CaseStep(state=case.to_dict(), poster=self._first_routing(index, case, jobs))

    @staticmethod
    def _first_routing(index: int, case: CaseRouting, jobs: list[_Job]) -> PosterMessage | None:
        """A post with a poster key is decided on the poster's partition, beside the poster's other posts; one
        without cannot be anyone's duplicate and is decided here."""
        assert case.submitted_at is not None and case.submission_event_id is not None
        if case.poster_ref:
            return PosterMessage(PosterChange.ROUTE, case.poster_ref, case.case_id, case.snapshot(),
                                 case.submission_event_id, case.submitted_at)
        jobs.append(_Job(index, case.snapshot(), case.submission_event_id, 1, case.submitted_at, recent=[]))
        return None

    @staticmethod
    def _erase(erased: ContactErased, cases: dict[str, CaseRouting | None]) -> CaseStep:
        """The contact's tombstone: the case forgets its poster key, and the poster's partition drops the
        poster's posts (the only place left that links them)."""
        EVENTS.labels("case.contact", "erased").inc()
        case = cases[erased.case_id]
        if case is None or not case.poster_ref:
            return CaseStep()
        step = CaseStep(poster=PosterMessage(PosterChange.ERASED, case.poster_ref, case.case_id))
        case.poster_ref = None
        step.state = case.to_dict()
        return step

    # -- step 2: on the poster's partition ----------------------------------------------------------------

    def handle_posters(self, messages: Sequence[PosterMessage],
                       posts_of: Callable[[str], Row | None]) -> PosterBatch:
        """The decisions of the batch's first routings, and the poster rows it changed.
        ``posts_of(poster key)``: the poster's row before the batch."""
        posters: dict[str, PosterPosts] = {}
        changed: set[str] = set()
        jobs: list[_Job] = []
        for index, message in enumerate(messages):
            poster = message.poster_ref
            if poster not in posters:
                posters[poster] = PosterPosts.from_dict(posts_of(poster))
            posts = posters[poster]
            if message.change is PosterChange.ERASED:
                if posts.posts:
                    posts.posts = []
                    changed.add(poster)
            elif message.change is PosterChange.CLOSED:
                if posts.close(message.case_id):
                    changed.add(poster)
            else:
                case = message.case
                assert case is not None and case.submitted_at is not None
                assert message.source_event_id is not None and message.occurred_at is not None
                jobs.append(_Job(index, case, message.source_event_id, 1, message.occurred_at, list(posts.posts)))
                posts.remember(RecentPost(case.case_id, case.text, case.submitted_at), self.policy.duplicate_window)
                changed.add(poster)
        return PosterBatch(self._decide(jobs),
                           {poster: posters[poster].to_dict() if posters[poster].posts else None for poster in changed})

    # -- deciding ----------------------------------------------------------------------------------------

    def _decide(self, jobs: Sequence[_Job]) -> list[RoutingDecision]:
        if not jobs:
            return []
        started = time.perf_counter()
        engine = self.engine.preclassified([job.case.text for job in jobs])
        decisions = []
        for job in jobs:
            decision = route(job.case, engine, self.calendar, self.policy, source_event_id=job.source_event_id,
                             source_version=job.source_version, occurred_at=job.occurred_at, recent=job.recent)
            DECISIONS.labels(decision.category or "none", decision.outcome.value).inc()
            if decision.outcome is not RoutingOutcome.DUPLICATE:
                self.quality.decision(month_of(job.case.submitted_at), decision.category, decision.department_id)
            CONFIDENCE.observe(decision.confidence)
            decisions.append(decision)
        per_case = (time.perf_counter() - started) / len(jobs)
        for _ in jobs:
            CLASSIFY_SECONDS.observe(per_case)
        return decisions


# -- what the timers and the corrections agent do ----------------------------------------------------------

async def record_corrections(store: RouterStore, corrections: Sequence[Correction], retry_seconds: float = 1.0) -> None:
    """One bulk write for a batch of corrections, retried until the database takes it (their messages are
    acknowledged only after, so none is lost while the database is away)."""
    while True:
        try:
            await store.record_corrections(corrections)
            return
        except Exception as exc:
            log.warning("router_corrections_write_failed", corrections=len(corrections), error=str(exc)[:300])
            await asyncio.sleep(retry_seconds)


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
