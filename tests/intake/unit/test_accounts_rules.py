"""The pure rules for people: who may do what, passwords, lock-out, quiet hours, reply approval."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from services.common.events import CaseReplied, CaseStatus
from services.common.workdays import in_quiet_hours, quiet_hours_end
from services.intake import domain
from services.intake.accounts import (
    PERMISSIONS,
    Principal,
    Role,
    locked_for,
    password_problem,
    permitted_actions,
    validate_roles,
)
from services.intake.domain import Case

T0 = datetime(2026, 10, 12, 2, 0, tzinfo=UTC)  # a Monday, 10:00 in Shanghai


def person(*roles: Role, unit: str | None = None) -> Principal:
    return Principal(person_id="p-0000000000000001", username="u", display_name="某人", roles=frozenset(roles),
                     unit_id=unit)


def test_the_permission_table_names_every_contract_action():
    contract = {"sign", "reply", "approve_reply", "reject_reply", "return", "request_extension", "reveal_contact",
                "answer_notice", "approve_extension", "deny_extension", "reassign", "reopen", "close", "flag",
                "notice", "callback", "moderate"}
    assert set(PERMISSIONS) == contract


@pytest.mark.parametrize(("who", "unit", "allowed"), [
    (person(Role.UNIT_STAFF, unit="a"), "a", {"sign", "reply", "return", "request_extension", "answer_notice",
                                              "reveal_contact"}),
    (person(Role.UNIT_STAFF, unit="a"), "b", set()),
    (person(Role.UNIT_LEAD, unit="a"), "a", {"sign", "reply", "return", "request_extension", "answer_notice",
                                             "reveal_contact", "approve_reply", "reject_reply"}),
    (person(Role.SUPERVISOR), "a", {"approve_extension", "deny_extension", "reassign", "reopen", "close", "flag",
                                    "notice", "callback", "reveal_contact", "moderate"}),
    (person(Role.ADMIN), "a", set()),
    (person(Role.ADMIN, Role.SUPERVISOR), "a", {"approve_extension", "deny_extension", "reassign", "reopen", "close",
                                                "flag", "notice", "callback", "reveal_contact", "moderate"}),
])
def test_who_may_do_what(who, unit, allowed):
    assert set(permitted_actions(who, PERMISSIONS, unit)) == allowed
    assert who.may_read(unit) == bool(allowed)


def test_a_lead_acts_as_lead_and_a_supervisor_in_a_unit_case_as_supervisor():
    lead = person(Role.UNIT_LEAD, Role.UNIT_STAFF, unit="a")
    assert lead.acting_role("sign", "a") is Role.UNIT_LEAD
    assert person(Role.SUPERVISOR).acting_role("reveal_contact", "a") is Role.SUPERVISOR
    assert person(Role.SUPERVISOR).acting_role("sign", "a") is None


@pytest.mark.parametrize(("roles", "unit", "ok"), [
    ([Role.UNIT_STAFF], "a", True), ([Role.UNIT_STAFF], None, False), ([Role.SUPERVISOR], "a", False),
    ([Role.SUPERVISOR, Role.ADMIN], None, True), ([], None, False),
])
def test_roles_and_units_go_together(roles, unit, ok):
    assert (validate_roles(roles, unit) is None) == ok


@pytest.mark.parametrize(("password", "ok"), [
    ("short", False), ("password123", False), ("qwerty123456", False), ("Password1!", False),
    ("aaaaaaaaaaaa", False), ("woaini1314", False), ("x" * 300, False),
    ("lamp-post-river-7", True), ("赣州市章贡区路灯很亮", True),
])
def test_password_policy(password, ok):
    assert (password_problem(password) is None) == ok


def test_a_password_must_not_contain_the_user_name():
    assert password_problem("zhangsan-is-here-1", "zhangsan")


def test_five_failures_in_fifteen_minutes_lock_for_the_rest_of_the_window():
    failures = [T0 + timedelta(minutes=m) for m in (0, 1, 2, 3)]
    assert locked_for(failures, T0 + timedelta(minutes=4)) is None
    failures.append(T0 + timedelta(minutes=4))
    assert locked_for(failures, T0 + timedelta(minutes=5)) == pytest.approx(10 * 60)
    assert locked_for(failures, T0 + timedelta(minutes=15, seconds=1)) is None  # the first one left the window


@pytest.mark.parametrize(("local", "quiet"), [("22:00", True), ("23:59", True), ("03:00", True), ("07:29", True),
                                              ("07:30", False), ("12:00", False), ("21:59", False)])
def test_quiet_hours_cross_midnight_in_shanghai(local, quiet):
    hours, minutes = map(int, local.split(":"))
    moment = datetime(2026, 10, 12, hours, minutes, tzinfo=UTC) - timedelta(hours=8)  # Shanghai = UTC+8
    assert in_quiet_hours(moment, "22:00", "07:30") is quiet


def test_quiet_hours_end_is_the_next_morning():
    late = datetime(2026, 10, 12, 15, 0, tzinfo=UTC)  # 23:00 Shanghai
    assert quiet_hours_end(late, "22:00", "07:30") == datetime(2026, 10, 12, 23, 30, tzinfo=UTC)


def signed_case() -> Case:
    return Case(case_id="c-1", tracking_number="WZ2610-AAAA-BBBB", version=3, status=CaseStatus.SIGNED, created_at=T0,
                department_id="zhanggong_gov", department_name="章贡区人民政府", deadline=T0 + timedelta(days=7))


def test_a_reply_that_needs_approval_publishes_nothing_until_the_lead_approves():
    case = signed_case()
    pending = domain.decide(case, domain.Reply("已修复", needs_approval=True, template_id="t-1"), T0,
                            actor_id="p-00000000000000aa")
    assert pending.events == [] and pending.case.status is CaseStatus.SIGNED
    assert pending.case.version == 4 and pending.case.pending_reply.author_id == "p-00000000000000aa"
    assert pending.internal_notes[0][0] == "reply_submitted"
    assert "reply" not in domain.available_actions(pending.case)
    assert {"approve_reply", "reject_reply"} <= set(domain.available_actions(pending.case))
    with pytest.raises(domain.RuleViolation):
        domain.decide(pending.case, domain.Reply("again"), T0)

    approved = domain.decide(pending.case, domain.ApproveReply(), T0, actor_id="p-00000000000000bb")
    [event] = approved.events
    assert isinstance(event, CaseReplied) and event.reply == "已修复" and event.actor_id == "p-00000000000000bb"
    assert approved.case.status is CaseStatus.REPLIED and approved.case.pending_reply is None

    rejected = domain.decide(pending.case, domain.RejectReply("措辞不当"), T0, actor_id="p-00000000000000bb")
    assert rejected.events == [] and rejected.case.pending_reply is None and rejected.case.version == 5
    assert "reply" in domain.available_actions(rejected.case)


def test_approving_without_a_pending_reply_is_refused():
    with pytest.raises(domain.RuleViolation) as refused:
        domain.decide(signed_case(), domain.ApproveReply(), T0)
    assert refused.value.code == "no_pending_reply"


def test_staff_events_carry_the_actor_id_and_follow_ups_do_not():
    outcome = domain.decide(signed_case(), domain.Reply("好"), T0, actor_id="p-00000000000000aa")
    assert outcome.events[0].actor_id == "p-00000000000000aa"
    replied = outcome.case
    rated = domain.decide(replied, domain.Rate(rating="satisfied"), T0)
    assert [e.actor_id for e in rated.events] == [None, None]  # the citizen's rating and the automatic close
