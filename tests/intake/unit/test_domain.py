"""The state machine, pure: the table, the guards, and a Hypothesis stateful test."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from services.common import events as ev
from services.common.events import CaseStatus as S
from services.common.events import Rating, RoutingDecision
from services.intake import domain, handlers
from services.intake.domain import Action, Case, DecisionIgnored, IllegalTransition, RuleViolation, decide
from services.intake.ratelimit import SlidingWindowLimiter

T0 = datetime(2026, 11, 23, 2, 0, tzinfo=UTC)  # a Monday


def new_case(**changes: object) -> Case:
    base = Case(case_id="c-1", tracking_number="WZ2611-ABCD-EFGH", version=1, status=S.SUBMITTED, created_at=T0)
    return Case(**{**base.__dict__, **changes})


def decision(outcome: str = "assigned", source_version: int = 1, decision_id: str = "d1", **extra: object):
    fields = {"category": "urban_management", "department_id": "zhanggong_gov"} if outcome == "assigned" else {}
    fields.update(extra)
    return domain.ApplyDecision(RoutingDecision(
        decision_id=decision_id, case_id="c-1", source_event_id="e1", source_version=source_version,
        routing_round=1, outcome=outcome, confidence=0.8, model_version="m", decided_at=T0, **fields))


def test_happy_path_satisfied_closes_automatically() -> None:
    out = decide(new_case(), decision(), T0)
    assert out.case.status is S.ASSIGNED and out.case.version == 2 and out.case.deadline is not None
    out = decide(out.case, domain.Sign(), T0)
    out = decide(out.case, domain.Reply("已处理"), T0 + timedelta(hours=1))
    assert out.events[0].on_time is True
    out = decide(out.case, domain.Rate(Rating.BASICALLY_SATISFIED), T0 + timedelta(days=1))
    assert [type(e) for e in out.events] == [ev.CaseRated, ev.CaseClosed]
    assert [e.version for e in out.events] == [5, 6] and out.case.version == 6
    assert out.events[1].automatic is True and out.case.status is S.CLOSED


def test_unsatisfied_waits_for_a_supervisor_unless_auto_reopen() -> None:
    replied = new_case(status=S.REPLIED, version=4, department_id="u1", deadline=T0)
    waiting = decide(replied, domain.Rate(Rating.UNSATISFIED, "没解决"), T0)
    assert waiting.case.status is S.RATED and len(waiting.events) == 1
    auto = decide(replied, domain.Rate(Rating.UNSATISFIED, auto_reopen_on_unsatisfied=True), T0)
    assert auto.case.status is S.REOPENED and auto.case.handling_round == 2
    assert isinstance(auto.events[1], ev.CaseReopened) and auto.events[1].automatic
    assert auto.case.deadline > T0


def test_illegal_transition_names_state_and_allowed_actions() -> None:
    with pytest.raises(IllegalTransition) as info:
        decide(new_case(), domain.Reply("x"), T0)
    assert info.value.status is S.SUBMITTED and "assign" in info.value.allowed
    assert "submitted" in info.value.message


def test_return_only_within_two_working_days() -> None:
    assigned = new_case(status=S.ASSIGNED, department_id="u1", assigned_at=T0, deadline=T0 + timedelta(days=7))
    out = decide(assigned, domain.Return("不属于本单位"), T0 + timedelta(days=1))
    assert out.case.status is S.RETURNED and out.case.routing_round == 2
    assert out.case.routing_source_version == out.events[0].version and out.case.tried_departments == ("u1",)
    with pytest.raises(RuleViolation) as info:
        decide(assigned, domain.Return("不属于本单位"), T0 + timedelta(days=5))
    assert info.value.code == "return_window_closed"


def test_decisions_are_applied_once_and_only_when_current() -> None:
    out = decide(new_case(), decision(), T0)
    with pytest.raises(DecisionIgnored):
        decide(new_case(applied_decisions=("d1",)), decision(), T0)
    with pytest.raises(DecisionIgnored):
        decide(new_case(routing_source_version=3, status=S.RETURNED), decision(source_version=1), T0)
    with pytest.raises(domain.MalformedDecision):
        decide(new_case(), decision(outcome="duplicate"), T0)
    assert out.case.applied_decisions == ("d1",)


def test_extension_moves_the_deadline_by_working_days() -> None:
    deadline = datetime(2026, 11, 27, 16, 0, tzinfo=UTC)  # end of Friday 27 Nov, Shanghai
    signed = new_case(status=S.SIGNED, department_id="u1", deadline=deadline, version=3)
    asked = decide(signed, domain.RequestExtension("勘查", 2), T0)
    approved = decide(asked.case, domain.ApproveExtension(), T0)
    assert approved.case.deadline == datetime(2026, 12, 1, 16, 0, tzinfo=UTC)  # Mon, Tue
    assert approved.case.status is S.EXTENDED and approved.case.pending_extension is None


def test_tracking_numbers_are_readable_and_distinct() -> None:
    numbers = {handlers.new_tracking_number(T0) for _ in range(2000)}
    assert len(numbers) == 2000
    assert all(n.startswith("WZ2611-") and not set(n[7:].replace("-", "")) - set(domain.TRACKING_ALPHABET)
               for n in numbers)


def test_sliding_window_limiter() -> None:
    now = [0.0]
    limiter = SlidingWindowLimiter(2, 10, clock=lambda: now[0])
    assert limiter.check("a") is None and limiter.check("a") is None
    assert limiter.check("a") == pytest.approx(10)
    now[0] = 10.5
    assert limiter.check("a") is None


# --------------------------------------------------------------------------------------------------
# Stateful property test
# --------------------------------------------------------------------------------------------------

COMMANDS = st.sampled_from([
    domain.Sign(), domain.Return("不属于本单位"), domain.RequestExtension("勘查", 3), domain.ApproveExtension(),
    domain.DenyExtension("不批准"), domain.Reply("已办理"), domain.Rate(Rating.SATISFIED),
    domain.Rate(Rating.UNSATISFIED), domain.Rate(Rating.UNSATISFIED, auto_reopen_on_unsatisfied=True),
    domain.Reopen("二次办理"), domain.Close("办结"), domain.Flag("典型"),
    domain.Reassign("transport", "交通出行", "u2", "市交通运输局", "改派"),
])


class CaseMachine(RuleBasedStateMachine):
    @initialize()
    def start(self) -> None:
        self.case = new_case()
        self.now = T0
        self.decisions = 0
        self.versions_seen: list[int] = [1]

    def _apply(self, command: domain.Command) -> None:
        before = self.case
        try:
            out = decide(before, command, self.now)
        except (IllegalTransition, RuleViolation, DecisionIgnored) as exc:
            if isinstance(exc, IllegalTransition):
                assert (before.status, command.action) not in domain.TRANSITIONS
            assert self.case == before  # a refused command changes nothing
            return
        assert out.events, "an accepted command always produces an event"
        assert [e.version for e in out.events] == list(range(before.version + 1, before.version + 1 + len(out.events)))
        assert out.case.version == out.events[-1].version
        for event in out.events:  # every event is a valid, publishable contract
            ev.make_event(event, source="urn:test")
            self.versions_seen.append(event.version)
        if command.action is not Action.RATE:
            assert out.case.status is domain.TRANSITIONS[before.status, command.action]
        self.case = out.case

    @rule(command=COMMANDS, hours=st.integers(0, 200))
    def act(self, command: domain.Command, hours: int) -> None:
        self.now += timedelta(hours=hours)
        self._apply(command)

    @precondition(lambda self: self.case.status in (S.SUBMITTED, S.RETURNED))
    @rule(outcome=st.sampled_from(["assigned", "triage", "duplicate"]), stale=st.booleans())
    def route(self, outcome: str, stale: bool) -> None:
        self.decisions += 1
        source = self.case.routing_source_version - (1 if stale else 0)
        self._apply(decision(outcome, max(1, source), f"d{self.decisions}", linked_case_id="c-0"))

    @invariant()
    def consistent(self) -> None:
        case = self.case
        assert self.versions_seen == list(range(1, case.version + 1))
        if case.status in domain.OPEN_DEADLINE_STATES:
            assert case.department_id is not None and case.deadline is not None
        if case.status is S.CLOSED:
            assert case.closed_at is not None
        assert case.handling_round >= 1 and case.return_count >= 0


TestCaseMachine = CaseMachine.TestCase
TestCaseMachine.settings = settings(max_examples=150, stateful_step_count=30, deadline=None,
                                    suppress_health_check=[HealthCheck.too_slow])


def test_a_reassignment_takes_the_deadline_of_the_case_kind_from_the_reference_data() -> None:
    from services.common.reference import reference
    from services.intake.handlers import IntakeService

    namer = type("Namer", (), {"reference": reference()})()
    command = IntakeService.reassign_command(namer, "urban_management", "zhanggong_gov", "改派")
    start = datetime(2026, 11, 2, 2, tzinfo=UTC)
    for kind, days in (("inquiry", 3), ("complaint", 5)):
        case = domain.Case(case_id="c-k", tracking_number="WZ2611-KIND-TEST", version=1,
                           status=S.TRIAGE, created_at=start, kind=ev.PostKind(kind))
        outcome = domain.decide(case, command, start)
        assert outcome.case.working_days == days and outcome.events[0].working_days == days
