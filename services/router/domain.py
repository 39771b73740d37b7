"""The router's domain (pure: no I/O, no clock): what it remembers of a case and of a poster, and what it
decides for a submitted or a returned case.

The text model and the unit registry sit behind :class:`RoutingEngine`; these functions add the
platform's rules on top: low confidence → triage, a returned case goes to the best unit not yet tried,
after ``max_returns`` returns → triage, a near-duplicate of an open case of the same poster → linked.

Decisions are deterministic functions of the events (the decision id derives from the source event
id and the deadline from the event's time), so a replayed event yields the same decision and intake
can drop it as a duplicate.

Per-case state (:class:`CaseRouting`) lives in a table keyed by case id, beside the case events' partition;
per-poster state (:class:`PosterPosts`, the poster's recent posts for duplicate detection) in a table keyed
by the poster's key, fed by :class:`PosterMessage` s that the case side sends to the poster's partition
(see ``services.router.handlers``). Both are plain dicts on the wire (the tables' changelogs).
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass, field, replace
from datetime import date, datetime, timedelta
from enum import StrEnum
from typing import Any, Protocol

from services.common.events import Location, PostKind, RoutingDecision, RoutingOutcome
from services.common.workdays import WorkCalendar, local_date

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

    def snapshot(self) -> CaseRouting:
        return replace(self, tried=list(self.tried))


@dataclass(frozen=True)
class ContactErased:
    """A tombstone on the private contacts topic: the case's contact (and so its poster key) is erased."""

    case_id: str

    @property
    def subject(self) -> str:
        return self.case_id


STORED_TEXT_CHARS = 2000  # a post's text kept for duplicate detection


@dataclass(frozen=True)
class RecentPost:
    case_id: str
    text: str
    submitted_at: datetime
    open: bool = True

    def to_dict(self) -> dict[str, Any]:
        return {"case_id": self.case_id, "text": self.text, "submitted_at": self.submitted_at.isoformat(),
                "open": self.open}

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> RecentPost:
        return cls(raw["case_id"], raw["text"], datetime.fromisoformat(raw["submitted_at"]), raw.get("open", True))


@dataclass
class PosterPosts:
    """One poster's posts of the duplicate window (a table row keyed by the poster's key). A post is kept
    until a newer post of the poster is more than the window after it; a closed case stays, marked not
    open; an erased contact drops the whole row."""

    posts: list[RecentPost] = field(default_factory=list)

    def remember(self, post: RecentPost, window: timedelta) -> None:
        """Add (or, replayed, replace) a post and forget those too old to be its duplicates' targets. A replayed
        post keeps what happened to it since (closed stays closed)."""
        earlier = next((p for p in self.posts if p.case_id == post.case_id), None)
        kept = [p for p in self.posts if p.case_id != post.case_id]
        still_open = post.open and (earlier is None or earlier.open)
        kept.append(replace(post, text=post.text[:STORED_TEXT_CHARS], open=still_open))
        newest = max(p.submitted_at for p in kept)
        self.posts = sorted((p for p in kept if newest - p.submitted_at <= window), key=lambda p: p.submitted_at)

    def close(self, case_id: str) -> bool:
        """The case was replied, closed or linked: no longer a duplicate target. False if not held."""
        found = False
        for i, post in enumerate(self.posts):
            if post.case_id == case_id and post.open:
                self.posts[i], found = replace(post, open=False), True
        return found

    def to_dict(self) -> dict[str, Any]:
        return {"posts": [p.to_dict() for p in self.posts]}

    @classmethod
    def from_dict(cls, raw: dict[str, Any] | None) -> PosterPosts:
        return cls([RecentPost.from_dict(p) for p in (raw or {}).get("posts", [])])


class PosterChange(StrEnum):
    ROUTE = "route"  # a first routing: look for a duplicate among the poster's posts, then remember it
    CLOSED = "closed"
    ERASED = "erased"


@dataclass(frozen=True)
class PosterMessage:
    """What the case side tells the poster's partition (keyed by ``poster_ref``; private, internal topic)."""

    change: PosterChange
    poster_ref: str
    case_id: str
    case: CaseRouting | None = None  # ROUTE: the case as it stood, with what its decision answers
    source_event_id: str | None = None
    occurred_at: datetime | None = None

    def to_json(self) -> bytes:
        return json.dumps({
            "change": self.change.value, "poster_ref": self.poster_ref, "case_id": self.case_id,
            "case": self.case.to_dict() if self.case else None, "source_event_id": self.source_event_id,
            "occurred_at": self.occurred_at.isoformat() if self.occurred_at else None,
        }, ensure_ascii=False).encode()

    @classmethod
    def from_json(cls, raw: bytes) -> PosterMessage:
        data = json.loads(raw)
        return cls(PosterChange(data["change"]), data["poster_ref"], data["case_id"],
                   CaseRouting.from_dict(data["case"]) if data.get("case") else None, data.get("source_event_id"),
                   datetime.fromisoformat(data["occurred_at"]) if data.get("occurred_at") else None)


@dataclass(frozen=True)
class Correction:
    """A labelled correction for retraining: a supervisor's reassignment (label = the right category) or a
    return (the unit was wrong). Keyed by the event's id, so a replay stores nothing new."""

    event_id: str
    case_id: str
    text: str
    label: str | None
    department_id: str
    kind: str  # "reassigned" | "returned"
    county: str | None
    occurred_at: datetime

    @classmethod
    def of(cls, event_id: str, case: CaseRouting, label: str | None, department_id: str, kind: str,
           occurred_at: datetime) -> Correction:
        return cls(event_id, case.case_id, case.text, label, department_id, kind,
                   case.location.county if case.location else None, occurred_at)

    def to_json(self) -> bytes:
        return json.dumps({**self.__dict__, "occurred_at": self.occurred_at.isoformat()}, ensure_ascii=False).encode()

    @classmethod
    def from_json(cls, raw: bytes) -> Correction:
        data = json.loads(raw)
        return cls(**{**data, "occurred_at": datetime.fromisoformat(data["occurred_at"])})


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
