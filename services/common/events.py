"""Event contracts: the CloudEvents 1.0 envelope and one pydantic model per event type.

Every message on a Wenzheng topic is a structured-mode CloudEvent (JSON) whose ``data`` is validated
against the model registered for its ``type``. The message key is the ``subject`` (a case id), so all
events of one case stay in one partition and in order.

Models forbid unknown fields: a producer that drifts from the contract fails loudly at the producer,
and a consumer dead-letters a message it cannot read instead of guessing.
"""

from __future__ import annotations

import json
import uuid
from datetime import UTC, date, datetime
from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
)

SPEC_VERSION = "1.0"
TYPE_PREFIX = "gov.wenzheng."
SCHEMA_BASE = "https://schemas.wenzheng.gov.cn/events/"


def _to_utc(value: datetime) -> datetime:
    return value.astimezone(UTC)


UtcDatetime = Annotated[AwareDatetime, AfterValidator(_to_utc)]
"""A timezone-aware instant, normalised to UTC (naive times are rejected)."""

CaseId = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.:-]+$")]
UnitId = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[a-z0-9_.-]+$")]
ShortText = Annotated[str, Field(max_length=500)]
StaffId = Annotated[str, Field(min_length=3, max_length=40, pattern=r"^p-[A-Za-z0-9]+$")]
"""A staff member's stable opaque id (``p-…``): never a name or a phone."""


def utcnow() -> datetime:
    return datetime.now(UTC)


def new_event_id() -> str:
    return str(uuid.uuid4())


class Contract(BaseModel):
    """Base of every event payload: strict about unknown fields, JSON-friendly."""

    model_config = ConfigDict(extra="forbid", frozen=True, str_strip_whitespace=False)


# --------------------------------------------------------------------------------------------------
# Vocabulary
# --------------------------------------------------------------------------------------------------


class Channel(StrEnum):
    WEB = "web"
    WECHAT = "wechat"
    APP = "app"
    SMS = "sms"
    PHONE = "phone"
    OPEN311 = "open311"


class CaseStatus(StrEnum):
    SUBMITTED = "submitted"
    ASSIGNED = "assigned"
    TRIAGE = "triage"
    SIGNED = "signed"
    RETURNED = "returned"
    EXTENDED = "extended"
    REPLIED = "replied"
    RATED = "rated"
    REOPENED = "reopened"
    CLOSED = "closed"


class PostKind(StrEnum):
    COMPLAINT = "complaint"
    INQUIRY = "inquiry"
    SUGGESTION = "suggestion"


class Rating(StrEnum):
    SATISFIED = "satisfied"
    BASICALLY_SATISFIED = "basically_satisfied"
    UNSATISFIED = "unsatisfied"


class Actor(StrEnum):
    CITIZEN = "citizen"
    DEPARTMENT = "department"
    SUPERVISOR = "supervisor"
    ADMIN = "admin"
    ROUTER = "router"
    SYSTEM = "system"


class Location(Contract):
    county: str | None = Field(None, max_length=32)
    township: str | None = Field(None, max_length=32)
    address: str | None = Field(None, max_length=200)
    lat: float | None = Field(None, ge=-90, le=90)
    lng: float | None = Field(None, ge=-180, le=180)


# --------------------------------------------------------------------------------------------------
# Case lifecycle events (public topic wenzheng.case-events.v1; never personal data)
# --------------------------------------------------------------------------------------------------


class CaseEvent(Contract):
    """Fields every case lifecycle event carries."""

    case_id: CaseId
    tracking_number: str = Field(min_length=4, max_length=32)
    version: int = Field(ge=1, description="the case record's version after this event (per-case order)")
    occurred_at: UtcDatetime
    actor: Actor
    actor_id: StaffId | None = Field(
        None, description="the staff member who acted (an opaque id, never a name); absent for citizens, "
                          "the router and the system")


class CaseSubmitted(CaseEvent):
    channel: Channel
    title: str = Field(min_length=1, max_length=100)
    body: str = Field(min_length=1, max_length=5000,
                      description="the post text as published: personal data replaced by markers")
    location: Location | None = None
    anonymous: bool = False
    attachment_count: int = Field(0, ge=0, le=20)
    poster_ref: str | None = Field(
        None, max_length=64,
        description="deprecated and no longer filled: it linked an anonymous post to its poster's other posts; "
                    "the poster's key travels only on the private contacts topic now",
    )


class CaseAssigned(CaseEvent):
    """Routing applied: the case now belongs to a unit, with a deadline."""

    decision_id: str
    category: str
    category_name: str
    department_id: UnitId
    department_name: str
    county: str | None = None
    township: str | None = None
    kind: PostKind = PostKind.COMPLAINT
    deadline: UtcDatetime
    working_days: int = Field(ge=1, le=60)
    confidence: float = Field(ge=0, le=1)
    reasons: list[ShortText] = Field(default_factory=list)
    model_version: str
    routing_round: int = Field(1, ge=1, description="1 for the first routing, +1 after each return")
    reassigned: bool = Field(False, description="true when a supervisor chose the unit")


class CaseTriaged(CaseEvent):
    """Routing could not decide (low confidence or returned twice): waits for a supervisor."""

    decision_id: str | None = None
    reason: ShortText
    category: str | None = None
    candidates: list[UnitId] = Field(default_factory=list)
    confidence: float | None = Field(None, ge=0, le=1)
    county: str | None = None
    township: str | None = None


class CaseLinked(CaseEvent):
    """A near-duplicate of an open case: linked to it instead of routed again."""

    decision_id: str
    linked_case_id: CaseId
    reason: ShortText


class CaseSigned(CaseEvent):
    department_id: UnitId


class CaseReturned(CaseEvent):
    department_id: UnitId
    reason: str = Field(min_length=2, max_length=500)
    return_count: int = Field(ge=1)


class CaseExtensionRequested(CaseEvent):
    department_id: UnitId
    reason: str = Field(min_length=2, max_length=500)
    extra_working_days: int = Field(ge=1, le=30)


class CaseExtended(CaseEvent):
    """A supervisor approved the extension: the deadline moves."""

    department_id: UnitId
    previous_deadline: UtcDatetime
    deadline: UtcDatetime
    extra_working_days: int = Field(ge=1, le=30)


class CaseExtensionDenied(CaseEvent):
    department_id: UnitId
    reason: ShortText | None = None


class CaseReplied(CaseEvent):
    department_id: UnitId
    reply: str = Field(min_length=1, max_length=10000)
    deadline: UtcDatetime
    on_time: bool
    handling_round: int = Field(1, ge=1)


class RatingSource(StrEnum):
    CITIZEN = "citizen"  # the poster rated online or by SMS
    CALLBACK = "callback"  # the supervision office called the citizen back (回访) and recorded the rating


class CaseRated(CaseEvent):
    department_id: UnitId | None = None
    rating: Rating
    reason: ShortText | None = None
    handling_round: int = Field(1, ge=1)
    given_by: RatingSource = Field(RatingSource.CITIZEN, description="online by the citizen, or by a callback")


class CaseReopened(CaseEvent):
    """Second handling (二次办理): the same unit must answer again, with a new deadline."""

    department_id: UnitId
    reason: ShortText
    handling_round: int = Field(ge=2)
    deadline: UtcDatetime
    automatic: bool = False


class Disposition(StrEnum):
    """How a case was closed: answered (counts in every rate) or not a valid post at all (excluded from received)."""

    RESOLVED = "resolved"
    INVALID = "invalid"


class InvalidReason(StrEnum):
    """Why a post was closed as invalid; counted separately, never as received."""

    SPAM = "spam"  # 垃圾信息、广告
    NOT_GOVERNMENT = "not_government"  # 非政府职能事项
    NO_CONTENT = "no_content"  # 无实质内容
    ABUSIVE = "abusive"  # 辱骂、恶意诉求
    TEST = "test"  # 测试信息


INVALID_REASON_NAMES = {
    InvalidReason.SPAM: "垃圾信息",
    InvalidReason.NOT_GOVERNMENT: "非政府职能事项",
    InvalidReason.NO_CONTENT: "无实质内容",
    InvalidReason.ABUSIVE: "辱骂或恶意诉求",
    InvalidReason.TEST: "测试信息",
}


class CaseClosed(CaseEvent):
    reason: ShortText
    department_id: UnitId | None = None
    automatic: bool = False
    disposition: Disposition = Field(Disposition.RESOLVED, description="resolved, or invalid: not counted as received")
    invalid_reason: InvalidReason | None = Field(None, description="why the post was invalid (disposition invalid)")


class CaseFlagged(CaseEvent):
    """A supervisor marked the case as typical, for media follow-up."""

    note: ShortText | None = None


class CaseModerated(CaseEvent):
    """A supervisor checked the publishable (redacted) text: approved as it was, or corrected it."""

    title: str = Field(min_length=1, max_length=100, description="the publishable title, redacted")
    body: str = Field(min_length=1, max_length=5000, description="the publishable text, redacted")
    corrected: bool = Field(description="false when the redacted text was approved as it was")


class NoticeMethod(StrEnum):
    PHONE = "phone"  # 电话督办
    ON_SITE = "on_site"  # 现场督办
    MEETING = "meeting"  # 约谈 / 会议督办


class CaseNoticeIssued(CaseEvent):
    """A supervision notice (督办) to the responsible unit, with a date to answer by."""

    notice_id: str = Field(min_length=1, max_length=32)
    department_id: UnitId
    method: NoticeMethod
    note: ShortText
    reply_by: date = Field(description="the day (Asia/Shanghai) the unit must answer by")


class CaseNoticeAnswered(CaseEvent):
    notice_id: str = Field(min_length=1, max_length=32)
    department_id: UnitId
    text: str = Field(min_length=1, max_length=2000)
    on_time: bool = Field(description="answered by its reply_by day")


class CaseCallbackRecorded(CaseEvent):
    """The office called the citizen back (回访); when reached with a rating, a case.rated follows."""

    callback_id: str = Field(min_length=1, max_length=32)
    department_id: UnitId | None = None
    reached: bool
    rating: Rating | None = None
    note: ShortText


# --------------------------------------------------------------------------------------------------
# Routing decisions (internal topic wenzheng.routing-decisions.v1), written by the router
# --------------------------------------------------------------------------------------------------


class RoutingOutcome(StrEnum):
    ASSIGNED = "assigned"
    TRIAGE = "triage"
    DUPLICATE = "duplicate"


class RoutingDecision(Contract):
    decision_id: str
    case_id: CaseId
    source_event_id: str = Field(description="the case event this decision answers")
    source_version: int = Field(ge=1, description="case version the decision was made for")
    routing_round: int = Field(ge=1)
    outcome: RoutingOutcome
    category: str | None = None
    category_name: str | None = None
    department_id: UnitId | None = None
    department_name: str | None = None
    county: str | None = None
    township: str | None = None
    kind: PostKind = PostKind.COMPLAINT
    deadline: UtcDatetime | None = None
    working_days: int | None = Field(None, ge=1, le=60)
    confidence: float = Field(ge=0, le=1)
    reasons: list[ShortText] = Field(default_factory=list)
    top_features: list[str] = Field(default_factory=list)
    tried_departments: list[UnitId] = Field(default_factory=list)
    linked_case_id: CaseId | None = None
    model_version: str
    decided_at: UtcDatetime


# --------------------------------------------------------------------------------------------------
# Alerts (public topic wenzheng.alerts.v1), written by the notifier
# --------------------------------------------------------------------------------------------------


class AlertKind(StrEnum):
    REMINDER = "reminder"
    UNSIGNED = "unsigned"
    OVERDUE = "overdue"
    ESCALATED = "escalated"
    HOTSPOT = "hotspot"


class Audience(StrEnum):
    DEPARTMENT = "department"
    SUPERVISORS = "supervisors"


class Alert(Contract):
    alert_id: str = Field(description="stable: the same (case, kind, deadline) always gives the same id")
    kind: AlertKind
    case_id: CaseId | None = None
    tracking_number: str | None = None
    department_id: UnitId | None = None
    category: str | None = None
    county: str | None = None
    township: str | None = None
    deadline: UtcDatetime | None = None
    audience: list[Audience]
    message: str = Field(max_length=1000)
    case_ids: list[CaseId] = Field(default_factory=list, description="hotspot: the open cases in the burst")
    raised_at: UtcDatetime


# --------------------------------------------------------------------------------------------------
# Private topics: contacts (compacted) and outbound notifications
# --------------------------------------------------------------------------------------------------


class NotificationChannel(StrEnum):
    SMS = "sms"
    WECHAT = "wechat"
    EMAIL = "email"
    LOG = "log"


class CaseContact(Contract):
    """How to reach the poster of a case. Personal data: private topic only, never logged."""

    case_id: CaseId
    tracking_number: str
    phone: str | None = Field(None, pattern=r"^1[3-9]\d{9}$")
    name: str | None = Field(None, max_length=50)
    wechat_openid: str | None = Field(None, max_length=64)
    email: str | None = Field(None, max_length=254)
    preferred_channel: NotificationChannel = NotificationChannel.SMS
    anonymous: bool = False
    recorded_at: UtcDatetime
    poster_ref: str | None = Field(
        None, max_length=64,
        description="keyed hash of the poster's phone (or e-mail): lets the router find one poster's recent "
                    "posts for duplicate detection; private like the rest of the contact",
    )


class NotificationKind(StrEnum):
    RECEIVED = "received"
    ASSIGNED = "assigned"
    REPLIED = "replied"
    REOPENED = "reopened"
    CLOSED = "closed"
    STATUS = "status"
    STAFF_ALERT = "staff_alert"  # a reminder, overdue alert or supervision notice for one staff member


class QuietHours(Contract):
    start: str = Field(pattern=r"^([01]\d|2[0-3]):[0-5]\d$", description="HH:MM, Asia/Shanghai")
    end: str = Field(pattern=r"^([01]\d|2[0-3]):[0-5]\d$", description="HH:MM, Asia/Shanghai")


class StaffContact(Contract):
    """How to reach one staff member with reminders. Personal data: private compacted topic only, keyed by
    the person's id; ``active`` false (disabled account) means send nothing."""

    person_id: StaffId
    unit_id: UnitId | None = None
    roles: list[str] = Field(default_factory=list)
    phone: str | None = Field(None, pattern=r"^1[3-9]\d{9}$")
    email: str | None = Field(None, max_length=254)
    channels: list[NotificationChannel] = Field(default_factory=list)
    quiet_hours: QuietHours | None = None
    active: bool = True
    updated_at: UtcDatetime


class Notification(Contract):
    notification_id: str = Field(description="stable per (case, kind, round): a gateway can dedupe on it")
    case_id: CaseId
    tracking_number: str
    kind: NotificationKind
    channel: NotificationChannel
    to: str = Field(max_length=254, description="phone, openid or e-mail address")
    template: str
    text: str = Field(max_length=1000)
    created_at: UtcDatetime
    person_id: StaffId | None = Field(None, description="the staff member a staff alert is for")
    not_before: UtcDatetime | None = Field(None, description="hold until then (the person's quiet hours)")


# --------------------------------------------------------------------------------------------------
# Dead letters (operators' topic wenzheng.dead-letter.v1)
# --------------------------------------------------------------------------------------------------


class DeadLetter(Contract):
    original_topic: str
    partition: int | None = None
    offset: int | None = None
    key: str | None = Field(None, description="the original key, decoded as UTF-8 with replacement")
    value: str = Field(description="the original value, UTF-8 with replacement, truncated to 64 KiB")
    reason: str = Field(max_length=2000)
    error_type: str
    service: str
    failed_at: UtcDatetime


# --------------------------------------------------------------------------------------------------
# Registry: event type -> (payload model, topic key in TopicSettings, subject field)
# --------------------------------------------------------------------------------------------------


class EventSpec(BaseModel):
    model_config = ConfigDict(frozen=True, arbitrary_types_allowed=True)

    type: str
    model: type[Contract]
    topic: str
    subject_field: str
    schema_version: int = 1

    @property
    def dataschema(self) -> str:
        return f"{SCHEMA_BASE}{self.type.removeprefix(TYPE_PREFIX)}/v{self.schema_version}.json"


def _spec(short: str, model: type[Contract], topic: str, subject_field: str = "case_id") -> EventSpec:
    return EventSpec(type=TYPE_PREFIX + short, model=model, topic=topic, subject_field=subject_field)


EVENT_SPECS: dict[str, EventSpec] = {
    spec.type: spec
    for spec in [
        _spec("case.submitted", CaseSubmitted, "case_events"),
        _spec("case.assigned", CaseAssigned, "case_events"),
        _spec("case.triaged", CaseTriaged, "case_events"),
        _spec("case.linked", CaseLinked, "case_events"),
        _spec("case.signed", CaseSigned, "case_events"),
        _spec("case.returned", CaseReturned, "case_events"),
        _spec("case.extension_requested", CaseExtensionRequested, "case_events"),
        _spec("case.extended", CaseExtended, "case_events"),
        _spec("case.extension_denied", CaseExtensionDenied, "case_events"),
        _spec("case.replied", CaseReplied, "case_events"),
        _spec("case.rated", CaseRated, "case_events"),
        _spec("case.reopened", CaseReopened, "case_events"),
        _spec("case.closed", CaseClosed, "case_events"),
        _spec("case.flagged", CaseFlagged, "case_events"),
        _spec("case.moderated", CaseModerated, "case_events"),
        _spec("case.notice_issued", CaseNoticeIssued, "case_events"),
        _spec("case.notice_answered", CaseNoticeAnswered, "case_events"),
        _spec("case.callback_recorded", CaseCallbackRecorded, "case_events"),
        _spec("routing.decided", RoutingDecision, "routing_decisions"),
        _spec("alert.raised", Alert, "alerts", subject_field="alert_id"),
        _spec("case.contact", CaseContact, "case_contacts"),
        _spec("notification.requested", Notification, "notifications"),
        _spec("staff.contact", StaffContact, "staff_contacts", subject_field="person_id"),
        _spec("deadletter.recorded", DeadLetter, "dead_letter", subject_field="service"),
    ]
}
SPEC_BY_MODEL: dict[type[Contract], EventSpec] = {spec.model: spec for spec in EVENT_SPECS.values()}

# Short names used in code: "case.submitted" etc.
CASE_EVENT_TYPES = tuple(t for t, s in EVENT_SPECS.items() if s.topic == "case_events")


def short_type(event_type: str) -> str:
    return event_type.removeprefix(TYPE_PREFIX)


# --------------------------------------------------------------------------------------------------
# The envelope
# --------------------------------------------------------------------------------------------------


class Envelope(BaseModel):
    """A CloudEvents 1.0 event in structured JSON mode.

    ``sequence`` is a CloudEvents extension attribute: the per-subject version, so consumers can tell
    a stale or repeated event without keeping every id forever.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    specversion: Literal["1.0"]
    id: str = Field(min_length=1, max_length=128)
    source: str = Field(min_length=1, max_length=256)
    type: str = Field(min_length=1, max_length=128)
    subject: str = Field(min_length=1, max_length=128)
    time: UtcDatetime
    datacontenttype: Literal["application/json"] = "application/json"
    dataschema: str | None = None
    sequence: int | None = Field(None, ge=0)
    data: dict[str, Any]


class Event(BaseModel):
    """A parsed, validated event: the envelope and its typed payload."""

    model_config = ConfigDict(frozen=True, arbitrary_types_allowed=True)

    envelope: Envelope
    data: Contract

    @property
    def id(self) -> str:
        return self.envelope.id

    @property
    def type(self) -> str:
        return self.envelope.type

    @property
    def short_type(self) -> str:
        return short_type(self.envelope.type)

    @property
    def subject(self) -> str:
        return self.envelope.subject

    @property
    def time(self) -> datetime:
        return self.envelope.time

    @property
    def key(self) -> bytes:
        return self.envelope.subject.encode()

    def to_json(self) -> bytes:
        return self.envelope.model_dump_json(exclude_none=True).encode()

    def to_dict(self) -> dict[str, Any]:
        return self.envelope.model_dump(mode="json", exclude_none=True)


class EventValidationError(ValueError):
    """A message that is not a valid Wenzheng event; ``field`` names what is wrong."""

    def __init__(self, message: str, field: str | None = None) -> None:
        self.field = field
        self.reason = message
        super().__init__(f"{field}: {message}" if field else message)


def make_event(
    data: Contract,
    *,
    source: str,
    event_id: str | None = None,
    time: datetime | None = None,
    sequence: int | None = None,
) -> Event:
    """Wrap a payload in its envelope; the type, subject and schema follow from the payload's class."""
    spec = SPEC_BY_MODEL.get(type(data))
    if spec is None:
        raise TypeError(f"{type(data).__name__} is not a registered event payload")
    if sequence is None and isinstance(data, CaseEvent):
        sequence = data.version
    envelope = Envelope(
        specversion=SPEC_VERSION,
        id=event_id or new_event_id(),
        source=source,
        type=spec.type,
        subject=str(getattr(data, spec.subject_field)),
        time=time or utcnow(),
        dataschema=spec.dataschema,
        sequence=sequence,
        data=data.model_dump(mode="json", exclude_none=True),
    )
    return Event(envelope=envelope, data=data)


def _first_error(exc: ValidationError, prefix: str) -> EventValidationError:
    err = exc.errors(include_url=False)[0]
    loc = ".".join(str(p) for p in err["loc"])
    field = f"{prefix}.{loc}" if prefix and loc else (prefix or loc or None)
    more = f" (and {exc.error_count() - 1} more)" if exc.error_count() > 1 else ""
    return EventValidationError(f"{err['msg']}{more}", field)


def parse_event(raw: bytes | str | dict[str, Any], *, expected_topic: str | None = None) -> Event:
    """Parse and validate one message; raise :class:`EventValidationError` naming the bad field."""
    if isinstance(raw, bytes | bytearray):
        try:
            raw = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise EventValidationError(f"message is not UTF-8 ({exc.reason} at byte {exc.start})") from exc
    if isinstance(raw, str):
        try:
            raw = json.loads(raw)
        except json.JSONDecodeError as exc:
            raise EventValidationError(f"message is not JSON: {exc.msg} at position {exc.pos}") from exc
    if not isinstance(raw, dict):
        raise EventValidationError(f"message must be a JSON object, not {type(raw).__name__}")
    try:
        envelope = Envelope.model_validate(raw)
    except ValidationError as exc:
        raise _first_error(exc, "") from exc
    spec = EVENT_SPECS.get(envelope.type)
    if spec is None:
        raise EventValidationError(f"unknown event type {envelope.type!r}", "type")
    if expected_topic is not None and spec.topic != expected_topic:
        raise EventValidationError(
            f"event type {envelope.type!r} does not belong on topic {expected_topic!r}", "type"
        )
    try:
        data = spec.model.model_validate(envelope.data)
    except ValidationError as exc:
        raise _first_error(exc, "data") from exc
    subject = str(getattr(data, spec.subject_field))
    if subject != envelope.subject:
        raise EventValidationError(
            f"subject {envelope.subject!r} does not match data.{spec.subject_field} {subject!r}", "subject"
        )
    return Event(envelope=envelope, data=data)


def dead_letter_for(
    *,
    topic: str,
    value: bytes | None,
    key: bytes | None,
    reason: str,
    error_type: str,
    service: str,
    partition: int | None = None,
    offset: int | None = None,
) -> DeadLetter:
    """Describe a message a consumer could not process, keeping its bytes for the operators."""
    text = (value or b"")[:65536].decode("utf-8", errors="replace")
    return DeadLetter(
        original_topic=topic,
        partition=partition,
        offset=offset,
        key=key.decode("utf-8", errors="replace") if key is not None else None,
        value=text,
        reason=reason[:2000],
        error_type=error_type,
        service=service,
        failed_at=utcnow(),
    )


def json_schema_for(spec: EventSpec) -> dict[str, Any]:
    """The JSON Schema of a whole event of this type: the envelope with its typed ``data``."""
    data_schema = spec.model.model_json_schema(mode="serialization", ref_template="#/$defs/{model}")
    defs = data_schema.pop("$defs", {})
    envelope = Envelope.model_json_schema(mode="serialization")
    envelope.pop("$defs", None)
    envelope["properties"]["type"] = {"const": spec.type, "title": "Type", "type": "string"}
    envelope["properties"]["data"] = data_schema
    envelope["required"] = sorted({*envelope.get("required", []), "data", "dataschema"})
    schema: dict[str, Any] = {
        **envelope,
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": spec.dataschema,
        "title": spec.type,
        "description": (spec.model.__doc__ or spec.model.__name__).strip().splitlines()[0],
    }
    if defs:
        schema["$defs"] = defs
    return schema


__all__ = [
    "CASE_EVENT_TYPES",
    "EVENT_SPECS",
    "Actor",
    "Alert",
    "AlertKind",
    "Audience",
    "CaseAssigned",
    "CaseCallbackRecorded",
    "CaseClosed",
    "CaseContact",
    "CaseEvent",
    "CaseExtended",
    "CaseExtensionDenied",
    "CaseExtensionRequested",
    "CaseFlagged",
    "CaseLinked",
    "CaseModerated",
    "CaseNoticeAnswered",
    "CaseNoticeIssued",
    "CaseRated",
    "CaseReopened",
    "CaseReplied",
    "CaseReturned",
    "CaseSigned",
    "CaseStatus",
    "CaseSubmitted",
    "CaseTriaged",
    "Channel",
    "DeadLetter",
    "Envelope",
    "Event",
    "EventValidationError",
    "Location",
    "NoticeMethod",
    "Notification",
    "NotificationChannel",
    "NotificationKind",
    "PostKind",
    "Rating",
    "RatingSource",
    "RoutingDecision",
    "RoutingOutcome",
    "StaffContact",
    "dead_letter_for",
    "make_event",
    "parse_event",
    "utcnow",
]
