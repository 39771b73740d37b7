"""HTTP entrypoints for people: sign-in (``/v1/auth``), the admin's accounts, audit, unit settings, reply
templates and machine tokens (``/v1/admin``), and the dependencies every staff route uses to know who asks.

A request proves who it is with a bearer token, or with intake's own session cookie (set by
``POST /v1/auth/login?cookie=true``); a cookie-authenticated POST/PUT/PATCH/DELETE must also carry the
session's CSRF token in ``X-CSRF-Token`` (double submit: it must equal the CSRF cookie and the session's)."""

from __future__ import annotations

from datetime import date, datetime, time, timedelta
from typing import Annotated, Any, Literal

import httpx
from fastapi import APIRouter, Depends, Path, Query, Request
from fastapi.responses import JSONResponse, Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, ConfigDict, Field, field_validator

from services.common.workdays import SHANGHAI
from services.intake.accounts import PERSON_ID_PATTERN, USERNAME_PATTERN, Principal, Role, same_secret
from services.intake.handlers import Forbidden, Invalid, ServiceError
from services.intake.oidc import IdTokenRefused, has_key, token_kid, verify_id_token
from services.intake.people import (
    AccountsService,
    CsrfFailed,
    InvalidCredentials,
    MachineTokenKind,
    PasswordChangeRequired,
    SignedIn,
    Unauthorized,
)

SESSION_COOKIE = "wenzheng_session"
CSRF_COOKIE = "wenzheng_csrf"
SAFE_METHODS = ("GET", "HEAD", "OPTIONS")
UNIT_ID_PATTERN = r"^[a-z0-9_.-]{1,64}$"
_bearer = HTTPBearer(auto_error=False)


def accounts_of(request: Request) -> AccountsService:
    accounts = request.app.state.runtime.accounts
    if accounts is None:  # pragma: no cover - only before start-up finished
        raise ServiceError("starting up")
    return accounts


AccountsDep = Annotated[AccountsService, Depends(accounts_of)]


async def signed_in(request: Request, accounts: AccountsDep,
                    creds: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]) -> Principal:
    """Whoever the bearer token or the session cookie belongs to (even if they must change their password)."""
    if creds is not None and creds.credentials:
        return await accounts.authenticate(creds.credentials)
    cookie = request.cookies.get(SESSION_COOKIE)
    if cookie:
        unsafe = request.method not in SAFE_METHODS
        header = request.headers.get("X-CSRF-Token")
        if unsafe and not same_secret(header, request.cookies.get(CSRF_COOKIE)):
            raise CsrfFailed("a cookie-authenticated request needs the X-CSRF-Token header", "X-CSRF-Token")
        return await accounts.authenticate(cookie, via_cookie=True, csrf=header, needs_csrf=unsafe)
    raise Unauthorized("sign in first: a bearer token or the session cookie is required", "Authorization")


SignedInDep = Annotated[Principal, Depends(signed_in)]


def staff(principal: SignedInDep) -> Principal:
    """Anyone signed in who has set their own password."""
    if principal.must_change_password:
        raise PasswordChangeRequired("change your temporary password first (POST /v1/auth/password)")
    return principal


PrincipalDep = Annotated[Principal, Depends(staff)]


def supervisor(principal: PrincipalDep) -> Principal:
    if not principal.oversees:
        raise Forbidden("supervisors only")
    return principal


def admin(principal: PrincipalDep) -> Principal:
    if not principal.is_admin:
        raise Forbidden("admins only")
    return principal


SupervisorDep = Annotated[Principal, Depends(supervisor)]
AdminDep = Annotated[Principal, Depends(admin)]


def client_ip(request: Request) -> str | None:
    """The caller's address; behind a trusted proxy (the portal signs people in from its own address), the
    right-most X-Forwarded-For hop that is not itself a trusted proxy."""
    peer = request.client.host if request.client else None
    trusted = set(request.app.state.runtime.settings.trusted_proxies)
    if peer not in trusted:
        return peer
    hops = [h.strip() for h in request.headers.get("X-Forwarded-For", "").split(",") if h.strip()]
    for hop in reversed(hops):
        if hop not in trusted:
            return hop[:64]
    return peer


# --------------------------------------------------------------------------------------------------
# Bodies
# --------------------------------------------------------------------------------------------------


class Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class LoginIn(Body):
    username: str = Field(min_length=1, max_length=64)
    password: str = Field(min_length=1, max_length=256)


class PasswordIn(Body):
    current_password: str = Field(min_length=1, max_length=256)
    new_password: str = Field(min_length=1, max_length=256)


class OidcCallbackIn(Body):
    code: str = Field(min_length=1, max_length=2000)
    state: str = Field(min_length=1, max_length=2000)
    redirect_uri: str = Field(min_length=1, max_length=2000, pattern=r"^https?://\S+$")


class QuietHoursIn(Body):
    start: str = Field(pattern=r"^([01]\d|2[0-3]):[0-5]\d$")
    end: str = Field(pattern=r"^([01]\d|2[0-3]):[0-5]\d$")


class NotifyIn(Body):
    channels: list[Literal["sms", "email"]] = Field(default_factory=list, max_length=2)
    quiet_hours: QuietHoursIn | None = None


PHONE = r"^1[3-9]\d{9}$"
EMAIL = r"^[^@\s]{1,64}@[^@\s]{1,189}\.[^@\s]{1,32}$"


class AccountIn(Body):
    username: str = Field(pattern=USERNAME_PATTERN)
    display_name: str = Field(min_length=1, max_length=50)
    roles: list[Role] = Field(min_length=1, max_length=4)
    unit_id: str | None = Field(None, pattern=UNIT_ID_PATTERN)
    password: str | None = Field(None, min_length=1, max_length=256)
    phone: str | None = Field(None, pattern=PHONE)
    email: str | None = Field(None, pattern=EMAIL)
    notify: NotifyIn | None = None

    @field_validator("display_name")
    @classmethod
    def _not_blank(cls, value: str) -> str:
        if not value.strip() or "\x00" in value:
            raise ValueError("must not be blank")
        return value.strip()


class AccountPatch(Body):
    display_name: str | None = Field(None, min_length=1, max_length=50)
    roles: list[Role] | None = Field(None, min_length=1, max_length=4)
    unit_id: str | None = Field(None, pattern=UNIT_ID_PATTERN)
    disabled: bool | None = None
    phone: str | None = Field(None, pattern=PHONE)
    email: str | None = Field(None, pattern=EMAIL)
    notify: NotifyIn | None = None


class UnitSettingsIn(Body):
    reply_approval_required: bool


class TemplateIn(Body):
    unit_id: str = Field(pattern=UNIT_ID_PATTERN)
    title: str = Field(min_length=1, max_length=100)
    text: str = Field(min_length=1, max_length=5000)


class TemplatePatch(Body):
    title: str | None = Field(None, min_length=1, max_length=100)
    text: str | None = Field(None, min_length=1, max_length=5000)


class MachineTokenIn(Body):
    name: str = Field(min_length=1, max_length=100)
    kind: Literal["sms_gateway", "open311", "city_system"]


# --------------------------------------------------------------------------------------------------
# /v1/auth
# --------------------------------------------------------------------------------------------------

auth = APIRouter(prefix="/v1/auth", tags=["sign-in"])
_AUTH_ERRORS: dict[int | str, dict[str, Any]] = {401: {}, 403: {}, 422: {}, 423: {}, 429: {}}


def _signed_in_response(request: Request, result: SignedIn, cookie: bool) -> JSONResponse:
    body: dict[str, Any] = {"token": result.token, "token_type": "bearer", "expires_at": result.expires_at.isoformat(),
                            "person": result.person}
    if result.csrf_token:
        body["csrf_token"] = result.csrf_token
    response = JSONResponse(body, headers={"Cache-Control": "no-store"})
    if cookie and result.csrf_token:
        runtime = request.app.state.runtime
        secure = runtime.settings.cookie_secure
        secure = runtime.common.environment == "production" if secure is None else secure
        max_age = int((result.expires_at - runtime.clock.now()).total_seconds())
        response.set_cookie(SESSION_COOKIE, result.token, max_age=max_age, httponly=True, samesite="lax",
                            secure=secure, path="/")
        response.set_cookie(CSRF_COOKIE, result.csrf_token, max_age=max_age, httponly=False, samesite="lax",
                            secure=secure, path="/")
    return response


@auth.post("/login", responses=_AUTH_ERRORS)
async def login(body: LoginIn, request: Request, accounts: AccountsDep, cookie: bool = False) -> JSONResponse:
    result = await accounts.login(body.username, body.password, ip=client_ip(request), cookie=cookie)
    return _signed_in_response(request, result, cookie)


@auth.post("/logout", status_code=204, responses={401: {}, 403: {}})
async def logout(principal: SignedInDep, accounts: AccountsDep) -> Response:
    await accounts.logout(principal)
    response = Response(status_code=204)
    response.delete_cookie(SESSION_COOKIE, path="/")
    response.delete_cookie(CSRF_COOKIE, path="/")
    return response


@auth.get("/me", responses={401: {}})
async def me(principal: SignedInDep, accounts: AccountsDep) -> dict[str, Any]:
    return await accounts.me(principal)


@auth.post("/password", status_code=204, responses=_AUTH_ERRORS)
async def change_password(body: PasswordIn, principal: SignedInDep, accounts: AccountsDep) -> Response:
    await accounts.change_password(principal, body.current_password, body.new_password)
    return Response(status_code=204)


@auth.get("/providers")
async def providers(accounts: AccountsDep) -> dict[str, Any]:
    return accounts.providers()


async def _fetch_json(url: str) -> dict[str, Any]:
    try:
        async with httpx.AsyncClient(timeout=10) as client:
            answer = await client.get(url)
            answer.raise_for_status()
            body = answer.json()
    except (httpx.HTTPError, ValueError) as exc:
        raise OidcUnavailable("the identity provider cannot be reached", "code") from exc
    if not isinstance(body, dict):
        raise OidcUnavailable("the identity provider answered with something unexpected", "code")
    return body


async def _oidc_metadata(request: Request) -> dict[str, Any]:
    """The provider's discovery document, fetched once per process."""
    runtime = request.app.state.runtime
    if runtime.oidc_metadata is None:
        issuer = runtime.settings.oidc_issuer.rstrip("/")
        metadata = await _fetch_json(f"{issuer}/.well-known/openid-configuration")
        if not all(isinstance(metadata.get(k), str) for k in ("authorization_endpoint", "token_endpoint", "jwks_uri")):
            raise OidcUnavailable("the identity provider's discovery document lacks an endpoint", "code")
        if str(metadata.get("issuer", "")).rstrip("/") != issuer:
            raise OidcUnavailable("the identity provider's discovery document names another issuer", "code")
        runtime.oidc_metadata = metadata
    return runtime.oidc_metadata


async def _oidc_jwks(request: Request, kid: str | None) -> dict[str, Any]:
    """The provider's signing keys, cached; fetched again once when a token names a key we do not have."""
    runtime = request.app.state.runtime
    if runtime.oidc_jwks is None or (kid is not None and not has_key(runtime.oidc_jwks, kid)):
        runtime.oidc_jwks = await _fetch_json((await _oidc_metadata(request))["jwks_uri"])
    return runtime.oidc_jwks


class OidcUnavailable(ServiceError):
    status, code = 503, "oidc_unavailable"


class OidcDisabled(ServiceError):
    status, code = 404, "oidc_disabled"


def _oidc_client(accounts: AccountsService, redirect_uri: str) -> Any:
    from authlib.integrations.httpx_client import AsyncOAuth2Client

    s = accounts.settings
    return AsyncOAuth2Client(client_id=s.oidc_client_id, client_secret=s.oidc_client_secret, scope=s.oidc_scopes,
                             redirect_uri=redirect_uri, code_challenge_method="S256", timeout=10)


@auth.get("/oidc/start", responses={404: {}, 422: {}, 503: {}})
async def oidc_start(request: Request, accounts: AccountsDep,
                     redirect_uri: Annotated[str, Query(max_length=2000, pattern=r"^https?://\S+$")]) -> dict[str, Any]:
    """Where to send the browser: the request carries state, nonce and a PKCE S256 code_challenge."""
    if not accounts.oidc_enabled:
        raise OidcDisabled("OpenID Connect sign-in is not configured", "redirect_uri")
    accounts.check_redirect_uri(redirect_uri)
    metadata = await _oidc_metadata(request)
    started = await accounts.begin_oidc(redirect_uri)
    async with _oidc_client(accounts, redirect_uri) as client:
        url, _ = client.create_authorization_url(metadata["authorization_endpoint"], state=started["state"],
                                                 nonce=started["nonce"], code_verifier=started["code_verifier"])
    return {"authorization_url": url, "state": started["state"]}


@auth.post("/oidc/callback", responses={**_AUTH_ERRORS, 404: {}, 503: {}})
async def oidc_callback(body: OidcCallbackIn, request: Request, accounts: AccountsDep,
                        cookie: bool = False) -> JSONResponse:
    """Sign in only after the state, the code exchange (with the PKCE verifier) and the id_token all check out."""
    if not accounts.oidc_enabled:
        raise OidcDisabled("OpenID Connect sign-in is not configured", "code")
    ip = client_ip(request)
    try:
        claims = await _verified_claims(body, request, accounts)
    except ServiceError as exc:
        await accounts.oidc_refused(exc, ip=ip)
        raise
    result = await accounts.sign_in_with_claims(claims, ip=ip, cookie=cookie)
    return _signed_in_response(request, result, cookie)


async def _verified_claims(body: OidcCallbackIn, request: Request, accounts: AccountsService) -> dict[str, Any]:
    accounts.check_redirect_uri(body.redirect_uri)
    started = await accounts.take_oidc_state(body.state, body.redirect_uri)
    metadata = await _oidc_metadata(request)
    refused = InvalidCredentials("the identity provider did not accept this sign-in", "code")
    try:
        async with _oidc_client(accounts, body.redirect_uri) as client:
            token = await client.fetch_token(metadata["token_endpoint"], code=body.code,
                                             redirect_uri=body.redirect_uri, code_verifier=started["code_verifier"])
    except (httpx.HTTPError, ValueError, KeyError) as exc:
        raise refused from exc
    except Exception as exc:  # authlib raises its own OAuthError family for a refused code
        if type(exc).__module__.startswith("authlib"):
            raise refused from exc
        raise
    id_token = token.get("id_token") if isinstance(token, dict) else None
    if not isinstance(id_token, str) or not id_token:
        raise InvalidCredentials("the identity provider sent no id_token", "code")
    s = accounts.settings
    try:
        claims = verify_id_token(id_token, await _oidc_jwks(request, token_kid(id_token)),
                                 issuer=metadata["issuer"], client_id=s.oidc_client_id, nonce=started["nonce"],
                                 now=accounts.clock.now(), leeway=s.oidc_leeway_seconds)
    except IdTokenRefused as exc:
        raise InvalidCredentials(str(exc), "code") from exc
    if s.oidc_username_claim not in claims and isinstance(metadata.get("userinfo_endpoint"), str):
        info = await _userinfo(accounts, body.redirect_uri, token, metadata["userinfo_endpoint"], refused)
        if info.get("sub") != claims["sub"]:
            raise InvalidCredentials("the identity provider's userinfo is for another subject", "code")
        claims = {**info, **claims}  # the verified id_token wins on every claim both carry
    return claims


async def _userinfo(accounts: AccountsService, redirect_uri: str, token: dict[str, Any], url: str,
                    refused: ServiceError) -> dict[str, Any]:
    """Claims the id_token left out (often the user name), trusted only for the id_token's own subject."""
    try:
        async with _oidc_client(accounts, redirect_uri) as client:
            client.token = token
            answer = await client.get(url)
            answer.raise_for_status()
            info = answer.json()
    except (httpx.HTTPError, ValueError) as exc:
        raise refused from exc
    return info if isinstance(info, dict) else {}


# --------------------------------------------------------------------------------------------------
# /v1/admin and the staff's template list
# --------------------------------------------------------------------------------------------------

admin_router = APIRouter(prefix="/v1/admin", tags=["admin"])
_ADMIN_ERRORS: dict[int | str, dict[str, Any]] = {401: {}, 403: {}, 404: {}, 409: {}, 422: {}}


PersonIdPath = Annotated[str, Path(pattern=PERSON_ID_PATTERN, description="an account's opaque id (p-…)")]


@admin_router.get("/accounts", responses=_ADMIN_ERRORS)
async def list_accounts(_: AdminDep, accounts: AccountsDep,
                        unit_id: Annotated[str | None, Query(pattern=UNIT_ID_PATTERN)] = None,
                        role: Role | None = None, page: Annotated[int, Query(ge=1, le=100000)] = 1,
                        page_size: Annotated[int, Query(ge=1, le=200)] = 50) -> dict[str, Any]:
    return await accounts.list_people(unit_id=unit_id, role=role, page=page, page_size=page_size)


@admin_router.post("/accounts", status_code=201, responses=_ADMIN_ERRORS)
async def create_account(body: AccountIn, principal: AdminDep, accounts: AccountsDep) -> dict[str, Any]:
    view, temporary = await accounts.create_person(
        principal, username=body.username, display_name=body.display_name, roles=body.roles, unit_id=body.unit_id,
        password=body.password, phone=body.phone, email=body.email,
        notify=body.notify.model_dump() if body.notify else None)
    return {**view, **({"temporary_password": temporary} if temporary else {})}


@admin_router.get("/accounts/{person_id}", responses=_ADMIN_ERRORS)
async def get_account(person_id: PersonIdPath, _: AdminDep, accounts: AccountsDep) -> dict[str, Any]:
    return await accounts.get_person(person_id)


@admin_router.patch("/accounts/{person_id}", responses=_ADMIN_ERRORS)
async def patch_account(person_id: PersonIdPath, body: AccountPatch, principal: AdminDep,
                        accounts: AccountsDep) -> dict[str, Any]:
    changes = body.model_dump(exclude_unset=True)
    if not changes:
        raise Invalid("nothing to change", None)
    for required in ("display_name", "roles", "disabled"):
        if required in changes and changes[required] is None:
            raise Invalid(f"{required} cannot be null", required)
    return await accounts.update_person(principal, person_id, changes)


@admin_router.post("/accounts/{person_id}/reset-password", responses=_ADMIN_ERRORS)
async def reset_password(person_id: PersonIdPath, principal: AdminDep, accounts: AccountsDep) -> dict[str, Any]:
    return {"temporary_password": await accounts.reset_password(principal, person_id)}


def _day_start(value: date | None, *, next_day: bool = False) -> datetime | None:
    if value is None:
        return None
    moment = datetime.combine(value, time(0), tzinfo=SHANGHAI)
    return moment + timedelta(days=1) if next_day else moment


@admin_router.get("/audit", responses=_ADMIN_ERRORS)
async def audit(_: AdminDep, accounts: AccountsDep,
                person_id: Annotated[str | None, Query(pattern=PERSON_ID_PATTERN)] = None,
                unit_id: Annotated[str | None, Query(pattern=UNIT_ID_PATTERN)] = None,
                case_id: Annotated[str | None, Query(pattern=r"^[A-Za-z0-9_.:-]{1,64}$")] = None,
                action: Annotated[str | None, Query(pattern=r"^[a-z_]{1,40}$")] = None,
                since: date | None = None, until: date | None = None,
                page: Annotated[int, Query(ge=1, le=100000)] = 1,
                page_size: Annotated[int, Query(ge=1, le=500)] = 100,
                format: Literal["json", "csv"] = "json") -> Any:
    """``since``/``until`` are dates in Asia/Shanghai, both included. CSV: every matching row (up to 50,000)."""
    if format == "csv":
        page, page_size = 1, 50_000
    result = await accounts.list_audit(person_id=person_id, unit_id=unit_id, case_id=case_id, action=action,
                                       since=_day_start(since), until=_day_start(until, next_day=True),
                                       page=page, page_size=page_size)
    if format == "csv":
        return Response(accounts.audit_csv(result["items"]).encode("utf-8"), media_type="text/csv; charset=utf-8",
                        headers={"Content-Disposition": 'attachment; filename="audit.csv"'})
    return result


@admin_router.get("/units/{unit_id}/settings", responses=_ADMIN_ERRORS)
async def get_unit_settings(unit_id: str, _: AdminDep, accounts: AccountsDep) -> dict[str, Any]:
    return await accounts.unit_settings(unit_id)


@admin_router.put("/units/{unit_id}/settings", responses=_ADMIN_ERRORS)
async def put_unit_settings(unit_id: str, body: UnitSettingsIn, principal: AdminDep,
                            accounts: AccountsDep) -> dict[str, Any]:
    return await accounts.put_unit_settings(principal, unit_id, body.reply_approval_required)


@admin_router.post("/reply-templates", status_code=201, responses=_ADMIN_ERRORS)
async def create_template(body: TemplateIn, principal: AdminDep, accounts: AccountsDep) -> dict[str, Any]:
    return await accounts.create_template(principal, body.unit_id, body.title, body.text)


@admin_router.put("/reply-templates/{template_id}", responses=_ADMIN_ERRORS)
async def update_template(template_id: str, body: TemplatePatch, principal: AdminDep,
                          accounts: AccountsDep) -> dict[str, Any]:
    changes = body.model_dump(exclude_none=True)
    if not changes:
        raise Invalid("nothing to change", None)
    return await accounts.update_template(principal, template_id, changes)


@admin_router.delete("/reply-templates/{template_id}", status_code=204, responses=_ADMIN_ERRORS)
async def delete_template(template_id: str, principal: AdminDep, accounts: AccountsDep) -> Response:
    await accounts.delete_template(principal, template_id)
    return Response(status_code=204)


@admin_router.get("/machine-tokens", responses=_ADMIN_ERRORS)
async def list_machine_tokens(_: AdminDep, accounts: AccountsDep) -> dict[str, Any]:
    return await accounts.list_machine_tokens()


@admin_router.post("/machine-tokens", status_code=201, responses=_ADMIN_ERRORS)
async def create_machine_token(body: MachineTokenIn, principal: AdminDep, accounts: AccountsDep) -> dict[str, Any]:
    """The token is shown once, in this answer; only its hash is kept."""
    return await accounts.create_machine_token(principal, body.name, body.kind)


@admin_router.delete("/machine-tokens/{token_id}", status_code=204, responses=_ADMIN_ERRORS)
async def revoke_machine_token(token_id: str, principal: AdminDep, accounts: AccountsDep) -> Response:
    await accounts.revoke_machine_token(principal, token_id)
    return Response(status_code=204)


templates = APIRouter(prefix="/v1", tags=["units and supervisors"])


@templates.get("/reply-templates", responses={401: {}, 403: {}})
async def reply_templates(principal: PrincipalDep, accounts: AccountsDep,
                          unit_id: Annotated[str | None, Query(pattern=UNIT_ID_PATTERN)] = None) -> dict[str, Any]:
    return await accounts.templates_for(principal, unit_id)


__all__ = ["MachineTokenKind", "admin_router", "auth", "templates"]
