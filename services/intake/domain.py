"""The case state machine, pure: a table of (state, action) -> new state, guards, and the events each
accepted command produces. No I/O: handlers load a :class:`Case`, call :func:`decide`, and store the
outcome (new case + events) in one versioned write.
"""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import re
import unicodedata
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from enum import StrEnum
from typing import Any, ClassVar

from services.common import events as ev
from services.common.events import (
    Actor,
    CaseStatus,
    NoticeMethod,
    PostKind,
    Rating,
    RatingSource,
    RoutingDecision,
    RoutingOutcome,
)
from services.common.people import people_deadline
from services.common.workdays import WorkCalendar, default_calendar, local_date

S = CaseStatus


class Action(StrEnum):
    ASSIGN = "assign"  # a routing decision: assigned
    TRIAGE = "triage"  # a routing decision: triage
    LINK = "link"  # a routing decision: duplicate
    SIGN = "sign"
    RETURN = "return"
    REQUEST_EXTENSION = "request_extension"
    APPROVE_EXTENSION = "approve_extension"
    DENY_EXTENSION = "deny_extension"
    REPLY = "reply"
    RATE = "rate"
    REOPEN = "reopen"
    CLOSE = "close"
    FLAG = "flag"
    REASSIGN = "reassign"
    MODERATE = "moderate"  # approve or correct the publishable text
    NOTICE = "notice"  # 督办
    ANSWER_NOTICE = "answer_notice"
    CALLBACK = "callback"  # 回访
    APPROVE_REPLY = "approve_reply"  # a unit lead publishes the reply its staff wrote
    REJECT_REPLY = "reject_reply"


HANDLING = (S.SIGNED, S.EXTENDED, S.REOPENED)  # a unit is working on it and may reply
NOT_CLOSED = tuple(s for s in CaseStatus if s is not S.CLOSED)


def _table() -> dict[tuple[CaseStatus, Action], CaseStatus]:
    table: dict[tuple[CaseStatus, Action], CaseStatus] = {}
    for waiting in (S.SUBMITTED, S.RETURNED):
        table[waiting, Action.ASSIGN] = S.ASSIGNED
        table[waiting, Action.TRIAGE] = S.TRIAGE
        table[waiting, Action.LINK] = S.CLOSED  # linked = closed as a duplicate of the linked case
    table[S.ASSIGNED, Action.SIGN] = S.SIGNED
    table[S.ASSIGNED, Action.RETURN] = S.RETURNED
    table[S.SIGNED, Action.RETURN] = S.RETURNED
    for working in HANDLING:
        table[working, Action.REQUEST_EXTENSION] = working
        table[working, Action.APPROVE_EXTENSION] = S.EXTENDED
        table[working, Action.DENY_EXTENSION] = working
        table[working, Action.REPLY] = S.REPLIED  # or stays, with a pending reply, when the lead must approve
        table[working, Action.APPROVE_REPLY] = S.REPLIED
        table[working, Action.REJECT_REPLY] = working
    table[S.REPLIED, Action.RATE] = S.RATED
    table[S.REPLIED, Action.REOPEN] = S.REOPENED
    table[S.RATED, Action.REOPEN] = S.REOPENED
    for state in (S.SUBMITTED, S.TRIAGE, S.RETURNED, S.ASSIGNED, *HANDLING):
        table[state, Action.REASSIGN] = S.ASSIGNED
    for state in NOT_CLOSED:
        table[state, Action.CLOSE] = S.CLOSED
    for state in CaseStatus:
        table[state, Action.FLAG] = state
        table[state, Action.MODERATE] = state
        table[state, Action.ANSWER_NOTICE] = state  # an open notice is answered whatever became of the case
    for state in NOTICE_STATES:
        table[state, Action.NOTICE] = state
    for state in CALLBACK_STATES:
        table[state, Action.CALLBACK] = state  # with a rating on a replied case: rated (see _callback)
    return table


NOTICE_STATES = (S.ASSIGNED, *HANDLING, S.REPLIED, S.RATED)  # a unit holds the case and it is not closed
CALLBACK_STATES = (S.REPLIED, S.RATED, S.REOPENED, S.CLOSED)  # the unit has answered at least once


TRANSITIONS: dict[tuple[CaseStatus, Action], CaseStatus] = _table()
OPEN_DEADLINE_STATES = (S.ASSIGNED, *HANDLING)  # overdue = one of these and the deadline has passed


ROUTING_ACTIONS = frozenset({Action.ASSIGN, Action.TRIAGE, Action.LINK})


def allowed_actions(status: CaseStatus) -> list[str]:
    return sorted(action.value for (state, action) in TRANSITIONS if state is status)


def available_actions(case: Case) -> list[str]:
    """What the state machine and the case's guards allow now, whoever asks (people narrow it further)."""
    out = set()
    for (state, action) in TRANSITIONS:
        if state is not case.status or action in ROUTING_ACTIONS or action is Action.RATE:
            continue
        if action in (Action.APPROVE_REPLY, Action.REJECT_REPLY) and case.pending_reply is None:
            continue
        if action is Action.REPLY and case.pending_reply is not None:
            continue
        if action in (Action.APPROVE_EXTENSION, Action.DENY_EXTENSION) and case.pending_extension is None:
            continue
        if action is Action.REQUEST_EXTENSION and case.pending_extension is not None:
            continue
        if action is Action.ANSWER_NOTICE and not case.open_notice_units():
            continue
        if action is Action.MODERATE and case.publishable:
            continue
        out.add(action.value)
    return sorted(out)


# --------------------------------------------------------------------------------------------------
# Errors
# --------------------------------------------------------------------------------------------------


class DomainError(Exception):
    code = "domain_error"

    def __init__(self, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.field = field


class IllegalTransition(DomainError):
    code = "illegal_transition"

    def __init__(self, status: CaseStatus, action: Action) -> None:
        self.status = status
        self.action = action
        self.allowed = allowed_actions(status)
        super().__init__(
            f"cannot {action.value} a case in state {status.value}; allowed actions: {', '.join(self.allowed)}",
            "status",
        )


class RuleViolation(DomainError):
    """The transition exists but a guard refuses it (e.g. the return window has closed)."""

    def __init__(self, code: str, message: str, field: str | None = None) -> None:
        super().__init__(message, field)
        self.code = code


class DecisionIgnored(Exception):
    """A routing decision that was already applied or answers an outdated case version: skip it."""


class MalformedDecision(ValueError):
    """A routing decision that parses but cannot be applied (missing unit, etc.): dead-letter it."""


# --------------------------------------------------------------------------------------------------
# The case (the fields the state machine needs)
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PendingExtension:
    reason: str
    extra_working_days: int
    requested_at: datetime


@dataclass(frozen=True)
class Notice:
    """A supervision notice (督办) to a unit: open until the unit answers it."""

    notice_id: str
    department_id: str
    method: NoticeMethod
    note: str
    reply_by: date
    issued_at: datetime
    answer: str | None = None
    answered_at: datetime | None = None

    @property
    def open(self) -> bool:
        return self.answered_at is None


@dataclass(frozen=True)
class Callback:
    """A call-back to the citizen (回访) recorded by the office."""

    callback_id: str
    reached: bool
    note: str
    recorded_at: datetime
    rating: Rating | None = None


@dataclass(frozen=True)
class PendingReply:
    """A reply a unit's staff wrote that waits for the unit lead: not public until approved."""

    text: str
    author_id: str | None
    submitted_at: datetime
    template_id: str | None = None


@dataclass(frozen=True)
class Case:
    case_id: str
    tracking_number: str
    version: int
    status: CaseStatus
    created_at: datetime
    kind: PostKind = PostKind.COMPLAINT
    category: str | None = None
    category_name: str | None = None
    department_id: str | None = None
    department_name: str | None = None
    county: str | None = None
    township: str | None = None
    deadline: datetime | None = None
    assigned_at: datetime | None = None
    working_days: int | None = None
    routing_round: int = 1
    routing_source_version: int = 1  # the version of the event that asked the router to decide
    tried_departments: tuple[str, ...] = ()
    applied_decisions: tuple[str, ...] = ()
    return_count: int = 0
    handling_round: int = 1
    pending_extension: PendingExtension | None = None
    rating: Rating | None = None
    flagged: bool = False
    linked_case_id: str | None = None
    closed_at: datetime | None = None
    replied_at: datetime | None = None
    publishable: bool = False  # its redacted text may be shown on the public board
    notices: tuple[Notice, ...] = ()
    callbacks: tuple[Callback, ...] = ()

    def open_notice_units(self) -> list[str]:
        return sorted({n.department_id for n in self.notices if n.open})
    pending_reply: PendingReply | None = None


# --------------------------------------------------------------------------------------------------
# Commands
# --------------------------------------------------------------------------------------------------


class Command:
    action: ClassVar[Action]
    actor: ClassVar[Actor]


@dataclass(frozen=True)
class ApplyDecision(Command):
    decision: RoutingDecision
    actor: ClassVar[Actor] = Actor.ROUTER

    @property
    def action(self) -> Action:  # type: ignore[override]
        return {
            RoutingOutcome.ASSIGNED: Action.ASSIGN,
            RoutingOutcome.TRIAGE: Action.TRIAGE,
            RoutingOutcome.DUPLICATE: Action.LINK,
        }[self.decision.outcome]


@dataclass(frozen=True)
class Sign(Command):
    action: ClassVar[Action] = Action.SIGN
    actor: ClassVar[Actor] = Actor.DEPARTMENT


@dataclass(frozen=True)
class Return(Command):
    reason: str
    window_working_days: int = 2
    action: ClassVar[Action] = Action.RETURN
    actor: ClassVar[Actor] = Actor.DEPARTMENT


@dataclass(frozen=True)
class RequestExtension(Command):
    reason: str
    extra_working_days: int
    action: ClassVar[Action] = Action.REQUEST_EXTENSION
    actor: ClassVar[Actor] = Actor.DEPARTMENT


@dataclass(frozen=True)
class ApproveExtension(Command):
    action: ClassVar[Action] = Action.APPROVE_EXTENSION
    actor: ClassVar[Actor] = Actor.SUPERVISOR


@dataclass(frozen=True)
class DenyExtension(Command):
    reason: str | None = None
    action: ClassVar[Action] = Action.DENY_EXTENSION
    actor: ClassVar[Actor] = Actor.SUPERVISOR


@dataclass(frozen=True)
class Reply(Command):
    text: str
    needs_approval: bool = False  # the unit wants its lead to approve replies before they go public
    template_id: str | None = None
    action: ClassVar[Action] = Action.REPLY
    actor: ClassVar[Actor] = Actor.DEPARTMENT


@dataclass(frozen=True)
class ApproveReply(Command):
    action: ClassVar[Action] = Action.APPROVE_REPLY
    actor: ClassVar[Actor] = Actor.DEPARTMENT


@dataclass(frozen=True)
class RejectReply(Command):
    reason: str
    action: ClassVar[Action] = Action.REJECT_REPLY
    actor: ClassVar[Actor] = Actor.DEPARTMENT


@dataclass(frozen=True)
class Rate(Command):
    rating: Rating
    reason: str | None = None
    auto_reopen_on_unsatisfied: bool = False
    reopen_working_days: int = 5
    action: ClassVar[Action] = Action.RATE
    actor: ClassVar[Actor] = Actor.CITIZEN


@dataclass(frozen=True)
class Reopen(Command):
    reason: str
    working_days: int = 5
    automatic: bool = False
    action: ClassVar[Action] = Action.REOPEN
    actor: ClassVar[Actor] = Actor.SUPERVISOR


@dataclass(frozen=True)
class Close(Command):
    reason: str
    automatic: bool = False
    disposition: ev.Disposition = ev.Disposition.RESOLVED
    invalid_reason: ev.InvalidReason | None = None
    action: ClassVar[Action] = Action.CLOSE
    actor: ClassVar[Actor] = Actor.SUPERVISOR


@dataclass(frozen=True)
class Flag(Command):
    note: str | None = None
    action: ClassVar[Action] = Action.FLAG
    actor: ClassVar[Actor] = Actor.SUPERVISOR


@dataclass(frozen=True)
class Reassign(Command):
    category: str
    category_name: str
    department_id: str
    department_name: str
    reason: str
    working_days: int = 5
    working_days_by_kind: tuple[tuple[str, int], ...] = ()  # (kind, days): the case's kind picks its deadline
    action: ClassVar[Action] = Action.REASSIGN
    actor: ClassVar[Actor] = Actor.SUPERVISOR


@dataclass(frozen=True)
class Moderate(Command):
    """``title``/``body`` are the publishable texts (already redacted); ``corrected`` when they changed."""

    title: str
    body: str
    corrected: bool
    action: ClassVar[Action] = Action.MODERATE
    actor: ClassVar[Actor] = Actor.SUPERVISOR


@dataclass(frozen=True)
class IssueNotice(Command):
    method: NoticeMethod
    note: str
    reply_by: date
    action: ClassVar[Action] = Action.NOTICE
    actor: ClassVar[Actor] = Actor.SUPERVISOR


@dataclass(frozen=True)
class AnswerNotice(Command):
    notice_id: str
    text: str
    action: ClassVar[Action] = Action.ANSWER_NOTICE
    actor: ClassVar[Actor] = Actor.DEPARTMENT


@dataclass(frozen=True)
class RecordCallback(Command):
    reached: bool
    note: str
    rating: Rating | None = None
    auto_reopen_on_unsatisfied: bool = False
    reopen_working_days: int = 5
    action: ClassVar[Action] = Action.CALLBACK
    actor: ClassVar[Actor] = Actor.SUPERVISOR


@dataclass(frozen=True)
class Outcome:
    case: Case
    events: list[ev.CaseEvent]
    internal_notes: list[tuple[str, str]] = dataclasses.field(default_factory=list)  # (type, note) staff only


# --------------------------------------------------------------------------------------------------
# Deciding
# --------------------------------------------------------------------------------------------------


class _Builder:
    """Numbers the events of one command: each event's version is the case version after it."""

    def __init__(self, case: Case, now: datetime, actor_id: str | None = None) -> None:
        self.case = case
        self.now = now
        self.actor_id = actor_id
        self.events: list[ev.CaseEvent] = []

    def add(self, model: type[ev.CaseEvent], actor: Actor, **fields: Any) -> None:
        version = self.case.version + len(self.events) + 1
        by_staff = actor in (Actor.DEPARTMENT, Actor.SUPERVISOR, Actor.ADMIN)
        self.events.append(model(case_id=self.case.case_id, tracking_number=self.case.tracking_number,
                                 version=version, occurred_at=self.now, actor=actor,
                                 actor_id=self.actor_id if by_staff else None, **fields))

    def outcome(self, **changes: Any) -> Outcome:
        new_case = dataclasses.replace(self.case, version=self.case.version + len(self.events), **changes)
        return Outcome(new_case, self.events)

    def internal(self, kind: str, note: str, **changes: Any) -> Outcome:
        """A change only staff see (a reply waiting for approval): no public event; the version still moves,
        so a concurrent command on the old version fails and retries."""
        new_case = dataclasses.replace(self.case, version=self.case.version + 1, **changes)
        return Outcome(new_case, [], [(kind, note)])


def next_status(status: CaseStatus, action: Action) -> CaseStatus:
    try:
        return TRANSITIONS[status, action]
    except KeyError:
        raise IllegalTransition(status, action) from None


def decide(case: Case, command: Command, now: datetime, calendar: WorkCalendar | None = None, *,
           actor_id: str | None = None) -> Outcome:
    """Check the transition and its guards; return the new case and its events (or raise).
    ``actor_id`` is the acting staff member's opaque id, carried by the events they cause."""
    calendar = calendar or default_calendar()
    if isinstance(command, ApplyDecision):
        _check_decision_is_current(case, command.decision)
    target = next_status(case.status, command.action)
    b = _Builder(case, now, actor_id)
    match command:
        case ApplyDecision(decision=d):
            return _apply_decision(b, d, target, calendar)
        case Sign():
            b.add(ev.CaseSigned, command.actor, department_id=_unit(case))
            return b.outcome(status=target)
        case Return(reason=reason, window_working_days=window):
            _guard_return_window(case, now, calendar, window)
            b.add(ev.CaseReturned, command.actor, department_id=_unit(case), reason=reason,
                  return_count=case.return_count + 1)
            tried = (*case.tried_departments, _unit(case))
            # nobody is responsible while the router looks again: the unit that returned it no longer is
            return b.outcome(status=target, return_count=case.return_count + 1, routing_round=case.routing_round + 1,
                             routing_source_version=b.events[-1].version, tried_departments=tried,
                             pending_extension=None, pending_reply=None, department_id=None, department_name=None,
                             deadline=None)
        case RequestExtension(reason=reason, extra_working_days=days):
            if case.pending_extension is not None:
                raise RuleViolation("extension_pending", "an extension request is already waiting for a supervisor")
            b.add(ev.CaseExtensionRequested, command.actor, department_id=_unit(case), reason=reason,
                  extra_working_days=days)
            return b.outcome(status=target, pending_extension=PendingExtension(reason, days, now))
        case ApproveExtension():
            pending = _pending(case)
            previous = case.deadline or now
            deadline = calendar.add_working_days(previous - timedelta(microseconds=1), pending.extra_working_days)
            b.add(ev.CaseExtended, command.actor, department_id=_unit(case), previous_deadline=previous,
                  deadline=deadline, extra_working_days=pending.extra_working_days)
            return b.outcome(status=target, deadline=deadline, pending_extension=None)
        case DenyExtension(reason=reason):
            _pending(case)
            b.add(ev.CaseExtensionDenied, command.actor, department_id=_unit(case), reason=reason)
            return b.outcome(status=target, pending_extension=None)
        case Reply(text=text, needs_approval=needs_approval, template_id=template_id):
            if case.pending_reply is not None:
                raise RuleViolation("reply_pending", "a reply is already waiting for the unit lead's approval")
            if needs_approval:
                pending = PendingReply(text=text, author_id=actor_id, submitted_at=now, template_id=template_id)
                return b.internal("reply_submitted", "答复已提交，待单位负责人审核", pending_reply=pending)
            return _publish_reply(b, text, target)
        case ApproveReply():
            if case.pending_reply is None:
                raise RuleViolation("no_pending_reply", "there is no reply waiting for approval")
            return _publish_reply(b, case.pending_reply.text, target)
        case RejectReply(reason=reason):
            if case.pending_reply is None:
                raise RuleViolation("no_pending_reply", "there is no reply waiting for approval")
            return b.internal("reply_rejected", f"答复未通过审核：{reason}", pending_reply=None)
        case Rate():
            return _rate(b, command.rating, command.reason, command.actor, RatingSource.CITIZEN,
                         command.auto_reopen_on_unsatisfied, command.reopen_working_days, calendar)
        case Moderate(title=title, body=body, corrected=corrected):
            b.add(ev.CaseModerated, command.actor, title=title, body=body, corrected=corrected)
            return b.outcome(publishable=True)
        case IssueNotice():
            return _issue_notice(b, command)
        case AnswerNotice(notice_id=notice_id, text=text):
            return _answer_notice(b, notice_id, text)
        case RecordCallback():
            return _callback(b, command, calendar)
        case Reopen(reason=reason, working_days=days, automatic=automatic):
            return _reopen(b, reason, days, automatic, command.actor, calendar)
        case Close(reason=reason, automatic=automatic, disposition=disposition, invalid_reason=invalid_reason):
            if (disposition is ev.Disposition.INVALID) != (invalid_reason is not None):
                raise RuleViolation("invalid_reason_required",
                                    "closing as invalid needs an invalid_reason, and only then", "invalid_reason")
            b.add(ev.CaseClosed, command.actor, reason=reason, department_id=case.department_id, automatic=automatic,
                  disposition=disposition, invalid_reason=invalid_reason)
            return b.outcome(status=target, closed_at=now, pending_extension=None, pending_reply=None)
        case Flag(note=note):
            b.add(ev.CaseFlagged, command.actor, note=note)
            return b.outcome(flagged=True)
        case Reassign():
            days = dict(command.working_days_by_kind).get(case.kind.value, command.working_days)
            command = dataclasses.replace(command, working_days=days)
            deadline = calendar.add_working_days(now, command.working_days)
            # a supervisor's decision is named by the case and the version it makes: unique, and no random draw
            version = case.version + len(b.events) + 1
            b.add(ev.CaseAssigned, command.actor, decision_id=f"supervisor:{case.case_id}:{version}",
                  category=command.category, category_name=command.category_name,
                  department_id=command.department_id, department_name=command.department_name,
                  county=case.county, township=case.township, kind=case.kind, deadline=deadline,
                  working_days=command.working_days, confidence=1.0, reasons=[command.reason[:500]],
                  model_version="supervisor", routing_round=case.routing_round, reassigned=True)
            return b.outcome(status=target, category=command.category, category_name=command.category_name,
                             department_id=command.department_id, department_name=command.department_name,
                             deadline=deadline, assigned_at=now, working_days=command.working_days,
                             pending_extension=None, pending_reply=None)
    raise TypeError(f"unknown command {type(command).__name__}")  # pragma: no cover


def _publish_reply(b: _Builder, text: str, target: CaseStatus) -> Outcome:
    case, now = b.case, b.now
    deadline = case.deadline or now
    b.add(ev.CaseReplied, Actor.DEPARTMENT, department_id=_unit(case), reply=text, deadline=deadline,
          on_time=now <= deadline, handling_round=case.handling_round)
    return b.outcome(status=target, pending_extension=None, replied_at=now, pending_reply=None)


def _unit(case: Case) -> str:
    if case.department_id is None:  # pragma: no cover - the table never lets this happen
        raise RuleViolation("no_department", "the case has no responsible unit")
    return case.department_id


def _pending(case: Case) -> PendingExtension:
    if case.pending_extension is None:
        raise RuleViolation("no_pending_extension", "there is no extension request waiting for a decision")
    return case.pending_extension


def _guard_return_window(case: Case, now: datetime, calendar: WorkCalendar, window_days: int = 2) -> None:
    if case.assigned_at is None:
        return
    until = calendar.add_working_days(case.assigned_at, window_days)
    if now > until:
        raise RuleViolation(
            "return_window_closed",
            f"a case can only be returned within {window_days} working days of assignment "
            f"(assigned {case.assigned_at.isoformat()}, window closed {until.isoformat()})",
            "reason",
        )


def _rate(b: _Builder, rating: Rating, reason: str | None, actor: Actor, given_by: RatingSource,
          auto_reopen: bool, reopen_days: int, calendar: WorkCalendar, **changes: Any) -> Outcome:
    """The citizen's rating, given online or through a callback: the same effect either way."""
    case = b.case
    b.add(ev.CaseRated, actor, department_id=case.department_id, rating=rating, reason=reason,
          handling_round=case.handling_round, given_by=given_by)
    if rating in (Rating.SATISFIED, Rating.BASICALLY_SATISFIED):
        b.add(ev.CaseClosed, Actor.SYSTEM, reason="群众满意，自动办结", department_id=case.department_id,
              automatic=True)
        return b.outcome(status=S.CLOSED, rating=rating, closed_at=b.now, **changes)
    if auto_reopen:
        b.case = dataclasses.replace(case, rating=rating, **changes)
        return _reopen(b, "群众不满意，自动二次办理", reopen_days, True, Actor.SYSTEM, calendar)
    return b.outcome(status=next_status(case.status, Action.RATE), rating=rating, **changes)


def _issue_notice(b: _Builder, command: IssueNotice) -> Outcome:
    case = b.case
    if command.reply_by < local_date(b.now):
        raise RuleViolation("reply_by_past", "the reply-by day of a notice cannot be in the past", "reply_by")
    notice = Notice(notice_id=f"n{len(case.notices) + 1}", department_id=_unit(case), method=command.method,
                    note=command.note, reply_by=command.reply_by, issued_at=b.now)
    b.add(ev.CaseNoticeIssued, command.actor, notice_id=notice.notice_id, department_id=notice.department_id,
          method=notice.method, note=notice.note, reply_by=notice.reply_by)
    return b.outcome(notices=(*case.notices, notice))


def _answer_notice(b: _Builder, notice_id: str, text: str) -> Outcome:
    case = b.case
    notice = next((n for n in case.notices if n.notice_id == notice_id), None)
    if notice is None:
        raise RuleViolation("no_such_notice", f"the case has no notice {notice_id}", "notice_id")
    if not notice.open:
        raise RuleViolation("notice_answered", f"notice {notice_id} was already answered", "notice_id")
    on_time = local_date(b.now) <= notice.reply_by
    b.add(ev.CaseNoticeAnswered, Actor.DEPARTMENT, notice_id=notice_id, department_id=notice.department_id,
          text=text, on_time=on_time)
    answered = dataclasses.replace(notice, answer=text, answered_at=b.now)
    return b.outcome(notices=tuple(answered if n.notice_id == notice_id else n for n in case.notices))


def _callback(b: _Builder, command: RecordCallback, calendar: WorkCalendar) -> Outcome:
    case = b.case
    rating = command.rating
    if rating is not None and not command.reached:
        raise RuleViolation("not_reached", "a rating needs a citizen who was reached", "rating")
    if rating is not None and case.status is not S.REPLIED:
        raise RuleViolation("not_awaiting_rating", f"only a replied case can be rated, this one is {case.status}",
                            "rating")
    callback = Callback(callback_id=f"cb{len(case.callbacks) + 1}", reached=command.reached, note=command.note,
                        recorded_at=b.now, rating=rating)
    b.add(ev.CaseCallbackRecorded, command.actor, callback_id=callback.callback_id,
          department_id=case.department_id, reached=command.reached, rating=rating, note=command.note)
    callbacks = (*case.callbacks, callback)
    if rating is None:
        return b.outcome(callbacks=callbacks)
    return _rate(b, rating, None, command.actor, RatingSource.CALLBACK, command.auto_reopen_on_unsatisfied,
                 command.reopen_working_days, calendar, callbacks=callbacks)


def _reopen(b: _Builder, reason: str, days: int, automatic: bool, actor: Actor, calendar: WorkCalendar) -> Outcome:
    case = b.case
    deadline = calendar.add_working_days(b.now, days)
    b.add(ev.CaseReopened, actor, department_id=_unit(case), reason=reason, handling_round=case.handling_round + 1,
          deadline=deadline, automatic=automatic)
    return b.outcome(status=S.REOPENED, handling_round=case.handling_round + 1, deadline=deadline,
                     working_days=days, pending_extension=None, rating=case.rating)


def _check_decision_is_current(case: Case, decision: RoutingDecision) -> None:
    if decision.decision_id in case.applied_decisions:
        raise DecisionIgnored(f"decision {decision.decision_id} already applied")
    if decision.source_version != case.routing_source_version:
        raise DecisionIgnored(
            f"decision answers version {decision.source_version}, the case asked at {case.routing_source_version}")


def _apply_decision(b: _Builder, d: RoutingDecision, target: CaseStatus, calendar: WorkCalendar) -> Outcome:
    case = b.case
    applied = (*case.applied_decisions, d.decision_id)[-50:]
    if d.outcome is RoutingOutcome.ASSIGNED:
        if not d.department_id or not d.category:
            raise MalformedDecision("an assigned decision needs category and department_id")
        days = d.working_days or 5
        deadline = d.deadline or calendar.add_working_days(b.now, days)
        b.add(ev.CaseAssigned, Actor.ROUTER, decision_id=d.decision_id, category=d.category,
              category_name=d.category_name or d.category, department_id=d.department_id,
              department_name=d.department_name or d.department_id, county=d.county, township=d.township,
              kind=d.kind, deadline=deadline, working_days=days, confidence=d.confidence,
              reasons=list(d.reasons), model_version=d.model_version, routing_round=case.routing_round)
        return b.outcome(status=target, category=d.category, category_name=d.category_name or d.category,
                         department_id=d.department_id, department_name=d.department_name or d.department_id,
                         county=d.county or case.county, township=d.township or case.township, kind=d.kind,
                         deadline=deadline, assigned_at=b.now, working_days=days, applied_decisions=applied)
    if d.outcome is RoutingOutcome.TRIAGE:
        reason = "; ".join(d.reasons)[:500] or "routing could not decide"
        b.add(ev.CaseTriaged, Actor.ROUTER, decision_id=d.decision_id, reason=reason, category=d.category,
              candidates=list(d.tried_departments), confidence=d.confidence, county=d.county, township=d.township)
        # the code and its name change together; nobody is responsible until a supervisor assigns it
        category, category_name = (d.category, d.category_name) if d.category else (case.category, case.category_name)
        return b.outcome(status=target, category=category, category_name=category_name, applied_decisions=applied,
                         county=d.county or case.county, township=d.township or case.township,
                         department_id=None, department_name=None, deadline=None)
    if not d.linked_case_id:
        raise MalformedDecision("a duplicate decision needs linked_case_id")
    reason = "; ".join(d.reasons)[:500] or "duplicate of an open case"
    b.add(ev.CaseLinked, Actor.ROUTER, decision_id=d.decision_id, linked_case_id=d.linked_case_id, reason=reason)
    return b.outcome(status=target, linked_case_id=d.linked_case_id, closed_at=b.now, applied_decisions=applied)


# --------------------------------------------------------------------------------------------------
# Small pure helpers: identifiers, secrets, public notes
# --------------------------------------------------------------------------------------------------

TRACKING_ALPHABET = "23456789ABCDEFGHJKLMNPQRSTUVWXYZ"  # no 0/O, 1/I: easy to read out over the phone


def tracking_number(now: datetime, code: str) -> str:
    """``WZ`` + the month + ``code`` (8 characters of TRACKING_ALPHABET, drawn by the caller) in two groups."""
    if len(code) != 8 or set(code) - set(TRACKING_ALPHABET):
        raise ValueError("a tracking code is 8 characters of TRACKING_ALPHABET")
    return f"WZ{now:%y%m}-{code[:4]}-{code[4:]}"


def normalise_tracking_number(text: str) -> str:
    """``wz2612 abcd efgh``, ``WZ2612ABCDEFGH`` and full-width forms all mean ``WZ2612-ABCD-EFGH``."""
    compact = re.sub(r"[^0-9A-Z]", "", unicodedata.normalize("NFKC", text).upper())
    if re.fullmatch(r"WZ\d{4}[0-9A-Z]{8}", compact):
        return f"{compact[:6]}-{compact[6:10]}-{compact[10:]}"
    return unicodedata.normalize("NFKC", text).strip().upper().replace(" ", "")


def poster_ref(secret: str, phone: str) -> str:
    return hmac.new(secret.encode(), phone.encode(), hashlib.sha256).hexdigest()[:32]


def rating_token(secret: str, case_id: str) -> str:
    """Derived, not stored: an idempotent replay can show it again and nothing secret sits in the database."""
    return hmac.new(secret.encode(), f"rating:{case_id}".encode(), hashlib.sha256).hexdigest()[:24]


def is_overdue(case_status: CaseStatus, deadline: datetime | None, now: datetime) -> bool:
    return case_status in OPEN_DEADLINE_STATES and deadline is not None and now > deadline


class Bucket(StrEnum):
    """The inbox of a unit: each case state a person acts on, as the list filter and its count."""

    TO_SIGN = "to_sign"  # 待签收
    HANDLING = "handling"  # 办理中
    DUE_SOON = "due_soon"  # 即将超期: the deadline falls within 1 working day
    OVERDUE = "overdue"  # 已超期
    REOPENED = "reopened"  # 二次办理
    AWAITING_RATING = "awaiting_rating"  # 已回复待评价


@dataclass(frozen=True)
class BucketRule:
    """A bucket as data: the states it holds and, optionally, a window its deadline must fall in.

    The window is ``[after, before)`` as computed by :func:`deadline_window`; the list query and the counts
    both read it, so they cannot disagree."""

    states: tuple[CaseStatus, ...]
    deadline: str | None = None  # None, "due_soon" or "overdue"


BUCKETS: dict[Bucket, BucketRule] = {
    Bucket.TO_SIGN: BucketRule((S.ASSIGNED,)),
    Bucket.HANDLING: BucketRule(HANDLING),
    Bucket.DUE_SOON: BucketRule(OPEN_DEADLINE_STATES, "due_soon"),
    Bucket.OVERDUE: BucketRule(OPEN_DEADLINE_STATES, "overdue"),
    Bucket.REOPENED: BucketRule((S.REOPENED,)),
    Bucket.AWAITING_RATING: BucketRule((S.REPLIED,)),
}
INBOX_STATES = tuple(sorted({s for rule in BUCKETS.values() for s in rule.states}))


def deadline_window(rule: BucketRule, now: datetime,
                    calendar: WorkCalendar | None = None) -> tuple[datetime | None, datetime | None]:
    """``(after, before)``: the deadline must be ``>= after`` and ``< before`` (None: unbounded)."""
    if rule.deadline == "overdue":
        return None, now
    if rule.deadline == "due_soon":
        calendar = calendar or default_calendar()
        # a deadline exactly 1 working day away is due soon; 1 ms is what MongoDB keeps of a datetime
        return now, calendar.add_working_days(now, 1) + timedelta(milliseconds=1)
    return None, None


def in_bucket(bucket: Bucket, status: CaseStatus, deadline: datetime | None, now: datetime,
              calendar: WorkCalendar | None = None) -> bool:
    rule = BUCKETS[bucket]
    if status not in rule.states:
        return False
    if rule.deadline is None:
        return True
    after, before = deadline_window(rule, now, calendar)
    return deadline is not None and (after is None or deadline >= after) and (before is None or deadline < before)


def public_note(event: ev.CaseEvent) -> str | None:
    match event:
        case ev.CaseSubmitted():
            return "诉求已受理"
        case ev.CaseAssigned(department_name=name, reassigned=reassigned):
            return f"{'改派' if reassigned else '已转交'}{name}办理"
        case ev.CaseTriaged():
            return "人工分派中"
        case ev.CaseLinked():
            return "与已受理的相同诉求合并办理"
        case ev.CaseSigned():
            return "承办单位已签收"
        case ev.CaseReturned():
            return "承办单位退回，重新分派中"
        case ev.CaseExtensionRequested():
            return "承办单位申请延期"
        case ev.CaseExtended(deadline=deadline):
            return f"延期已批准，新办理期限 {people_deadline(deadline)}"
        case ev.CaseExtensionDenied():
            return "延期申请未获批准"
        case ev.CaseReplied():
            return "承办单位已答复"
        case ev.CaseRated():
            return "群众已评价"
        case ev.CaseReopened():
            return "二次办理"
        case ev.CaseClosed():
            return "已办结"
        case ev.CaseFlagged():
            return "列为典型案例"
        case ev.CaseModerated():
            return "内容已审核公开"
        case ev.CaseNoticeIssued():
            return "督办"
        case ev.CaseNoticeAnswered():
            return "承办单位已回复督办"
        case ev.CaseCallbackRecorded():
            return "回访"
    return None  # pragma: no cover
