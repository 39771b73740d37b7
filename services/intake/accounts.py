"""People, roles and what each may do, pure: the permission table, the password policy, the lock-out rule,
and the token helpers. No I/O; the accounts store and service use these."""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from functools import lru_cache
from pathlib import Path

COMMON_PASSWORDS_FILE = Path(__file__).with_name("data") / "common-passwords.txt"
MIN_PASSWORD_LENGTH = 10
MAX_PASSWORD_LENGTH = 256
USERNAME_PATTERN = r"^[a-z0-9][a-z0-9_.-]{1,63}$"
PERSON_ID_PATTERN = r"^p-[a-f0-9]{16}$"


class Role(StrEnum):
    UNIT_STAFF = "unit_staff"
    UNIT_LEAD = "unit_lead"
    SUPERVISOR = "supervisor"
    ADMIN = "admin"


UNIT_ROLES = frozenset({Role.UNIT_STAFF, Role.UNIT_LEAD})
ROLE_NAMES = {Role.UNIT_STAFF: "承办人员", Role.UNIT_LEAD: "单位负责人", Role.SUPERVISOR: "督办人员",
              Role.ADMIN: "系统管理员"}


# --------------------------------------------------------------------------------------------------
# Who may do what: the case actions of docs/people-api.md, each with the roles that may take it.
# A unit role acts only on its own unit's cases; a supervisor on every case; admin alone on none.
# --------------------------------------------------------------------------------------------------

UNIT_WORK = frozenset({Role.UNIT_STAFF, Role.UNIT_LEAD})
PERMISSIONS: dict[str, frozenset[Role]] = {
    "sign": UNIT_WORK,
    "reply": UNIT_WORK,
    "return": UNIT_WORK,
    "request_extension": UNIT_WORK,
    "answer_notice": UNIT_WORK,
    "approve_reply": frozenset({Role.UNIT_LEAD}),
    "reject_reply": frozenset({Role.UNIT_LEAD}),
    "reveal_contact": frozenset({Role.UNIT_STAFF, Role.UNIT_LEAD, Role.SUPERVISOR}),
    "approve_extension": frozenset({Role.SUPERVISOR}),
    "deny_extension": frozenset({Role.SUPERVISOR}),
    "reassign": frozenset({Role.SUPERVISOR}),
    "reopen": frozenset({Role.SUPERVISOR}),
    "close": frozenset({Role.SUPERVISOR}),
    "flag": frozenset({Role.SUPERVISOR}),
    "notice": frozenset({Role.SUPERVISOR}),
    "callback": frozenset({Role.SUPERVISOR}),
    "moderate": frozenset({Role.SUPERVISOR}),
}


@dataclass(frozen=True)
class Principal:
    """The signed-in person a request acts for (what the session cache holds)."""

    person_id: str
    username: str
    display_name: str
    roles: frozenset[Role]
    unit_id: str | None = None
    unit_name: str | None = None
    session_id: str | None = None
    via_cookie: bool = False
    must_change_password: bool = False

    @property
    def oversees(self) -> bool:
        """Sees every case: the supervision office."""
        return Role.SUPERVISOR in self.roles

    @property
    def is_admin(self) -> bool:
        return Role.ADMIN in self.roles

    def in_unit(self, unit_id: str | None) -> bool:
        return bool(self.roles & UNIT_ROLES) and unit_id is not None and self.unit_id == unit_id

    def may_read(self, case_unit_id: str | None) -> bool:
        return self.oversees or self.in_unit(case_unit_id)

    def acting_role(self, action: str, case_unit_id: str | None) -> Role | None:
        """The role under which this person may take ``action`` on a case held by ``case_unit_id``
        (the most specific one when several fit), or None."""
        allowed = PERMISSIONS.get(action, frozenset())
        for role in (Role.UNIT_LEAD, Role.UNIT_STAFF):
            if role in allowed and role in self.roles and self.in_unit(case_unit_id):
                return role
        if Role.SUPERVISOR in allowed and self.oversees:
            return Role.SUPERVISOR
        return None

    def may(self, action: str, case_unit_id: str | None) -> bool:
        return self.acting_role(action, case_unit_id) is not None


def permitted_actions(principal: Principal, candidates: Iterable[str], case_unit_id: str | None) -> list[str]:
    """``candidates`` (what the state machine and the unit's settings allow now) ∩ what this person may."""
    return sorted({a for a in candidates if principal.may(a, case_unit_id)})


def validate_roles(roles: Iterable[Role], unit_id: str | None) -> str | None:
    """Why this combination is not allowed, or None."""
    roles = set(roles)
    if not roles:
        return "a person needs at least one role"
    if roles & UNIT_ROLES and not unit_id:
        return "unit_staff and unit_lead belong to a unit: give unit_id"
    if unit_id and not roles & UNIT_ROLES:
        return "only unit_staff and unit_lead belong to a unit"
    return None


# --------------------------------------------------------------------------------------------------
# Passwords
# --------------------------------------------------------------------------------------------------


@lru_cache(maxsize=1)
def common_passwords() -> frozenset[str]:
    lines = COMMON_PASSWORDS_FILE.read_text(encoding="utf-8").splitlines()
    return frozenset(line.strip().lower() for line in lines if line.strip() and not line.startswith("#"))


def password_problem(password: str, username: str | None = None) -> str | None:
    """Why a new password is refused, or None."""
    if len(password) < MIN_PASSWORD_LENGTH:
        return f"the password must be at least {MIN_PASSWORD_LENGTH} characters long"
    if len(password) > MAX_PASSWORD_LENGTH:
        return f"the password must be at most {MAX_PASSWORD_LENGTH} characters long"
    lowered = password.lower()
    stem = re.sub(r"[\d!@#$%^&*.]+$", "", lowered)
    common = common_passwords()
    if lowered in common or stem in common or len(set(lowered)) <= 2:
        return "this password is one of the most common ones: choose another"
    if username and username.lower() in lowered:
        return "the password must not contain the user name"
    return None


def temporary_password() -> str:
    """A random password an admin hands over; the person must change it at the next sign-in."""
    return secrets.token_urlsafe(12)


# --------------------------------------------------------------------------------------------------
# Lock-out: 5 failures within 15 minutes lock the user name for what is left of those 15 minutes.
# --------------------------------------------------------------------------------------------------

LOCKOUT_FAILURES = 5
LOCKOUT_WINDOW = timedelta(minutes=15)


def recent_failures(failures: Iterable[datetime], now: datetime, window: timedelta = LOCKOUT_WINDOW) -> list[datetime]:
    return sorted(f for f in failures if f > now - window)


def locked_for(failures: Iterable[datetime], now: datetime, *, limit: int = LOCKOUT_FAILURES,
               window: timedelta = LOCKOUT_WINDOW) -> float | None:
    """Seconds until the user name may try again, or None when it is not locked."""
    recent = recent_failures(failures, now, window)
    if len(recent) < limit:
        return None
    return max(1.0, (recent[-limit] + window - now).total_seconds())


# --------------------------------------------------------------------------------------------------
# Tokens and ids
# --------------------------------------------------------------------------------------------------


def new_person_id() -> str:
    return f"p-{secrets.token_hex(8)}"


def new_token() -> str:
    return secrets.token_urlsafe(32)


def token_hash(token: str) -> str:
    """What the database keeps of a session or machine token: a leaked table signs nobody in."""
    return hashlib.sha256(token.encode()).hexdigest()


def same_secret(a: str | None, b: str | None) -> bool:
    return bool(a and b) and hmac.compare_digest(a.encode(), b.encode())  # type: ignore[union-attr]
