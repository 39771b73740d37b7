"""Use cases for people: sign-in and sessions, the admin's account work, the audit trail, machine tokens,
unit settings, reply templates, and the staff-contact records the notifier uses to reach people."""

from __future__ import annotations

import asyncio
import csv
import io
import secrets
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from services.common import events as ev
from services.common.clock import Clock
from services.common.events import make_event
from services.common.logging import get_logger
from services.common.reference import ReferenceData
from services.common.workdays import SHANGHAI
from services.intake.accounts import (
    ROLE_NAMES,
    Principal,
    Role,
    locked_for,
    new_person_id,
    new_token,
    password_problem,
    recent_failures,
    same_secret,
    temporary_password,
    token_hash,
    validate_roles,
)
from services.intake.accounts_store import AccountsStore, DuplicateKeyError
from services.intake.config import IntakeSettings
from services.intake.handlers import Conflict, Forbidden, Invalid, NotFound, RateLimited, ServiceError, outbox_entry
from services.intake.ratelimit import SlidingWindowLimiter

log = get_logger(__name__)


class Unauthorized(ServiceError):
    status, code = 401, "unauthorized"


class InvalidCredentials(ServiceError):
    status, code = 401, "invalid_credentials"


class InvalidToken(ServiceError):
    status, code = 401, "invalid_token"


class AccountDisabled(ServiceError):
    status, code = 403, "account_disabled"


class PasswordChangeRequired(ServiceError):
    status, code = 403, "password_change_required"


class CsrfFailed(ServiceError):
    status, code = 403, "csrf_failed"


class WeakPassword(ServiceError):
    status, code = 422, "weak_password"


class AccountLocked(ServiceError):
    status, code = 423, "account_locked"

    def __init__(self, message: str, retry_after: float) -> None:
        self.retry_after = max(1, int(retry_after + 0.999))
        super().__init__(message, "username", headers={"Retry-After": str(self.retry_after)})


class MachineTokenKind:
    SMS_GATEWAY = "sms_gateway"
    OPEN311 = "open311"
    CITY_SYSTEM = "city_system"
    ALL = ("sms_gateway", "open311", "city_system")


@dataclass
class _Cached:
    principal: Principal
    csrf_hash: str | None
    expires_at: datetime
    checked_at: datetime


@dataclass(frozen=True)
class SignedIn:
    token: str
    expires_at: datetime
    person: dict[str, Any]
    csrf_token: str | None = None


AUDIT_HEADERS = [("at", "时间（北京时间）"), ("person_id", "人员编号"), ("display_name", "姓名"),
                 ("role", "角色"), ("unit_name", "单位"), ("action", "操作"), ("case_id", "案件编号"),
                 ("tracking_number", "受理编号"), ("detail", "说明"), ("ip", "来源地址")]
ACTION_NAMES = {
    "sign_in": "登录", "sign_in_failed": "登录失败", "sign_out": "退出登录", "password_changed": "修改密码",
    "account_created": "新建账号", "account_updated": "修改账号", "password_reset": "重置密码",
    "machine_token_created": "新建接口令牌", "machine_token_revoked": "吊销接口令牌",
    "unit_settings_changed": "修改单位设置", "template_created": "新建答复模板",
    "template_updated": "修改答复模板", "template_deleted": "删除答复模板", "reveal_contact": "查看群众联系方式",
    "sign": "签收", "reply": "答复", "reply_submitted": "提交答复待审核", "approve_reply": "审核通过答复",
    "reject_reply": "退回答复", "return": "退单", "request_extension": "申请延期",
    "approve_extension": "批准延期", "deny_extension": "不批准延期", "reassign": "改派", "reopen": "二次办理",
    "close": "办结", "flag": "标记典型",
}


class AccountsService:
    def __init__(self, store: AccountsStore, settings: IntakeSettings, clock: Clock, reference: ReferenceData,
                 *, production: bool = False, on_commit: Any = None) -> None:
        self.store = store
        self.settings = settings
        self.clock = clock
        self.reference = reference
        self.production = production
        self.on_commit = on_commit or (lambda: None)
        self.hasher = PasswordHasher(time_cost=settings.password_time_cost, memory_cost=settings.password_memory_kib,
                                     parallelism=settings.password_parallelism)
        self._dummy_hash = self.hasher.hash(secrets.token_urlsafe(16))  # unknown users cost the same time
        self.ip_limiter = SlidingWindowLimiter(settings.login_rate_per_ip, settings.login_rate_window_seconds)
        self.cache: dict[str, _Cached] = {}
        self.machine_cache: dict[str, tuple[dict[str, Any] | None, datetime]] = {}

    # ------------------------------------------------------------------ views
    def unit_ref(self, unit_id: str | None) -> dict[str, str] | None:
        if not unit_id:
            return None
        unit = self.reference.unit(unit_id)
        return {"id": unit_id, "name": unit.name if unit else unit_id}

    def person_view(self, doc: dict[str, Any], *, for_admin: bool = False) -> dict[str, Any]:
        notify = doc.get("notify") or {}
        view = {
            "id": doc["_id"], "username": doc["username"], "display_name": doc["display_name"],
            "roles": list(doc.get("roles", [])), "unit": self.unit_ref(doc.get("unit_id")),
            "disabled": bool(doc.get("disabled")), "must_change_password": bool(doc.get("must_change_password")),
            "notify": {"channels": list(notify.get("channels") or []), "quiet_hours": notify.get("quiet_hours")},
            "created_at": _iso(doc.get("created_at")), "last_sign_in_at": _iso(doc.get("last_sign_in_at")),
        }
        if for_admin:
            view.update(phone=doc.get("phone"), email=doc.get("email"))
        return view

    def principal_of(self, doc: dict[str, Any], session_id: str | None = None, via_cookie: bool = False) -> Principal:
        unit = self.unit_ref(doc.get("unit_id"))
        return Principal(person_id=doc["_id"], username=doc["username"], display_name=doc["display_name"],
                         roles=frozenset(Role(r) for r in doc.get("roles", [])), unit_id=doc.get("unit_id"),
                         unit_name=unit["name"] if unit else None, session_id=session_id, via_cookie=via_cookie,
                         must_change_password=bool(doc.get("must_change_password")))

    # ------------------------------------------------------------------ passwords
    async def hash_password(self, password: str) -> str:
        return await asyncio.to_thread(self.hasher.hash, password)

    async def _verify(self, stored: str | None, password: str) -> bool:
        def check() -> bool:
            try:
                return self.hasher.verify(stored or self._dummy_hash, password) and stored is not None
            except (VerificationError, InvalidHashError):
                return False
        return await asyncio.to_thread(check)

    # ------------------------------------------------------------------ sign-in
    async def login(self, username: str, password: str, *, ip: str | None, cookie: bool = False) -> SignedIn:
        if self.settings.rate_limit_enabled and ip and (wait := self.ip_limiter.check(ip)) is not None:
            raise RateLimited("too many sign-in attempts from this address", wait)
        username = normalise_username(username)
        now = self.clock.now()
        window = timedelta(minutes=self.settings.lockout_minutes)
        failures = await self.store.failures_of(username)
        wait = locked_for(failures, now, limit=self.settings.lockout_failures, window=window)
        if wait is not None:
            raise AccountLocked("too many failed sign-ins: try again later", wait)
        doc = await self.store.person_by_username(username)
        if doc is None or not await self._verify(doc.get("password_hash"), password):
            await self.store.record_failure(username, now, recent_failures(failures, now, window))
            await self.audit(None, "sign_in_failed", person=doc, detail=f"user name {username[:64]}", ip=ip)
            raise InvalidCredentials("wrong user name or password", "password")
        if doc.get("disabled"):
            await self.audit(None, "sign_in_failed", person=doc, detail="account disabled", ip=ip)
            raise AccountDisabled("this account is disabled", "username")
        if failures:
            await self.store.clear_failures(username)
        if self.hasher.check_needs_rehash(doc["password_hash"]):
            await self.store.update_person(doc["_id"], {"password_hash": await self.hash_password(password)})
        signed_in = await self.start_session(doc, via="password", cookie=cookie)
        await self.audit(self.principal_of(doc), "sign_in", detail="password", ip=ip)
        return signed_in

    async def start_session(self, doc: dict[str, Any], *, via: str, cookie: bool) -> SignedIn:
        now = self.clock.now()
        token = new_token()
        csrf = new_token() if cookie else None
        expires = now + timedelta(hours=self.settings.session_hours)
        await self.store.insert_session({"_id": token_hash(token), "person_id": doc["_id"], "created_at": now,
                                         "expires_at": expires, "via": via,
                                         "csrf_hash": token_hash(csrf) if csrf else None})
        await self.store.update_person(doc["_id"], {"last_sign_in_at": now})
        doc = {**doc, "last_sign_in_at": now}
        return SignedIn(token, expires, self.person_view(doc), csrf)

    async def authenticate(self, token: str, *, via_cookie: bool = False, csrf: str | None = None,
                           needs_csrf: bool = False) -> Principal:
        """The person behind a session token. Trusted from memory for up to ``session_cache_seconds``."""
        digest = token_hash(token)
        now = self.clock.now()
        cached = self.cache.get(digest)
        ttl = timedelta(seconds=self.settings.session_cache_seconds)
        if cached is None or now - cached.checked_at >= ttl:
            cached = await self._load_session(digest, now)
        if now >= cached.expires_at:
            self.cache.pop(digest, None)
            raise InvalidToken("the session has expired: sign in again", "Authorization")
        if needs_csrf and not (csrf and cached.csrf_hash and same_secret(token_hash(csrf), cached.csrf_hash)):
            raise CsrfFailed("a cookie-authenticated request needs the X-CSRF-Token header of this session",
                             "X-CSRF-Token")
        principal = cached.principal
        return replace(principal, via_cookie=True) if via_cookie and not principal.via_cookie else principal

    async def _load_session(self, digest: str, now: datetime) -> _Cached:
        self.cache.pop(digest, None)
        session = await self.store.session(digest)
        if session is None:
            raise InvalidToken("unknown or revoked token", "Authorization")
        expires = _aware(session["expires_at"])
        person = await self.store.person(session["person_id"])
        if person is None or person.get("disabled"):
            raise InvalidToken("unknown or revoked token", "Authorization")
        cached = _Cached(self.principal_of(person, session_id=digest), session.get("csrf_hash"), expires, now)
        if len(self.cache) > 50_000:
            self.cache.clear()
        self.cache[digest] = cached
        return cached

    async def logout(self, principal: Principal) -> None:
        if principal.session_id:
            await self.store.delete_session(principal.session_id)
            self.cache.pop(principal.session_id, None)
        await self.audit(principal, "sign_out")

    def _forget_person(self, person_id: str) -> None:
        for digest in [d for d, c in self.cache.items() if c.principal.person_id == person_id]:
            del self.cache[digest]

    async def me(self, principal: Principal) -> dict[str, Any]:
        doc = await self.store.person(principal.person_id)
        if doc is None:
            raise InvalidToken("unknown or revoked token", "Authorization")
        return self.person_view(doc)

    async def change_password(self, principal: Principal, current: str, new: str) -> None:
        doc = await self.store.person(principal.person_id)
        if doc is None or not await self._verify(doc.get("password_hash"), current):
            raise InvalidCredentials("the current password is wrong", "current_password")
        if (problem := password_problem(new, doc["username"])) or new == current:
            raise WeakPassword(problem or "choose a password different from the current one", "new_password")
        await self.store.update_person(doc["_id"], {"password_hash": await self.hash_password(new),
                                                    "must_change_password": False})
        await self.store.delete_sessions_of(doc["_id"], keep=principal.session_id)
        self._forget_person(doc["_id"])
        await self.audit(principal, "password_changed")

    # ------------------------------------------------------------------ OpenID Connect
    def providers(self) -> dict[str, Any]:
        return {"password": True, "oidc": {"enabled": self.oidc_enabled, "label": self.settings.oidc_label}}

    @property
    def oidc_enabled(self) -> bool:
        s = self.settings
        return bool(s.oidc_issuer and s.oidc_client_id and s.oidc_client_secret)

    async def begin_oidc(self, redirect_uri: str) -> dict[str, str]:
        """A new sign-in's state, nonce and PKCE verifier; the server keeps them, the browser gets the state."""
        started = {"state": secrets.token_urlsafe(32), "nonce": secrets.token_urlsafe(24),
                   "code_verifier": secrets.token_urlsafe(48)}
        await self.store.insert_oidc_state({
            "_id": token_hash(started["state"]), "redirect_uri": redirect_uri, "nonce": started["nonce"],
            "code_verifier": started["code_verifier"],
            "expires_at": self.clock.now() + timedelta(seconds=self.settings.oidc_state_seconds)})
        return started

    async def take_oidc_state(self, state: str, redirect_uri: str) -> dict[str, Any]:
        """What the start of this sign-in issued (once: a state is gone after its first callback)."""
        doc = await self.store.take_oidc_state(token_hash(state))
        expires = doc.get("expires_at") if doc else None
        if expires is not None and expires.tzinfo is None:
            expires = expires.replace(tzinfo=UTC)
        if doc is None or expires is None or expires <= self.clock.now():
            raise Invalid("the sign-in state is unknown, used or expired: start again", "state")
        if doc.get("redirect_uri") != redirect_uri:
            raise Invalid("redirect_uri does not match the one sign-in started with", "redirect_uri")
        return doc

    async def oidc_refused(self, error: ServiceError, *, ip: str | None) -> None:
        await self.audit(None, "sign_in_failed", detail=f"oidc {error.code} {error.field or ''}".strip(), ip=ip)

    def check_redirect_uri(self, redirect_uri: str) -> None:
        allowed = self.settings.oidc_redirect_uris
        if allowed and redirect_uri not in allowed:
            raise Invalid("this redirect_uri is not registered", "redirect_uri")

    async def sign_in_with_claims(self, claims: dict[str, Any], *, ip: str | None, cookie: bool) -> SignedIn:
        """Map the identity provider's user name claim to an existing person (nobody is created here)."""
        raw = claims.get(self.settings.oidc_username_claim)
        username = normalise_username(str(raw)) if isinstance(raw, str | int) else ""
        doc = await self.store.person_by_username(username) if username else None
        if doc is None or doc.get("disabled"):
            await self.audit(None, "sign_in_failed", person=doc, detail=f"oidc {username[:64]}", ip=ip)
            raise InvalidCredentials("no enabled account matches this identity", "code")
        signed_in = await self.start_session(doc, via="oidc", cookie=cookie)
        await self.audit(self.principal_of(doc), "sign_in", detail="oidc", ip=ip)
        return signed_in

    # ------------------------------------------------------------------ audit
    async def audit(self, principal: Principal | None, action: str, *, role: Role | str | None = None,
                    case_id: str | None = None, tracking_number: str | None = None, unit_id: str | None = None,
                    detail: str | None = None, ip: str | None = None, person: dict[str, Any] | None = None) -> None:
        """One row of who did what. Never a citizen's phone or name; ``detail`` is a short staff-written note."""
        if principal is not None:
            person_id, name = principal.person_id, principal.display_name
            role = role or _main_role(principal.roles)
            unit_id = unit_id or principal.unit_id
        else:
            person_id = person["_id"] if person else None
            name = person["display_name"] if person else None
            unit_id = unit_id or (person.get("unit_id") if person else None)
        unit = self.unit_ref(unit_id)
        await self.store.add_audit({
            "at": self.clock.now(), "person_id": person_id, "display_name": name,
            "role": role.value if isinstance(role, Role) else role, "unit_id": unit_id,
            "unit_name": unit["name"] if unit else None, "action": action, "case_id": case_id,
            "tracking_number": tracking_number, "detail": (detail or None) and detail[:500], "ip": ip,
        })

    async def list_audit(self, *, person_id: str | None, unit_id: str | None, case_id: str | None,
                         action: str | None, since: datetime | None, until: datetime | None, page: int,
                         page_size: int) -> dict[str, Any]:
        query: dict[str, Any] = {k: v for k, v in (("person_id", person_id), ("unit_id", unit_id),
                                                   ("case_id", case_id), ("action", action)) if v}
        if since or until:
            query["at"] = {**({"$gte": since} if since else {}), **({"$lt": until} if until else {})}
        docs, total = await self.store.list_audit(query, (page - 1) * page_size, page_size)
        items = [{**{k: d.get(k) for k, _ in AUDIT_HEADERS}, "id": d["_id"], "unit_id": d.get("unit_id"),
                  "at": _iso(d["at"])} for d in docs]
        return {"items": items, "page": page, "page_size": page_size, "total": total}

    @staticmethod
    def audit_csv(items: list[dict[str, Any]]) -> str:
        """UTF-8 with a BOM (so Excel reads the Chinese), Chinese headers, Shanghai times and names."""
        out = io.StringIO()
        writer = csv.writer(out)
        writer.writerow([title for _, title in AUDIT_HEADERS])
        for item in items:
            row = []
            for key, _ in AUDIT_HEADERS:
                value = item.get(key)
                if key == "at" and value:
                    value = datetime.fromisoformat(value).astimezone(SHANGHAI).strftime("%Y-%m-%d %H:%M:%S")
                elif key == "role" and value:
                    value = ROLE_NAMES.get(value, value)
                elif key == "action" and value:
                    value = ACTION_NAMES.get(value, value)
                row.append("" if value is None else str(value))
            writer.writerow(row)
        return "\ufeff" + out.getvalue()

    # ------------------------------------------------------------------ accounts (admin)
    def _check_roles(self, roles: list[Role], unit_id: str | None) -> None:
        if unit_id and self.reference.unit(unit_id) is None:
            raise Invalid(f"unknown unit {unit_id!r}", "unit_id")
        if problem := validate_roles(roles, unit_id):
            raise Invalid(problem, "roles")

    async def create_person(self, admin: Principal | None, *, username: str, display_name: str, roles: list[Role],
                            unit_id: str | None = None, password: str | None = None, phone: str | None = None,
                            email: str | None = None, notify: dict[str, Any] | None = None,
                            must_change_password: bool | None = None,
                            password_hash: str | None = None) -> tuple[dict[str, Any], str | None]:
        """A new account; returns (its admin view, the temporary password when none was given)."""
        username = normalise_username(username)
        self._check_roles(roles, unit_id)
        temporary = None
        if password is None and password_hash is None:
            temporary = password = temporary_password()
        elif password is not None and (problem := password_problem(password, username)):
            raise WeakPassword(problem, "password")
        now = self.clock.now()
        doc = {"_id": new_person_id(), "username": username, "display_name": display_name,
               "roles": sorted(r.value for r in roles), "unit_id": unit_id, "disabled": False,
               "must_change_password": temporary is not None if must_change_password is None else must_change_password,
               "password_hash": password_hash or await self.hash_password(password or ""),
               "phone": phone, "email": email, "notify": notify or {"channels": ["sms"] if phone else [],
                                                                     "quiet_hours": None},
               "created_at": now, "last_sign_in_at": None}
        try:
            await self.store.insert_person(doc, [self._contact_entry(doc, now)])
        except DuplicateKeyError as exc:
            raise Conflict("this user name is taken", "username") from exc
        self.on_commit()
        await self.audit(admin, "account_created", unit_id=unit_id, detail=f"{doc['_id']} {username}",
                         person=None if admin else doc)
        return self.person_view(doc, for_admin=True), temporary

    async def update_person(self, admin: Principal, person_id: str, changes: dict[str, Any]) -> dict[str, Any]:
        doc = await self.store.person(person_id)
        if doc is None:
            raise NotFound(f"no account {person_id}", "id")
        if "roles" in changes or "unit_id" in changes:
            roles = [Role(r) for r in changes.get("roles", doc.get("roles", []))]
            self._check_roles(roles, changes.get("unit_id", doc.get("unit_id")))
            if "roles" in changes:
                changes["roles"] = sorted(r.value for r in roles)
        if person_id == admin.person_id and (changes.get("disabled") or
                                             ("roles" in changes and Role.ADMIN.value not in changes["roles"])):
            raise Invalid("an admin cannot disable themselves or drop their own admin role", "disabled")
        merged = {**doc, **changes}
        now = self.clock.now()
        await self.store.update_person(person_id, changes, outbox=[self._contact_entry(merged, now)])
        self.on_commit()
        if changes.get("disabled"):
            await self.store.delete_sessions_of(person_id)
        if changes.get("disabled") or "roles" in changes or "unit_id" in changes:
            self._forget_person(person_id)  # this replica at once; the others within the cache time
        await self.audit(admin, "account_updated", detail=f"{person_id}: {', '.join(sorted(changes))}")
        return self.person_view(merged, for_admin=True)

    async def reset_password(self, admin: Principal, person_id: str) -> str:
        doc = await self.store.person(person_id)
        if doc is None:
            raise NotFound(f"no account {person_id}", "id")
        password = temporary_password()
        await self.store.update_person(person_id, {"password_hash": await self.hash_password(password),
                                                   "must_change_password": True})
        await self.store.delete_sessions_of(person_id)
        await self.store.clear_failures(doc["username"])
        self._forget_person(person_id)
        await self.audit(admin, "password_reset", detail=person_id)
        return password

    async def list_people(self, *, unit_id: str | None, role: Role | None, page: int, page_size: int) -> dict:
        query: dict[str, Any] = {}
        if unit_id:
            query["unit_id"] = unit_id
        if role:
            query["roles"] = role.value
        docs, total = await self.store.list_people(query, (page - 1) * page_size, page_size)
        return {"items": [self.person_view(d, for_admin=True) for d in docs], "page": page,
                "page_size": page_size, "total": total}

    async def get_person(self, person_id: str) -> dict[str, Any]:
        doc = await self.store.person(person_id)
        if doc is None:
            raise NotFound(f"no account {person_id}", "id")
        return self.person_view(doc, for_admin=True)

    def _contact_entry(self, doc: dict[str, Any], now: datetime) -> dict[str, Any]:
        notify = doc.get("notify") or {}
        contact = ev.StaffContact(
            person_id=doc["_id"], unit_id=doc.get("unit_id"), roles=list(doc.get("roles", [])),
            phone=doc.get("phone"), email=doc.get("email"), channels=list(notify.get("channels") or []),
            quiet_hours=notify.get("quiet_hours"), active=not doc.get("disabled"), updated_at=now)
        return outbox_entry(make_event(contact, source=self.settings.source, time=now), "staff_contacts")

    # ------------------------------------------------------------------ machine tokens
    async def create_machine_token(self, admin: Principal | None, name: str, kind: str) -> dict[str, Any]:
        token = f"wzm_{new_token()}"
        digest = token_hash(token)
        doc = {"_id": digest, "id": f"mt-{digest[:12]}", "name": name, "kind": kind, "created_at": self.clock.now(),
               "created_by": admin.person_id if admin else None, "revoked_at": None}
        await self.store.insert_machine_token(doc)
        await self.audit(admin, "machine_token_created", detail=f"{doc['id']} {kind} {name}")
        return {**machine_token_view(doc), "token": token}

    async def list_machine_tokens(self) -> dict[str, Any]:
        return {"items": [machine_token_view(d) for d in await self.store.list_machine_tokens()]}

    async def revoke_machine_token(self, admin: Principal, public_id: str) -> None:
        if not await self.store.revoke_machine_token(public_id, self.clock.now()):
            raise NotFound(f"no active machine token {public_id}", "id")
        self.machine_cache.clear()
        await self.audit(admin, "machine_token_revoked", detail=public_id)

    async def machine_token_ok(self, token: str | None, kind: str) -> bool:
        """Whether ``token`` is a live machine token of ``kind`` (remembered for the session cache's time)."""
        if not token:
            return False
        digest = token_hash(token)
        now = self.clock.now()
        hit = self.machine_cache.get(digest)
        if hit is None or now - hit[1] >= timedelta(seconds=self.settings.session_cache_seconds):
            doc = await self.store.machine_token(digest)
            if len(self.machine_cache) > 10_000:
                self.machine_cache.clear()
            hit = self.machine_cache[digest] = (doc, now)
        doc = hit[0]
        return bool(doc and doc.get("kind") == kind and not doc.get("revoked_at"))

    # ------------------------------------------------------------------ unit settings, reply templates
    async def unit_settings(self, unit_id: str) -> dict[str, Any]:
        self._known_unit(unit_id)
        return {"unit": self.unit_ref(unit_id), **await self.store.unit_settings_of(unit_id)}

    async def put_unit_settings(self, admin: Principal, unit_id: str, approval: bool) -> dict[str, Any]:
        self._known_unit(unit_id)
        await self.store.put_unit_settings(unit_id, {"reply_approval_required": approval})
        await self.audit(admin, "unit_settings_changed", unit_id=unit_id,
                         detail=f"reply_approval_required={str(approval).lower()}")
        return await self.unit_settings(unit_id)

    def _known_unit(self, unit_id: str) -> None:
        if self.reference.unit(unit_id) is None:
            raise NotFound(f"no unit {unit_id}", "unit_id")

    def template_view(self, doc: dict[str, Any]) -> dict[str, Any]:
        return {"id": doc["_id"], "unit": self.unit_ref(doc["unit_id"]), "title": doc["title"], "text": doc["text"]}

    async def templates_for(self, principal: Principal, unit_id: str | None) -> dict[str, Any]:
        if not (principal.oversees or principal.is_admin):
            if unit_id and unit_id != principal.unit_id:
                raise Forbidden("only your own unit's templates", "unit_id")
            unit_id = principal.unit_id
            if unit_id is None:
                raise Forbidden("reply templates belong to units")
        return {"items": [self.template_view(d) for d in await self.store.templates_of(unit_id)]}

    async def create_template(self, admin: Principal, unit_id: str, title: str, text: str) -> dict[str, Any]:
        if self.reference.unit(unit_id) is None:
            raise Invalid(f"unknown unit {unit_id!r}", "unit_id")
        now = self.clock.now()
        doc = {"_id": f"t-{secrets.token_hex(8)}", "unit_id": unit_id, "title": title, "text": text,
               "created_at": now, "updated_at": now}
        await self.store.insert_template(doc)
        await self.audit(admin, "template_created", unit_id=unit_id, detail=f"{doc['_id']} {title}")
        return self.template_view(doc)

    async def update_template(self, admin: Principal, template_id: str, changes: dict[str, Any]) -> dict[str, Any]:
        doc = await self.store.template(template_id)
        if doc is None:
            raise NotFound(f"no template {template_id}", "id")
        await self.store.update_template(template_id, {**changes, "updated_at": self.clock.now()})
        await self.audit(admin, "template_updated", unit_id=doc["unit_id"], detail=template_id)
        return self.template_view({**doc, **changes})

    async def delete_template(self, admin: Principal, template_id: str) -> None:
        doc = await self.store.template(template_id)
        if doc is None or not await self.store.delete_template(template_id):
            raise NotFound(f"no template {template_id}", "id")
        await self.audit(admin, "template_deleted", unit_id=doc["unit_id"], detail=template_id)

    async def template_for_reply(self, template_id: str, unit_id: str | None) -> dict[str, Any]:
        doc = await self.store.template(template_id)
        if doc is None or doc["unit_id"] != unit_id:
            raise Invalid("no such reply template for this case's unit", "template_id")
        return doc


def machine_token_view(doc: dict[str, Any]) -> dict[str, Any]:
    return {"id": doc["id"], "name": doc["name"], "kind": doc["kind"], "created_at": _iso(doc["created_at"]),
            "revoked_at": _iso(doc.get("revoked_at")), "active": not doc.get("revoked_at")}


def normalise_username(username: str) -> str:
    return username.strip().lower()[:64]


def _main_role(roles: frozenset[Role]) -> str | None:
    for role in (Role.SUPERVISOR, Role.UNIT_LEAD, Role.UNIT_STAFF, Role.ADMIN):
        if role in roles:
            return role.value
    return None


def _aware(value: datetime) -> datetime:
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def _iso(value: datetime | None) -> str | None:
    return _aware(value).isoformat() if value else None
