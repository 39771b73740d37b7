"""HTTP entrypoints: the citizen API, the unit/supervisor API, Open311 GeoReport v2, health and metrics."""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import date
from typing import Annotated, Any, ClassVar, Literal

from fastapi import APIRouter, Depends, FastAPI, Header, Path, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from prometheus_fastapi_instrumentator import Instrumentator
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StrictBool,
    ValidationError,
    field_validator,
    model_validator,
)

from services.common.clock import Clock, clock_from_environment
from services.common.config import CommonSettings, TopicSettings, common_settings, topics
from services.common.errors import BodyLimits, document_errors, error_body, install_error_handlers, render_error
from services.common.events import (
    INVALID_REASON_NAMES,
    CaseStatus,
    Channel,
    Disposition,
    InvalidReason,
    Location,
    NoticeMethod,
    Rating,
)
from services.common.logging import get_logger
from services.common.metrics import METRICS_CONTENT_TYPE, render_metrics
from services.common.mongo import ping
from services.common.reference import ReferenceData, reference
from services.common.secret_compare import same_secret
from services.intake import domain
from services.intake.accounts import Principal
from services.intake.auth import Credentials
from services.intake.auth_api import (
    SESSION_COOKIE,
    AccountsDep,
    PrincipalDep,
    SupervisorDep,
    admin_router,
    auth,
    client_ip,
    signed_in,
    templates,
)
from services.intake.config import IntakeSettings
from services.intake.domain import DomainError, IllegalTransition
from services.intake.handlers import (
    BoardFilter,
    CaseFilter,
    IntakeService,
    Invalid,
    NewPost,
    ServiceError,
    TooLarge,
    UnsupportedMediaType,
)
from services.intake.open311 import open311_error, open311_router
from services.intake.people import Unauthorized
from services.intake.runtime import Runtime, load_credentials, start_runtime, stop_runtime
from services.intake.wechat import wechat_router

log = get_logger(__name__)
PHONE_PATTERN = r"^1[3-9]\d{9}$"
TRACKING_PATTERN = r"^[A-Za-z0-9-]{4,32}$"
CASE_ID_PATTERN = r"^[A-Za-z0-9_.:-]{1,64}$"
ATTACHMENT_ID_PATTERN = r"^a-[0-9a-f]{24}$"
MAX_ATTACHMENTS_PER_POST = 9
MAX_BULK_CASES = 100
BOARD_PAGE_SIZE_MAX = 50


# --------------------------------------------------------------------------------------------------
# Request bodies
# --------------------------------------------------------------------------------------------------


def _no_nul(value: str | None) -> str | None:
    if value is not None and "\x00" in value:
        raise ValueError("must not contain NUL characters")
    return value


NO_NUL_PATTERN = r"^[^\x00]*$"
NOT_BLANK_PATTERN = r"^[^\x00]*[^\s\x00][^\x00]*$"


def _document_string_rules(schema: dict[str, Any], model: type) -> None:
    """The OpenAPI says what the validators refuse: NUL characters anywhere, blank titles and texts."""
    not_blank = getattr(model, "NOT_BLANK", ())

    def patch(name: str, node: dict[str, Any]) -> None:
        if node.get("type") == "string" and "pattern" not in node and "enum" not in node:
            node["pattern"] = NOT_BLANK_PATTERN if name in not_blank else NO_NUL_PATTERN
        for inner in node.get("anyOf", []):
            patch(name, inner)
        if isinstance(node.get("items"), dict):
            patch("", node["items"])

    for name, node in schema.get("properties", {}).items():
        patch(name, node)


def _json_number(value: Any) -> Any:
    """JSON numbers only: no "1.5" strings and no booleans slipping through pydantic's lax mode."""
    if isinstance(value, str | bool):
        raise ValueError("must be a JSON number")
    return value


_NUMBER = BeforeValidator(_json_number)


def _iso_date_only(value: Any) -> Any:
    """``YYYY-MM-DD`` only: pydantic would also take ``0`` (a Unix time) for a date."""
    if isinstance(value, date):
        return value
    if not isinstance(value, str) or not re.fullmatch(r"\d{4}-\d{2}-\d{2}", value):
        raise ValueError("expected a date YYYY-MM-DD")
    return value


IsoDate = Annotated[date, BeforeValidator(_iso_date_only)]


class Body(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra=_document_string_rules)

    @field_validator("*", mode="after")
    @classmethod
    def _reject_nul(cls, value: Any) -> Any:
        return _no_nul(value) if isinstance(value, str) else value


class LocationIn(Body):
    county: str | None = Field(None, max_length=32)
    township: str | None = Field(None, max_length=32)
    address: str | None = Field(None, max_length=200)
    lat: Annotated[float, Field(ge=-90, le=90), _NUMBER] | None = None
    lng: Annotated[float, Field(ge=-180, le=180), _NUMBER] | None = None


class PostIn(Body):
    NOT_BLANK: ClassVar[tuple[str, ...]] = ("title", "body")
    channel: Literal["web", "wechat", "app", "sms", "phone"]
    title: str = Field(min_length=1, max_length=100)
    body: str = Field(min_length=1, max_length=5000)
    location: LocationIn | None = None
    contact_phone: str = Field(pattern=PHONE_PATTERN)
    name: str | None = Field(None, max_length=50)
    anonymous: StrictBool = False
    attachments: list[Annotated[str, Field(max_length=2000, pattern=r"^https?://[!-~]+$")]] = Field(
        default_factory=list, max_length=20)
    attachment_ids: list[Annotated[str, Field(pattern=ATTACHMENT_ID_PATTERN)]] = Field(
        default_factory=list, max_length=MAX_ATTACHMENTS_PER_POST, description="photos from POST /v1/attachments",
        json_schema_extra={"uniqueItems": True})

    @field_validator("title", "body")
    @classmethod
    def _not_blank(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("must not be blank")
        return value

    @model_validator(mode="after")
    def _at_most_20_attachments(self) -> PostIn:
        if len(self.attachments) + len(self.attachment_ids) > 20:
            raise ValueError("at most 20 attachments (links and photos together)")
        return self


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
    extra_working_days: Annotated[int, Field(ge=1, le=30), _NUMBER]


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


class ModerateIn(Body):
    """Both absent: approve the redacted text as it is; either given: the corrected publishable text."""

    title: str | None = Field(None, min_length=1, max_length=100)
    body: str | None = Field(None, min_length=1, max_length=5000)


class NoticeIn(Body):
    method: NoticeMethod
    note: str = Field(min_length=1, max_length=500)
    reply_by: IsoDate


class AnswerIn(Body):
    text: str = Field(min_length=1, max_length=2000)


def _callback_schema(schema: dict[str, Any], model: type) -> None:
    _document_string_rules(schema, model)
    schema["oneOf"] = [{"properties": {"reached": {"const": True}}},
                       {"properties": {"reached": {"const": False}, "rating": {"type": "null"}}}]


class CallbackIn(Body):
    model_config = ConfigDict(extra="forbid", json_schema_extra=_callback_schema)
    reached: StrictBool
    rating: Rating | None = None
    note: str = Field("", max_length=500)

    @model_validator(mode="after")
    def _rating_needs_reached(self) -> CallbackIn:
        if self.rating is not None and not self.reached:
            raise ValueError("a rating can only be recorded when the citizen was reached")
        return self


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

# one router per resource; the tags group them for people reading the OpenAPI
posts = APIRouter(prefix="/v1", tags=["citizens"])
sms = APIRouter(prefix="/v1", tags=["citizens"])
attachments = APIRouter(prefix="/v1", tags=["citizens"])
reference_router = APIRouter(prefix="/v1", tags=["units and supervisors"])


@posts.post("/posts", status_code=201, response_model=PostAccepted,
              responses={404: {"description": "an attachment id names no upload"},
                         409: {"description": "Idempotency-Key reused, or an attachment of another post"}, 422: {},
                         429: {"description": "rate"},
                         503: {"description": "intake is overloaded: retry after Retry-After seconds"}})
async def create_post(post: PostIn, request: Request, service: ServiceDep,
                      idempotency_key: Annotated[str | None, Header(max_length=200)] = None) -> Response:
    accepted = await service.submit(
        NewPost(channel=Channel(post.channel), title=post.title, body=post.body, contact_phone=post.contact_phone,
                name=post.name, anonymous=post.anonymous,
                location=Location(**post.location.model_dump()) if post.location else None,
                attachments=tuple(post.attachments), attachment_ids=tuple(post.attachment_ids)),
        client_ip=request.client.host if request.client else None,
        idempotency_key=idempotency_key or None,
    )
    headers = {"Idempotent-Replayed": "true"} if accepted.replayed else None
    return JSONResponse(accepted.body, status_code=accepted.status_code, headers=headers)


@posts.get("/posts/{tracking_number}", responses={404: {}})
async def get_post(tracking_number: TrackingPath, service: ServiceDep) -> dict[str, Any]:
    return await service.public_view(tracking_number)


@posts.post("/posts/{tracking_number}/rating", responses={403: {}, 404: {}, 409: {}})
async def rate_post(tracking_number: TrackingPath, rating: RatingIn, service: ServiceDep) -> dict[str, Any]:
    return await service.rate(tracking_number, rating.rating, rating.reason, phone_last4=rating.phone_last4,
                              rating_token=rating.rating_token)


_SMS_SCHEMA = {"type": "object", "required": ["from", "text"], "properties": {
    "from": {"type": "string", "pattern": PHONE_PATTERN}, "text": {"type": "string", "minLength": 1,
                                                                 "maxLength": 5000, "pattern": NO_NUL_PATTERN}}}


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


@sms.post("/sms/inbound", responses={401: {}, 422: {}, 429: {}, 503: {}}, openapi_extra=_SMS_BODY,
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


@cases.get("/cases", responses={401: {}, 403: {}})
async def list_cases(principal: PrincipalDep, service: ServiceDep,
                     status: CaseStatus | None = None, overdue: bool | None = None,
                     bucket: domain.Bucket | None = None,
                     q: Annotated[str | None, Query(max_length=100)] = None,
                     since: IsoDate | None = None, until: IsoDate | None = None,
                     category: Annotated[str | None, Query(max_length=64)] = None,
                     county: Annotated[str | None, Query(max_length=32)] = None,
                     department_id: Annotated[str | None, Query(max_length=64)] = None,
                     pending_extension: bool | None = None,
                     rating: Rating | None = None,
                     flagged: bool | None = None,
                     awaiting_moderation: bool | None = None,
                     page: Annotated[int, Query(ge=1, le=100000)] = 1,
                     page_size: Annotated[int, Query(ge=1, le=200)] = 50) -> dict[str, Any]:
    filters = CaseFilter(status=status, overdue=overdue, bucket=bucket, q=q, since=since, until=until,
                         category=category, county=county, department_id=department_id,
                         pending_extension=pending_extension, rating=rating, flagged=flagged,
                         awaiting_moderation=awaiting_moderation)
    return await service.list_cases(principal, filters, page=page, page_size=page_size)


@cases.get("/inbox/counts", responses={401: {}, 403: {}})
async def inbox_counts(principal: PrincipalDep, service: ServiceDep,
                       department_id: Annotated[str | None, Query(max_length=64)] = None) -> dict[str, int]:
    return await service.inbox_counts(principal, department_id)


@cases.get("/notices", responses={401: {}, 403: {}})
async def list_notices(principal: PrincipalDep, service: ServiceDep,
                       open_only: Annotated[bool, Query(alias="open")] = False,
                       department_id: Annotated[str | None, Query(max_length=64)] = None) -> dict[str, Any]:
    """督办 notices of the person's unit (supervisors: every unit, or ``department_id``)."""
    return await service.notices(principal, open_only=open_only, department_id=department_id)


@cases.get("/triage", responses={401: {}, 403: {}})
async def triage_queue(principal: SupervisorDep, service: ServiceDep,
                       page: Annotated[int, Query(ge=1, le=100000)] = 1,
                       page_size: Annotated[int, Query(ge=1, le=200)] = 50) -> dict[str, Any]:
    return await service.triage_queue(principal, page, page_size)


@cases.get("/cases/{case_id}", responses={401: {}, 403: {}, 404: {}})
async def get_case(case_id: CaseIdPath, principal: PrincipalDep, service: ServiceDep) -> dict[str, Any]:
    return await service.internal_view(case_id, principal)


_COMMAND_RESPONSES: dict[int | str, dict[str, Any]] = {401: {}, 403: {}, 404: {}, 409: {}}


# Every case command once: its body (None: none) and how it becomes a domain command. The single-case
# routes and the bulk route both go through this table and then through IntakeService.command.
CommandBuilder = Callable[[IntakeService, Any], domain.Command]
COMMANDS: dict[str, tuple[type[Body] | None, CommandBuilder]] = {
    "sign": (None, lambda svc, b: domain.Sign()),
    "return": (ReasonIn, lambda svc, b: domain.Return(b.reason, svc.settings.return_window_working_days)),
    "request_extension": (ExtensionIn, lambda svc, b: domain.RequestExtension(b.reason, b.extra_working_days)),
    "approve_extension": (None, lambda svc, b: domain.ApproveExtension()),
    "deny_extension": (OptionalReasonIn, lambda svc, b: domain.DenyExtension(b.reason)),
    "reassign": (ReassignIn, lambda svc, b: svc.reassign_command(b.category, b.department_id, b.reason)),
    "reopen": (ReasonIn, lambda svc, b: domain.Reopen(b.reason, working_days=svc.settings.reopen_working_days)),
    "close": (CloseIn, lambda svc, b: domain.Close(b.reason, disposition=b.disposition,
                                                   invalid_reason=b.invalid_reason)),
    "flag": (FlagIn, lambda svc, b: domain.Flag(b.note)),
    "notice": (NoticeIn, lambda svc, b: domain.IssueNotice(b.method, b.note, b.reply_by)),
    "callback": (CallbackIn, lambda svc, b: domain.RecordCallback(
        b.reached, b.note, b.rating, auto_reopen_on_unsatisfied=svc.settings.auto_reopen_on_unsatisfied,
        reopen_working_days=svc.settings.reopen_working_days)),
}


async def _run(service: IntakeService, principal: Principal, case_id: str, action: str, body: Any) -> dict[str, Any]:
    return await service.command(case_id, COMMANDS[action][1](service, body), principal)


@cases.post("/cases/{case_id}/sign", responses=_COMMAND_RESPONSES)
async def sign(case_id: CaseIdPath, principal: PrincipalDep, service: ServiceDep) -> dict[str, Any]:
    return await _run(service, principal, case_id, "sign", None)


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
    return await _run(service, principal, case_id, "return", body)


@cases.post("/cases/{case_id}/extension", responses=_COMMAND_RESPONSES)
async def request_extension(case_id: CaseIdPath, body: ExtensionIn, principal: PrincipalDep,
                            service: ServiceDep) -> dict[str, Any]:
    return await _run(service, principal, case_id, "request_extension", body)


@cases.post("/cases/{case_id}/extension/approve", responses=_COMMAND_RESPONSES)
async def approve_extension(case_id: CaseIdPath, principal: SupervisorDep, service: ServiceDep) -> dict[str, Any]:
    return await _run(service, principal, case_id, "approve_extension", None)


@cases.post("/cases/{case_id}/extension/deny", responses=_COMMAND_RESPONSES)
async def deny_extension(case_id: CaseIdPath, body: OptionalReasonIn, principal: SupervisorDep,
                         service: ServiceDep) -> dict[str, Any]:
    return await _run(service, principal, case_id, "deny_extension", body)


@cases.post("/cases/{case_id}/reassign", responses={**_COMMAND_RESPONSES, 422: {}})
async def reassign(case_id: CaseIdPath, body: ReassignIn, principal: SupervisorDep,
                   service: ServiceDep) -> dict[str, Any]:
    return await _run(service, principal, case_id, "reassign", body)


@cases.post("/cases/{case_id}/reopen", responses=_COMMAND_RESPONSES)
async def reopen(case_id: CaseIdPath, body: ReasonIn, principal: SupervisorDep, service: ServiceDep) -> dict[str, Any]:
    return await _run(service, principal, case_id, "reopen", body)


@cases.post("/cases/{case_id}/close", responses=_COMMAND_RESPONSES)
async def close(case_id: CaseIdPath, body: CloseIn, principal: SupervisorDep, service: ServiceDep) -> dict[str, Any]:
    """Close out (销号). ``disposition: invalid`` with an ``invalid_reason`` code marks a post that was never a
    valid request (spam, not a government matter…): it is counted apart and not as received."""
    return await _run(service, principal, case_id, "close", body)


@reference_router.get("/reference")
async def reference_data(request: Request) -> dict[str, Any]:
    """Units (with county, kind, categories and the places they serve), categories (with working days by kind),
    counties with their townships, and the invalid-reason codes: for pickers."""
    data = request.app.state.runtime.reference.as_public_dict()
    data["invalid_reasons"] = [{"code": code.value, "name": name} for code, name in INVALID_REASON_NAMES.items()]
    return data


@cases.post("/cases/{case_id}/flag", responses=_COMMAND_RESPONSES)
async def flag(case_id: CaseIdPath, body: FlagIn, principal: SupervisorDep, service: ServiceDep) -> dict[str, Any]:
    return await _run(service, principal, case_id, "flag", body)


@cases.post("/cases/{case_id}/notices", responses={**_COMMAND_RESPONSES, 422: {}})
async def issue_notice(case_id: CaseIdPath, body: NoticeIn, principal: SupervisorDep,
                       service: ServiceDep) -> dict[str, Any]:
    """督办: a supervision notice to the responsible unit (phone, on site or meeting) with a reply-by day."""
    return await _run(service, principal, case_id, "notice", body)


@cases.post("/cases/{case_id}/notices/{notice_id}/answer", responses={**_COMMAND_RESPONSES, 422: {}})
async def answer_notice(case_id: CaseIdPath, notice_id: Annotated[str, Path(pattern=r"^n\d{1,4}$")], body: AnswerIn,
                        principal: PrincipalDep, service: ServiceDep) -> dict[str, Any]:
    return await service.command(case_id, domain.AnswerNotice(notice_id, body.text), principal)


@cases.post("/cases/{case_id}/callback", responses={**_COMMAND_RESPONSES, 422: {}})
async def record_callback(case_id: CaseIdPath, body: CallbackIn, principal: SupervisorDep,
                          service: ServiceDep) -> dict[str, Any]:
    """回访: the office called the citizen; reached with a rating on a replied case rates it for them."""
    return await _run(service, principal, case_id, "callback", body)


@cases.post("/cases/{case_id}/moderate", responses={**_COMMAND_RESPONSES, 422: {}})
async def moderate(case_id: CaseIdPath, body: ModerateIn, principal: SupervisorDep,
                   service: ServiceDep) -> dict[str, Any]:
    """Approve the redacted text as it is (``{}``) or correct it (``title``/``body``): the case becomes public."""
    return await service.moderate(case_id, principal, body.title, body.body)


class BulkIn(BaseModel):
    """The action, up to 100 case ids, and the arguments of that action's single-case body."""

    model_config = ConfigDict(extra="allow")

    action: Literal[tuple([*COMMANDS, "approve_text"])]  # type: ignore[valid-type]
    case_ids: list[Annotated[str, Field(pattern=CASE_ID_PATTERN)]] = Field(min_length=1, max_length=MAX_BULK_CASES)


def _bulk_body() -> dict[str, Any]:
    """The bulk body as it really is: one variant per action, each with that action's own arguments, so the
    OpenAPI says which arguments an action needs (a callback needs ``reached``)."""
    case_ids = BulkIn.model_json_schema()["properties"]["case_ids"]
    variants = []
    for action in [*COMMANDS, "approve_text"]:
        model = COMMANDS[action][0] if action in COMMANDS else None
        schema = model.model_json_schema(ref_template="#/components/schemas/{model}") if model else {}
        variant: dict[str, Any] = {
            "type": "object", "additionalProperties": False,
            "required": ["action", "case_ids", *schema.get("required", [])],
            "properties": {"action": {"const": action}, "case_ids": case_ids, **schema.get("properties", {})}}
        if "oneOf" in schema:
            variant["oneOf"] = schema["oneOf"]
        variants.append(variant)
    return {"requestBody": {"required": True, "content": {"application/json": {"schema": {"oneOf": variants}}}}}


@cases.post("/cases/bulk", responses={401: {}, 422: {}}, openapi_extra=_bulk_body())
async def bulk(body: BulkIn, principal: PrincipalDep, service: ServiceDep) -> dict[str, Any]:
    """The same command for many cases, one after the other through the single-case use case: each case is
    authorised and checked by the state machine on its own, and answers ``ok`` or its error."""
    args = dict(body.model_extra or {})
    run: Callable[[str], Awaitable[Any]]
    if body.action == "approve_text":
        _reject_extra(args)
        run = lambda case_id: service.moderate(case_id, principal, None, None)  # noqa: E731
    else:
        model, build = COMMANDS[body.action]
        if model is None:
            _reject_extra(args)
            parsed = None
        else:
            try:
                parsed = model.model_validate(args)
            except ValidationError as exc:
                raise RequestValidationError(exc.errors(include_url=False, include_context=False)) from exc
        command = build(service, parsed)
        run = lambda case_id: service.command(case_id, command, principal)  # noqa: E731
    async def one(case_id: str) -> dict[str, Any]:
        try:
            await run(case_id)
        except (ServiceError, DomainError) as exc:
            return {"case_id": case_id, "ok": False, **error_body(exc.code, exc.message, exc.field)}
        return {"case_id": case_id, "ok": True}

    # side by side: the cases' writes share the outbox's groups
    results = list(await asyncio.gather(*(one(case_id) for case_id in dict.fromkeys(body.case_ids))))
    return {"results": results, "ok": sum(r["ok"] for r in results), "failed": sum(not r["ok"] for r in results)}


def _reject_extra(args: dict[str, Any]) -> None:
    if args:
        name = next(iter(args))
        raise RequestValidationError([{"type": "extra_forbidden", "loc": ("body", name),
                                       "msg": "Extra inputs are not permitted", "input": None}])


public = APIRouter(prefix="/v1", tags=["public"])


@public.get("/public/cases")
async def public_board(service: ServiceDep,
                       q: Annotated[str | None, Query(max_length=100)] = None,
                       county: Annotated[str | None, Query(max_length=32)] = None,
                       category: Annotated[str | None, Query(max_length=64)] = None,
                       department_id: Annotated[str | None, Query(max_length=64)] = None,
                       status: CaseStatus | None = None,
                       page: Annotated[int, Query(ge=1, le=1000)] = 1,
                       page_size: Annotated[int, Query(ge=1, le=BOARD_PAGE_SIZE_MAX)] = 20) -> dict[str, Any]:
    """The public board: publishable cases only (redacted text), newest first, with their replies."""
    filters = BoardFilter(q=q, county=county, category=category, department_id=department_id, status=status)
    return await service.public_board(filters, page=page, page_size=page_size)


_optional_bearer = HTTPBearer(auto_error=False)


async def _optional_principal(
        request: Request, accounts: AccountsDep,
        creds: Annotated[HTTPAuthorizationCredentials | None, Depends(_optional_bearer)]) -> Principal | None:
    """The signed-in person when there is one (a bearer token or the session cookie), else None."""
    if (creds is None or not creds.credentials) and not request.cookies.get(SESSION_COOKIE):
        return None
    return await signed_in(request, accounts, creds)


_UPLOAD_BODY = {"requestBody": {"required": True, "content": {"multipart/form-data": {"schema": {
    "type": "object", "required": ["file"], "additionalProperties": False,
    "properties": {"file": {"type": "string", "format": "binary", "description": "JPEG, PNG or WebP, at most 5 MB"}},
}}}}}
MULTIPART_OVERHEAD = 64 * 1024


@attachments.post("/attachments", status_code=201, responses={413: {}, 415: {}, 422: {}}, openapi_extra=_UPLOAD_BODY)
async def upload_attachment(request: Request, service: ServiceDep) -> dict[str, Any]:
    """A photo for a post: its type is told by its bytes; position and camera metadata are removed."""
    limit = service.settings.attachment_max_bytes
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit + MULTIPART_OVERHEAD:  # refused before it is read
        raise TooLarge(f"a photo may be at most {limit} bytes", "file", limit=limit)
    if not request.headers.get("content-type", "").startswith("multipart/form-data"):
        raise UnsupportedMediaType("send the photo as multipart/form-data in the field 'file'", "file")
    try:
        form = await request.form(max_files=1, max_fields=2)
    except Exception as exc:  # starlette's parser: malformed multipart or too many parts
        raise Invalid(f"the upload cannot be read: {exc}"[:200], "file") from exc
    upload = form.get("file")
    if extra := sorted(set(form.keys()) - {"file"}):
        await form.close()
        raise Invalid(f"unexpected form field {extra[0]!r}: send only 'file'", extra[0])
    if upload is None or isinstance(upload, str):
        raise Invalid("a file is required in the field 'file'", "file")
    data = await upload.read(limit + 1)
    await form.close()
    if len(data) > limit:
        raise TooLarge(f"a photo may be at most {limit} bytes", "file", limit=limit)
    return await service.upload_attachment(data, client_ip=request.client.host if request.client else None)


@attachments.get("/attachments/{attachment_id}", responses={401: {}, 404: {}, 422: {}},
             response_class=Response)
async def get_attachment(attachment_id: Annotated[str, Path(pattern=ATTACHMENT_ID_PATTERN)], service: ServiceDep,
                         principal: Annotated[Principal | None, Depends(_optional_principal)]) -> Response:
    data, content_type, public_now = await service.attachment(attachment_id, principal)
    cache = "public, max-age=3600" if public_now else "private, no-store"
    return Response(data, media_type=content_type,
                    headers={"Cache-Control": cache, "X-Content-Type-Options": "nosniff",
                             "Content-Disposition": "inline"})


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


FOREIGN_ERRORS = {"/open311/": open311_error}  # Open311 clients expect GeoReport's error list


def _install_error_handlers(app: FastAPI) -> None:
    install_error_handlers(app, foreign=FOREIGN_ERRORS)  # our ServiceErrors are the shared ApiError

    @app.exception_handler(DomainError)
    async def _domain_error(request: Request, exc: DomainError) -> Response:
        extra: dict[str, Any] = {}
        if isinstance(exc, IllegalTransition):
            extra = {"status": exc.status.value, "allowed_actions": exc.allowed}
        return render_error(request.url.path, 409, exc.code, exc.message, exc.field, extra=extra,
                            foreign=FOREIGN_ERRORS)


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
    for router in (posts, sms, attachments, auth, cases, reference_router, public, templates, admin_router,
                   open311_router, wechat_router, ops):
        app.include_router(router)
    app.add_middleware(BodyLimits, max_bytes=settings.max_body_bytes, max_depth=settings.max_json_depth,
                       foreign=FOREIGN_ERRORS)
    document_errors(app, skip_prefixes=("/open311/",), text_paths={"/metrics": "text/plain"})
    _document_reference_values(app, runtime.reference)
    Instrumentator(excluded_handlers=["/metrics", "/healthz", "/readyz"]).instrument(app)
    return app


def _enum_of(schema: dict[str, Any], values: list[str]) -> None:
    """Name the accepted values on a string schema, or on the string branch of an optional one."""
    for branch in schema.get("anyOf", [schema]):
        if branch.get("type") == "string":
            branch["enum"] = values


def _document_reference_values(app: FastAPI, data: ReferenceData) -> None:
    """The OpenAPI names the categories and units a supervisor may reassign to, and the units an account or
    a reply template may belong to (they come from the reference, so the document says exactly which values
    are accepted)."""
    generate = app.openapi

    categories = sorted(c.id for c in data.taxonomy.categories)
    units = sorted(u.id for u in data.units.units)

    def name_values(node: Any) -> None:  # ReassignIn and the bulk body's reassign variant
        if isinstance(node, dict):
            properties = node.get("properties")
            if isinstance(properties, dict) and {"category", "department_id", "reason"} <= set(properties):
                properties["category"]["enum"], properties["department_id"]["enum"] = categories, units
            if isinstance(properties, dict) and "unit_id" in properties:  # accounts and reply templates
                _enum_of(properties["unit_id"], units)
            for value in node.values():
                name_values(value)
        elif isinstance(node, list):
            for value in node:
                name_values(value)

    def openapi() -> dict[str, Any]:
        schema = generate()
        name_values(schema)
        return schema

    app.openapi = openapi  # type: ignore[method-assign]
