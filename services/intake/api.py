"""HTTP entrypoints: the citizen API, the unit/supervisor API, Open311 GeoReport v2, health and metrics."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, FastAPI, Header, Path, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from prometheus_fastapi_instrumentator import Instrumentator
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from pymongo import AsyncMongoClient

from services.common.clock import Clock, clock_from_environment
from services.common.config import CommonSettings, TopicSettings, common_settings, topics
from services.common.events import (
    INVALID_REASON_NAMES,
    CaseStatus,
    Channel,
    Disposition,
    InvalidReason,
    Location,
    Rating,
)
from services.common.logging import get_logger
from services.common.metrics import METRICS_CONTENT_TYPE, render_metrics
from services.common.mongo import new_client, ping
from services.common.reference import ReferenceData, reference
from services.common.secret_compare import same_secret
from services.intake import domain
from services.intake.accounts_store import AccountsStore
from services.intake.auth import Credentials
from services.intake.auth_api import PrincipalDep, SupervisorDep, admin_router, auth, client_ip, templates
from services.intake.config import DEFAULT_SECRET, IntakeSettings
from services.intake.consumer import DecisionConsumer
from services.intake.domain import DomainError, IllegalTransition
from services.intake.handlers import IntakeService, NewPost, ServiceError
from services.intake.open311 import open311_router
from services.intake.people import AccountsService, Unauthorized
from services.intake.relay import OutboxRelay
from services.intake.store import CaseStore

log = get_logger(__name__)
PHONE_PATTERN = r"^1[3-9]\d{9}$"
TRACKING_PATTERN = r"^[A-Za-z0-9-]{4,32}$"
CASE_ID_PATTERN = r"^[A-Za-z0-9_.:-]{1,64}$"


# --------------------------------------------------------------------------------------------------
# Request bodies
# --------------------------------------------------------------------------------------------------


def _no_nul(value: str | None) -> str | None:
    if value is not None and "\x00" in value:
        raise ValueError("must not contain NUL characters")
    return value


class Body(BaseModel):
    model_config = ConfigDict(extra="forbid")

    @field_validator("*", mode="after")
    @classmethod
    def _reject_nul(cls, value: Any) -> Any:
        return _no_nul(value) if isinstance(value, str) else value


class PostIn(Body):
    channel: Literal["web", "wechat", "app", "sms", "phone"]
    title: str = Field(min_length=1, max_length=100)
    body: str = Field(min_length=1, max_length=5000)
    location: Location | None = None
    contact_phone: str = Field(pattern=PHONE_PATTERN)
    name: str | None = Field(None, max_length=50)
    anonymous: bool = False
    attachments: list[Annotated[str, Field(max_length=2000, pattern=r"^https?://[^\s]+$")]] = Field(
        default_factory=list, max_length=20)

    @field_validator("title", "body")
    @classmethod
    def _not_blank(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("must not be blank")
        return value


class PostAccepted(BaseModel):
    tracking_number: str
    status: str
    rating_token: str
    received_at: str


class RatingIn(Body):
    rating: Rating
    reason: str | None = Field(None, max_length=500)
    phone_last4: str | None = Field(None, pattern=r"^\d{4}$")
    rating_token: str | None = Field(None, max_length=64)


class ReasonIn(Body):
    reason: str = Field(min_length=2, max_length=500)


class OptionalReasonIn(Body):
    reason: str | None = Field(None, max_length=500)


class ReplyIn(Body):
    text: str = Field(min_length=1, max_length=10000)
    template_id: str | None = Field(None, pattern=r"^t-[a-f0-9]{16}$")


class ExtensionIn(Body):
    reason: str = Field(min_length=2, max_length=500)
    extra_working_days: int = Field(ge=1, le=30)


class ReassignIn(Body):
    category: str = Field(min_length=1, max_length=64)
    department_id: str = Field(min_length=1, max_length=64)
    reason: str = Field(min_length=2, max_length=500)


class CloseIn(Body):
    reason: str = Field(min_length=2, max_length=500)
    disposition: Disposition = Disposition.RESOLVED
    invalid_reason: InvalidReason | None = None


class FlagIn(Body):
    note: str | None = Field(None, max_length=500)


class SmsIn(BaseModel):
    model_config = ConfigDict(populate_by_name=True)

    sender: str = Field(alias="from", pattern=PHONE_PATTERN)
    text: str = Field(min_length=1, max_length=5000)

    @field_validator("text")
    @classmethod
    def _clean(cls, value: str) -> str:
        return _no_nul(value) or ""


# --------------------------------------------------------------------------------------------------
# Runtime wiring
# --------------------------------------------------------------------------------------------------


@dataclass
class Runtime:
    settings: IntakeSettings
    common: CommonSettings
    names: TopicSettings
    clock: Clock
    reference: ReferenceData
    credentials: Credentials
    client: AsyncMongoClient | None = None
    store: CaseStore | None = None
    service: IntakeService | None = None
    relay: OutboxRelay | None = None
    consumer: DecisionConsumer | None = None
    accounts: AccountsService | None = None
    oidc_metadata: dict[str, Any] | None = None
    tasks: list[asyncio.Task] = field(default_factory=list)


def _service(request: Request) -> IntakeService:
    service = request.app.state.runtime.service
    if service is None:  # pragma: no cover - only before start-up finished
        raise ServiceError("starting up")
    return service


ServiceDep = Annotated[IntakeService, Depends(_service)]
CaseIdPath = Annotated[str, Path(pattern=CASE_ID_PATTERN)]
TrackingPath = Annotated[str, Path(pattern=TRACKING_PATTERN)]


# --------------------------------------------------------------------------------------------------
# Routes
# --------------------------------------------------------------------------------------------------

citizen = APIRouter(prefix="/v1", tags=["citizens"])


@citizen.post("/posts", status_code=201, response_model=PostAccepted,
              responses={409: {"description": "Idempotency-Key reused"}, 422: {}, 429: {"description": "rate"}})
async def create_post(post: PostIn, request: Request, service: ServiceDep,
                      idempotency_key: Annotated[str | None, Header(max_length=200)] = None) -> Response:
    accepted = await service.submit(
        NewPost(channel=Channel(post.channel), title=post.title, body=post.body, contact_phone=post.contact_phone,
                name=post.name, anonymous=post.anonymous, location=post.location,
                attachments=tuple(post.attachments)),
        client_ip=request.client.host if request.client else None,
        idempotency_key=idempotency_key or None,
    )
    headers = {"Idempotent-Replayed": "true"} if accepted.replayed else None
    return JSONResponse(accepted.body, status_code=accepted.status_code, headers=headers)


@citizen.get("/posts/{tracking_number}", responses={404: {}})
async def get_post(tracking_number: TrackingPath, service: ServiceDep) -> dict[str, Any]:
    return await service.public_view(tracking_number)


@citizen.post("/posts/{tracking_number}/rating", responses={403: {}, 404: {}, 409: {}})
async def rate_post(tracking_number: TrackingPath, rating: RatingIn, service: ServiceDep) -> dict[str, Any]:
    return await service.rate(tracking_number, rating.rating, rating.reason, phone_last4=rating.phone_last4,
                              rating_token=rating.rating_token)


_SMS_SCHEMA = {"type": "object", "required": ["from", "text"], "properties": {
    "from": {"type": "string", "pattern": PHONE_PATTERN}, "text": {"type": "string", "minLength": 1,
                                                                 "maxLength": 5000}}}


_SMS_BODY = {"requestBody": {"required": True, "content": {
    "application/json": {"schema": _SMS_SCHEMA}, "application/x-www-form-urlencoded": {"schema": _SMS_SCHEMA}}}}


async def _sms_gateway(request: Request,
                       token: Annotated[str | None, Header(alias="X-Sms-Gateway-Token")] = None) -> None:
    """Only the SMS gateway may say which phone a text came from: it proves itself with the shared secret of
    the settings or with an admin-issued machine token of kind ``sms_gateway``."""
    runtime = request.app.state.runtime
    expected = runtime.settings.sms_gateway_token
    if expected is None and not token:
        return
    if not token:
        raise Unauthorized("the SMS gateway's token is required", "X-Sms-Gateway-Token")
    if expected is not None and same_secret(token, expected):
        return
    if await runtime.accounts.machine_token_ok(token, "sms_gateway"):
        return
    raise Unauthorized("wrong SMS gateway token", "X-Sms-Gateway-Token")


@citizen.post("/sms/inbound", responses={401: {}, 422: {}, 429: {}}, openapi_extra=_SMS_BODY,
              dependencies=[Depends(_sms_gateway)])
async def sms_inbound(request: Request, service: ServiceDep) -> dict[str, Any]:
    """The SMS gateway's webhook: `查询 <tracking number>` answers the status, other text becomes a post."""
    raw: Any
    if request.headers.get("content-type", "").startswith("application/json"):
        try:
            raw = json.loads(await request.body())
        except (ValueError, UnicodeDecodeError) as exc:
            raise RequestValidationError([{"type": "json_invalid", "loc": ("body",), "msg": str(exc)[:200],
                                           "input": None}]) from exc
    else:
        raw = dict(await request.form())
    try:
        sms = SmsIn.model_validate(raw)
    except ValidationError as exc:
        raise RequestValidationError(exc.errors(include_url=False, include_context=False)) from exc
    return await service.sms_inbound(sms.sender, sms.text)


cases = APIRouter(prefix="/v1", tags=["units and supervisors"])


@cases.get("/cases", responses={401: {}})
async def list_cases(principal: PrincipalDep, request: Request, service: ServiceDep,
                     status: CaseStatus | None = None, overdue: bool | None = None,
                     page: Annotated[int, Query(ge=1, le=100000)] = 1,
                     page_size: Annotated[int, Query(ge=1, le=200)] = 50) -> dict[str, Any]:
    return await service.list_cases(principal, status=status, overdue=overdue, page=page, page_size=page_size)


@cases.get("/triage", responses={401: {}, 403: {}})
async def triage_queue(principal: SupervisorDep, service: ServiceDep,
                       page: Annotated[int, Query(ge=1, le=100000)] = 1,
                       page_size: Annotated[int, Query(ge=1, le=200)] = 50) -> dict[str, Any]:
    return await service.triage_queue(principal, page, page_size)


@cases.get("/cases/{case_id}", responses={401: {}, 403: {}, 404: {}})
async def get_case(case_id: CaseIdPath, principal: PrincipalDep, service: ServiceDep) -> dict[str, Any]:
    return await service.internal_view(case_id, principal)


_COMMAND_RESPONSES: dict[int | str, dict[str, Any]] = {401: {}, 403: {}, 404: {}, 409: {}}


@cases.post("/cases/{case_id}/sign", responses=_COMMAND_RESPONSES)
async def sign(case_id: CaseIdPath, principal: PrincipalDep, service: ServiceDep) -> dict[str, Any]:
    return await service.command(case_id, domain.Sign(), principal)


@cases.post("/cases/{case_id}/reply", responses={**_COMMAND_RESPONSES, 202: {"description": "awaits the lead"},
                                                 422: {}})
async def reply(case_id: CaseIdPath, body: ReplyIn, principal: PrincipalDep, service: ServiceDep) -> JSONResponse:
    """A unit's public reply; 202 with ``pending_reply`` when the unit's lead must approve it first."""
    view = await service.reply(case_id, body.text, body.template_id, principal)
    return JSONResponse(view, status_code=202 if view.get("pending_reply") else 200)


@cases.post("/cases/{case_id}/reply/approve", responses=_COMMAND_RESPONSES)
async def approve_reply(case_id: CaseIdPath, principal: PrincipalDep, service: ServiceDep) -> dict[str, Any]:
    return await service.command(case_id, domain.ApproveReply(), principal)


@cases.post("/cases/{case_id}/reply/reject", responses=_COMMAND_RESPONSES)
async def reject_reply(case_id: CaseIdPath, body: ReasonIn, principal: PrincipalDep,
                       service: ServiceDep) -> dict[str, Any]:
    return await service.command(case_id, domain.RejectReply(body.reason), principal)


@cases.post("/cases/{case_id}/contact", responses={401: {}, 403: {}, 404: {}})
async def reveal_contact(case_id: CaseIdPath, request: Request, principal: PrincipalDep,
                         service: ServiceDep) -> JSONResponse:
    """The poster's phone and name (null for an anonymous post), for the unit holding the case: audited."""
    contact = await service.reveal_contact(case_id, principal, client_ip(request))
    return JSONResponse(contact, headers={"Cache-Control": "no-store"})


@cases.post("/cases/{case_id}/return", responses=_COMMAND_RESPONSES)
async def return_case(case_id: CaseIdPath, body: ReasonIn, principal: PrincipalDep,
                      service: ServiceDep) -> dict[str, Any]:
    window = service.settings.return_window_working_days
    return await service.command(case_id, domain.Return(body.reason, window), principal)


@cases.post("/cases/{case_id}/extension", responses=_COMMAND_RESPONSES)
async def request_extension(case_id: CaseIdPath, body: ExtensionIn, principal: PrincipalDep,
                            service: ServiceDep) -> dict[str, Any]:
    return await service.command(case_id, domain.RequestExtension(body.reason, body.extra_working_days), principal)


@cases.post("/cases/{case_id}/extension/approve", responses=_COMMAND_RESPONSES)
async def approve_extension(case_id: CaseIdPath, principal: SupervisorDep, service: ServiceDep) -> dict[str, Any]:
    return await service.command(case_id, domain.ApproveExtension(), principal)


@cases.post("/cases/{case_id}/extension/deny", responses=_COMMAND_RESPONSES)
async def deny_extension(case_id: CaseIdPath, body: OptionalReasonIn, principal: SupervisorDep,
                         service: ServiceDep) -> dict[str, Any]:
    return await service.command(case_id, domain.DenyExtension(body.reason), principal)


@cases.post("/cases/{case_id}/reassign", responses={**_COMMAND_RESPONSES, 422: {}})
async def reassign(case_id: CaseIdPath, body: ReassignIn, principal: SupervisorDep,
                   service: ServiceDep) -> dict[str, Any]:
    return await service.command(case_id, service.reassign_command(body.category, body.department_id, body.reason),
                                 principal)


@cases.post("/cases/{case_id}/reopen", responses=_COMMAND_RESPONSES)
async def reopen(case_id: CaseIdPath, body: ReasonIn, principal: SupervisorDep, service: ServiceDep) -> dict[str, Any]:
    command = domain.Reopen(body.reason, working_days=service.settings.reopen_working_days)
    return await service.command(case_id, command, principal)


@cases.post("/cases/{case_id}/close", responses=_COMMAND_RESPONSES)
async def close(case_id: CaseIdPath, body: CloseIn, principal: SupervisorDep, service: ServiceDep) -> dict[str, Any]:
    """Close out (销号). ``disposition: invalid`` with an ``invalid_reason`` code marks a post that was never a
    valid request (spam, not a government matter…): it is counted apart and not as received."""
    command = domain.Close(body.reason, disposition=body.disposition, invalid_reason=body.invalid_reason)
    return await service.command(case_id, command, principal)


@cases.get("/reference")
async def reference_data(request: Request) -> dict[str, Any]:
    """Units (with county, kind, categories and the places they serve), categories (with working days by kind),
    counties with their townships, and the invalid-reason codes: for pickers."""
    data = request.app.state.runtime.reference.as_public_dict()
    data["invalid_reasons"] = [{"code": code.value, "name": name} for code, name in INVALID_REASON_NAMES.items()]
    return data


@cases.post("/cases/{case_id}/flag", responses=_COMMAND_RESPONSES)
async def flag(case_id: CaseIdPath, body: FlagIn, principal: SupervisorDep, service: ServiceDep) -> dict[str, Any]:
    return await service.command(case_id, domain.Flag(body.note), principal)


ops = APIRouter(tags=["operations"])


@ops.get("/healthz")
async def healthz() -> dict[str, str]:
    return {"status": "alive"}


@ops.get("/readyz", responses={503: {}})
async def readyz(request: Request) -> JSONResponse:
    runtime: Runtime = request.app.state.runtime
    checks = {"mongo": bool(runtime.client and await ping(runtime.client))}
    if runtime.settings.relay_enabled:
        checks["kafka"] = bool(runtime.relay and (runtime.relay.healthy or runtime.relay.producer is not None))
    if runtime.settings.consumer_enabled:
        checks["consuming"] = bool(runtime.consumer and runtime.consumer.running)
    ready = all(checks.values())
    return JSONResponse({"ready": ready, "checks": checks}, status_code=200 if ready else 503)


@ops.get("/metrics")
async def metrics_endpoint() -> Response:
    return Response(render_metrics(), media_type=METRICS_CONTENT_TYPE)


# --------------------------------------------------------------------------------------------------
# Errors
# --------------------------------------------------------------------------------------------------


def _error(http_status: int, code: str, message: str, field: str | None, request: Request,
           **extra: Any) -> JSONResponse:
    if request.url.path.startswith("/open311/"):
        return JSONResponse([{"code": http_status, "description": message}], status_code=http_status)
    headers = {"WWW-Authenticate": "Bearer"} if http_status == 401 and field == "Authorization" else None
    if "retry_after" in extra:
        headers = {"Retry-After": str(extra.pop("retry_after"))}
    body = {"error": {"code": code, "message": message, "field": field, **extra}}
    return JSONResponse(body, status_code=http_status, headers=headers)


def _install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ServiceError)
    async def _service_error(request: Request, exc: ServiceError) -> JSONResponse:
        extra = dict(exc.extra)
        if hasattr(exc, "retry_after"):
            extra["retry_after"] = exc.retry_after
        return _error(exc.status, exc.code, exc.message, exc.field, request, **extra)

    @app.exception_handler(DomainError)
    async def _domain_error(request: Request, exc: DomainError) -> JSONResponse:
        extra: dict[str, Any] = {}
        if isinstance(exc, IllegalTransition):
            extra = {"status": exc.status.value, "allowed_actions": exc.allowed}
        return _error(409, exc.code, exc.message, exc.field, request, **extra)

    @app.exception_handler(RequestValidationError)
    async def _validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = exc.errors()
        first = errors[0] if errors else {"loc": (), "msg": "invalid request"}
        loc = [str(p) for p in first.get("loc", ()) if p not in ("body", "query", "path", "header")]
        message = f"{first.get('msg', 'invalid')}" + (f" (and {len(errors) - 1} more)" if len(errors) > 1 else "")
        return _error(422, "validation_error", message, ".".join(loc) or None, request)


# --------------------------------------------------------------------------------------------------
# The app
# --------------------------------------------------------------------------------------------------


def create_app(settings: IntakeSettings | None = None, *, common: CommonSettings | None = None,
               names: TopicSettings | None = None, clock: Clock | None = None,
               reference_data: ReferenceData | None = None, credentials: Credentials | None = None) -> FastAPI:
    settings = settings or IntakeSettings()
    common = common or common_settings()
    runtime = Runtime(settings=settings, common=common, names=names or topics(),
                      clock=clock or clock_from_environment(), reference=reference_data or reference(),
                      credentials=credentials or load_credentials(settings, common))

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await start_runtime(runtime)
        try:
            yield
        finally:
            await stop_runtime(runtime)

    app = FastAPI(title="Wenzheng intake", version="1.0.0", lifespan=lifespan,
                  description="The only door into the platform: posts, case commands, Open311.")
    app.state.runtime = runtime
    _install_error_handlers(app)
    for router in (citizen, auth, cases, templates, admin_router, open311_router, ops):
        app.include_router(router)
    Instrumentator(excluded_handlers=["/metrics", "/healthz", "/readyz"]).instrument(app)
    return app


def load_credentials(settings: IntakeSettings, common: CommonSettings) -> Credentials:
    try:
        credentials = Credentials.from_file(settings.credentials_file)
    except FileNotFoundError:
        credentials = Credentials.empty()
    except (OSError, ValueError, AttributeError) as exc:
        raise SystemExit(f"intake: cannot read credentials {settings.credentials_file}: {exc}") from exc
    if common.environment == "production" and settings.secret in (DEFAULT_SECRET, ""):
        raise SystemExit("intake: set WENZHENG_INTAKE_SECRET; refusing to start in production with the default")
    if common.environment == "production" and not settings.sms_gateway_token:
        raise SystemExit("intake: set WENZHENG_INTAKE_SMS_GATEWAY_TOKEN; refusing to start in production without it")
    return credentials


async def start_runtime(runtime: Runtime) -> None:
    settings, common = runtime.settings, runtime.common
    runtime.client = new_client(common.mongo_url)
    runtime.store = CaseStore(runtime.client[settings.database])
    await runtime.store.ensure_indexes()
    runtime.relay = OutboxRelay(runtime.store, runtime.names, settings.relay_bootstrap or common.kafka_bootstrap,
                                batch=settings.relay_batch, idle_seconds=settings.relay_idle_seconds,
                                lease_seconds=settings.relay_lease_seconds,
                                min_interval_seconds=settings.relay_min_interval_seconds)
    runtime.service = IntakeService(runtime.store, settings, runtime.clock, runtime.reference,
                                    topic_names=runtime.names, on_commit=runtime.relay.notify)
    accounts_store = AccountsStore(runtime.client[settings.database])
    await accounts_store.ensure_indexes()
    runtime.accounts = AccountsService(accounts_store, settings, runtime.clock, runtime.reference,
                                       production=common.environment == "production", on_commit=runtime.relay.notify)
    runtime.service.accounts = runtime.accounts
    if settings.relay_enabled:
        runtime.tasks.append(asyncio.create_task(runtime.relay.run(), name="outbox-relay"))
    if settings.consumer_enabled:
        runtime.consumer = DecisionConsumer(runtime.service, runtime.names, common.kafka_bootstrap,
                                            settings.consumer_group, settings.source)
        runtime.tasks.append(asyncio.create_task(runtime.consumer.run(), name="decision-consumer"))
    log.info("intake_started", database=settings.database, reference=runtime.reference.version,
             started_at=datetime.now(UTC).isoformat())


async def stop_runtime(runtime: Runtime) -> None:
    if runtime.consumer:
        await runtime.consumer.stop()
    for task in runtime.tasks:
        task.cancel()
    for task in runtime.tasks:
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await asyncio.wait_for(task, 10)
    runtime.tasks.clear()
    if runtime.relay:
        await runtime.relay.stop()
    if runtime.client is not None:
        await runtime.client.close()
