"""Routing policies (pure): what the router decides for a submitted or a returned case.

The text model and the unit registry sit behind :class:`RoutingEngine`; these functions add the
platform's rules on top: low confidence → triage, a returned case goes to the best unit not yet tried,
after ``max_returns`` returns → triage, a near-duplicate of an open case of the same poster → linked.

Decisions are deterministic functions of the events (the decision id derives from the source event
id and the deadline from the event's time), so a replayed event yields the same decision and intake
can drop it as a duplicate.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Protocol

from services.common.events import Location, PostKind, RoutingDecision, RoutingOutcome
from services.common.workdays import WorkCalendar

DECISION_NAMESPACE = uuid.UUID("6f1d2c1e-3b0a-4c7e-9a55-0c7a4f1e8b21")


@dataclass(frozen=True)
class Proposal:
    """What the engine proposes for a text: category, unit and why."""

    category: str
    category_name: str
    confidence: float
    unit_id: str | None
    unit_name: str | None
    working_days: int
    kind: PostKind
    county: str | None
    township: str | None
    reasons: tuple[str, ...]
    top_features: tuple[str, ...]
    model_version: str


class RoutingEngine(Protocol):
    def propose(self, text: str, location: Location | None, exclude: frozenset[str]) -> Proposal: ...


@dataclass(frozen=True)
class RoutingPolicy:
    triage_confidence: float = 0.45
    max_returns: int = 2
    duplicate_window: timedelta = timedelta(days=7)
    duplicate_similarity: float = 0.6


@dataclass
class CaseRouting:
    """What the router remembers of one case (a faust table row, as a dict on the wire)."""

    case_id: str
    text: str
    location: Location | None = None
    poster_ref: str | None = None
    submitted_at: datetime | None = None
    routing_round: int = 1
    returns: int = 0
    tried: list[str] = field(default_factory=list)
    category: str | None = None
    last_version: int = 0
    # The poster's key comes privately, on the contacts topic, beside the public submission: a submission
    # waits for it (``awaiting_contact``, with what its decision must answer), a contact that comes first
    # leaves a row with ``contact_seen`` and no text yet.
    awaiting_contact: bool = False
    contact_seen: bool = False
    submission_event_id: str | None = None

    def to_dict(self) -> dict:
        return {
            "case_id": self.case_id,
            "text": self.text,
            "location": self.location.model_dump(mode="json", exclude_none=True) if self.location else None,
            "poster_ref": self.poster_ref,
            "submitted_at": self.submitted_at.isoformat() if self.submitted_at else None,
            "routing_round": self.routing_round,
            "returns": self.returns,
            "tried": list(self.tried),
            "category": self.category,
            "last_version": self.last_version,
            "awaiting_contact": self.awaiting_contact,
            "contact_seen": self.contact_seen,
            "submission_event_id": self.submission_event_id,
        }

    @classmethod
    def from_dict(cls, raw: dict) -> CaseRouting:
        return cls(
            case_id=raw["case_id"],
            text=raw["text"],
            location=Location(**raw["location"]) if raw.get("location") else None,
            poster_ref=raw.get("poster_ref"),
            submitted_at=datetime.fromisoformat(raw["submitted_at"]) if raw.get("submitted_at") else None,
            routing_round=raw.get("routing_round", 1),
            returns=raw.get("returns", 0),
            tried=list(raw.get("tried", [])),
            category=raw.get("category"),
            last_version=raw.get("last_version", 0),
            awaiting_contact=raw.get("awaiting_contact", False),
            contact_seen=raw.get("contact_seen", False),
            submission_event_id=raw.get("submission_event_id"),
        )


@dataclass(frozen=True)
class RecentPost:
    case_id: str
    text: str
    submitted_at: datetime
    open: bool = True


def decision_id_for(source_event_id: str) -> str:
    return str(uuid.uuid5(DECISION_NAMESPACE, source_event_id))


def bigrams(text: str) -> set[str]:
    compact = "".join(text.split())
    return {compact[i : i + 2] for i in range(len(compact) - 1)} or {compact}


def similarity(a: str, b: str) -> float:
    x, y = bigrams(a), bigrams(b)
    return len(x & y) / len(x | y) if x | y else 0.0


def find_duplicate(case: CaseRouting, recent: list[RecentPost], policy: RoutingPolicy) -> RecentPost | None:
    """The most similar open post of the same poster within the window, if similar enough."""
    if case.submitted_at is None:
        return None
    best, best_score = None, policy.duplicate_similarity
    for post in recent:
        if post.case_id == case.case_id or not post.open:
            continue
        if not (timedelta(0) <= case.submitted_at - post.submitted_at <= policy.duplicate_window):
            continue
        score = similarity(case.text, post.text)
        if score >= best_score:
            best, best_score = post, score
    return best


def _decision(case: CaseRouting, *, source_event_id: str, source_version: int, decided_at: datetime,
              outcome: RoutingOutcome, proposal: Proposal | None, reasons: list[str],
              deadline: datetime | None = None, linked_case_id: str | None = None,
              model_version: str = "rules") -> RoutingDecision:
    return RoutingDecision(
        decision_id=decision_id_for(source_event_id),
        case_id=case.case_id,
        source_event_id=source_event_id,
        source_version=source_version,
        routing_round=case.routing_round,
        outcome=outcome,
        category=proposal.category if proposal else None,
        category_name=proposal.category_name if proposal else None,
        department_id=proposal.unit_id if proposal and outcome is RoutingOutcome.ASSIGNED else None,
        department_name=proposal.unit_name if proposal and outcome is RoutingOutcome.ASSIGNED else None,
        county=proposal.county if proposal else None,
        township=proposal.township if proposal else None,
        kind=proposal.kind if proposal else PostKind.COMPLAINT,
        deadline=deadline,
        working_days=proposal.working_days if proposal and outcome is RoutingOutcome.ASSIGNED else None,
        confidence=round(proposal.confidence, 4) if proposal else 1.0,
        reasons=[r[:500] for r in reasons],
        top_features=list(proposal.top_features) if proposal else [],
        tried_departments=list(case.tried),
        linked_case_id=linked_case_id,
        model_version=proposal.model_version if proposal else model_version,
        decided_at=decided_at,
    )


def route(case: CaseRouting, engine: RoutingEngine, calendar: WorkCalendar, policy: RoutingPolicy, *,
          source_event_id: str, source_version: int, occurred_at: datetime,
          recent: list[RecentPost] | None = None) -> RoutingDecision:
    """Decide for a case that needs a unit: first routing (``recent`` given) or re-routing after a return."""
    common = dict(source_event_id=source_event_id, source_version=source_version, decided_at=occurred_at)
    if recent is not None and case.routing_round == 1:
        duplicate = find_duplicate(case, recent, policy)
        if duplicate is not None:
            return _decision(case, **common, outcome=RoutingOutcome.DUPLICATE, proposal=None,
                             linked_case_id=duplicate.case_id,
                             reasons=[f"重复诉求: 与 {policy.duplicate_window.days} 天内同一来电人的未办结诉求相似"])
    if case.returns >= policy.max_returns:
        proposal = engine.propose(case.text, case.location, frozenset())
        return _decision(case, **common, outcome=RoutingOutcome.TRIAGE, proposal=proposal,
                         reasons=[f"已退单 {case.returns} 次, 转人工分派", *proposal.reasons])
    proposal = engine.propose(case.text, case.location, frozenset(case.tried))
    if proposal.unit_id is None:
        return _decision(case, **common, outcome=RoutingOutcome.TRIAGE, proposal=proposal,
                         reasons=["没有尚未尝试的承办单位, 转人工分派", *proposal.reasons])
    if proposal.confidence < policy.triage_confidence:
        return _decision(case, **common, outcome=RoutingOutcome.TRIAGE, proposal=proposal,
                         reasons=[f"置信度 {proposal.confidence:.2f} 低于 {policy.triage_confidence:.2f}, 转人工分派",
                                  *proposal.reasons])
    deadline = calendar.add_working_days(occurred_at, proposal.working_days)
    return _decision(case, **common, outcome=RoutingOutcome.ASSIGNED, proposal=proposal,
                     reasons=list(proposal.reasons), deadline=deadline)
