"""Use cases: each loads a case, lets the domain decide, and stores the result in one versioned write."""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import json
import re
import secrets
import time
import unicodedata
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any

from services.common import events as ev
from services.common.clock import Clock
from services.common.config import TopicSettings
from services.common.errors import ApiError
from services.common.events import Actor, CaseStatus, Channel, Event, Rating, make_event
from services.common.logging import get_logger, mask_personal_text
from services.common.people import people_deadline
from services.common.redaction import redact, redact_text
from services.common.reference import ReferenceData, reference
from services.common.secret_compare import same_secret
from services.common.workdays import SHANGHAI, WorkCalendar, default_calendar
from services.intake import domain, metrics
from services.intake.accounts import Principal, Role, permitted_actions
from services.intake.attachments import (
    EXTENSIONS,
    AttachmentStore,
    BadImage,
    FilesystemAttachmentStore,
    digest,
    new_attachment_id,
    sniff_image_type,
    strip_metadata,
)
from services.intake.case_index import CaseQuery, StateWindow, to_ms
from services.intake.config import IntakeSettings
from services.intake.domain import Case, Command, DecisionIgnored, DomainError, IllegalTransition
from services.intake.ratelimit import SlidingWindowLimiter
from services.intake.shedding import Load, ShedBounds, shed_reason
from services.intake.store import PRIVATE_FIELDS, CaseStore, DuplicateKey, case_from_doc, case_to_fields

log = get_logger(__name__)
COMMIT_ATTEMPTS = 3
SMS_QUERY = re.compile(r"^\s*(?:查询|查|CX)\s*[:：]?\s*([A-Za-z0-9\-－—_ 　]{8,32})\s*$", re.IGNORECASE)
SMS_RATING = re.compile(r"^\s*(?:评价|PJ)\s*[:：]?\s*([A-Za-z0-9\-－—_ 　]{8,32}?)\s*[,，:：]?\s*"
                        r"(基本满意|不满意|满意)\s*[,，。:：]?\s*(.*?)\s*$", re.IGNORECASE | re.DOTALL)
SMS_RATINGS = {"满意": Rating.SATISFIED, "基本满意": Rating.BASICALLY_SATISFIED, "不满意": Rating.UNSATISFIED}
RATING_TEXT = {Rating.SATISFIED: "满意", Rating.BASICALLY_SATISFIED: "基本满意", Rating.UNSATISFIED: "不满意"}
STATUS_TEXT = {
    CaseStatus.SUBMITTED: "已受理，正在分派",
    CaseStatus.ASSIGNED: "已转交承办单位",
    CaseStatus.TRIAGE: "人工分派中",
    CaseStatus.SIGNED: "承办单位办理中",
    CaseStatus.RETURNED: "重新分派中",
    CaseStatus.EXTENDED: "承办单位办理中（已延期）",
    CaseStatus.REPLIED: "已答复，请评价",
    CaseStatus.RATED: "已评价，等待审核",
    CaseStatus.REOPENED: "二次办理中",
    CaseStatus.CLOSED: "已办结",
}


# --------------------------------------------------------------------------------------------------
# Errors the entrypoints turn into HTTP answers
# --------------------------------------------------------------------------------------------------


class ServiceError(ApiError):
    """An error a use case raises; the shared handlers (services/common/errors.py) answer its envelope."""

    status = 400
    code = "bad_request"

    def __init__(self, message: str, field: str | None = None, *, headers: dict[str, str] | None = None,
                 **extra: Any) -> None:
        super().__init__(type(self).status, type(self).code, message, field, headers=headers, **extra)


class NotFound(ServiceError):
    status, code = 404, "not_found"


class Forbidden(ServiceError):
    status, code = 403, "forbidden"


class SignInRequired(ServiceError):
    status, code = 401, "unauthorized"


class Conflict(ServiceError):
    status, code = 409, "conflict"


class Invalid(ServiceError):
    status, code = 422, "invalid"


class TooLarge(ServiceError):
    status, code = 413, "too_large"


class UnsupportedMediaType(ServiceError):
    status, code = 415, "unsupported_media_type"


class Overloaded(ServiceError):
    status, code = 503, "overloaded"

    def __init__(self, retry_after: int) -> None:
        super().__init__("系统繁忙，您的诉求未能提交，请稍后重试", headers={"Retry-After": str(retry_after)})
        self.retry_after = retry_after


class RateLimited(ServiceError):
    status, code = 429, "rate_limited"

    def __init__(self, message: str, retry_after: float, field: str | None = None) -> None:
        seconds = max(1, int(retry_after + 0.999))
        super().__init__(message, field, headers={"Retry-After": str(seconds)})
        self.retry_after = seconds


# --------------------------------------------------------------------------------------------------
# Inputs
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class NewPost:
    channel: Channel
    title: str
    body: str
    contact_phone: str | None
    name: str | None = None
    anonymous: bool = False
    location: ev.Location | None = None
    attachments: tuple[str, ...] = ()
    requested_category: str | None = None  # Open311 service_code: a hint for the router, kept on the case
    contact_email: str | None = None  # Open311 clients may give only an e-mail address
    wechat_openid: str | None = None  # the WeChat official account's follower id
    attachment_ids: tuple[str, ...] = ()  # photos uploaded to intake first (POST /v1/attachments)

    def fingerprint(self) -> str:
        raw = json.dumps([self.channel, self.title, self.body, self.contact_phone, self.name, self.anonymous,
                          self.location.model_dump() if self.location else None, list(self.attachments),
                          self.requested_category, list(self.attachment_ids), self.contact_email,
                          self.wechat_openid], ensure_ascii=False, sort_keys=True)
        return hashlib.sha256(raw.encode()).hexdigest()

    @property
    def poster_key(self) -> str | None:
        """What identifies the poster across posts (private: only its keyed hash leaves intake, privately)."""
        if self.contact_phone:
            return self.contact_phone
        if self.contact_email:
            return f"email:{self.contact_email.lower()}"
        return f"wechat:{self.wechat_openid}" if self.wechat_openid else None

    @property
    def preferred_channel(self) -> ev.NotificationChannel:
        if self.wechat_openid:
            return ev.NotificationChannel.WECHAT
        if self.contact_phone or not self.contact_email:
            return ev.NotificationChannel.SMS
        return ev.NotificationChannel.EMAIL


@dataclass(frozen=True)
class TextSender:
    """Who wrote a text message: a phone number (SMS) or a WeChat follower's openid."""

    channel: Channel
    address: str

    @classmethod
    def sms(cls, phone: str) -> TextSender:
        return cls(Channel.SMS, phone)

    @classmethod
    def wechat(cls, openid: str) -> TextSender:
        return cls(Channel.WECHAT, openid)

    def owns(self, doc: dict[str, Any]) -> bool:
        contact = doc.get("contact") or {}
        return same_secret(self.address, contact.get("phone" if self.channel is Channel.SMS else "wechat_openid"))

    def new_post(self, text: str) -> NewPost:
        if self.channel is Channel.SMS:
            return NewPost(channel=Channel.SMS, title=text[:30], body=text[:5000], contact_phone=self.address)
        return NewPost(channel=self.channel, title=text[:30], body=text[:5000], contact_phone=None,
                       wechat_openid=self.address)


@dataclass(frozen=True)
class Accepted:
    status_code: int
    body: dict[str, Any]
    replayed: bool = False


def new_case_id() -> str:
    return f"c-{secrets.token_hex(10)}"


def new_tracking_number(now: datetime) -> str:
    """A fresh tracking number: the domain's shape around 8 random readable characters."""
    return domain.tracking_number(now, "".join(secrets.choice(domain.TRACKING_ALPHABET) for _ in range(8)))


def outbox_entry(event: Event, topic_key: str) -> dict[str, Any]:
    """An event as the outbox stores it; ``v`` (the case's version) orders one case's events."""
    return {"id": event.id, "topic": topic_key, "key": event.subject, "value": event.to_json().decode(),
            "v": getattr(event.data, "version", None), "at_ms": int(time.time() * 1000)}


class IntakeService:
    def __init__(self, store: CaseStore, settings: IntakeSettings, clock: Clock, reference: ReferenceData,
                 *, topic_names: TopicSettings | None = None, calendar: WorkCalendar | None = None,
                 on_commit: Callable[[], None] | None = None, attachments: AttachmentStore | None = None) -> None:
        self.store = store
        self.attachments = attachments or FilesystemAttachmentStore(settings.attachments_dir)
        self.settings = settings
        self.clock = clock
        self.reference = reference
        self.topic_names = topic_names
        self.calendar = calendar or default_calendar()
        self.on_commit = on_commit or (lambda: None)
        self.phone_limiter = SlidingWindowLimiter(settings.rate_limit_per_phone,
                                                  settings.rate_limit_phone_window_seconds)
        self.ip_limiter = SlidingWindowLimiter(settings.rate_limit_per_ip, settings.rate_limit_ip_window_seconds)
        self.accounts: Any = None  # the AccountsService (audit, unit settings, templates), wired by the app
        self.in_flight_posts = 0
        self.shed_bounds = ShedBounds(settings.shed_max_in_flight_posts, settings.shed_max_queued_writes,
                                      settings.shed_max_write_seconds, settings.shed_max_outbox_age_seconds,
                                      settings.shed_max_loop_lag_seconds)
        self.outbox_age: Callable[[], float] = lambda: 0.0  # the relay's reading, wired by the app
        self.loop_lag: Callable[[], float] = lambda: 0.0  # the event loop's lateness, wired by the app

    def load(self) -> Load:
        return Load(in_flight_posts=self.in_flight_posts, queued_writes=self.store.outbox.queued,
                    write_seconds=self.store.outbox.write_seconds(), outbox_age_seconds=self.outbox_age(),
                    loop_lag_seconds=self.loop_lag())

    def _check_load(self) -> None:
        """Refuse a new post at once while this process is past a bound (never staff commands)."""
        if not self.settings.shed_enabled:
            return
        reason = shed_reason(self.load(), self.shed_bounds)
        if reason is not None:
            metrics.SHED.labels(reason).inc()
            raise Overloaded(self.settings.shed_retry_after_seconds)

    # ------------------------------------------------------------------ citizens
    async def submit(self, post: NewPost, *, client_ip: str | None, idempotency_key: str | None) -> Accepted:
        self.in_flight_posts += 1
        try:
            self._check_load()
            return await self._submit(post, client_ip=client_ip, idempotency_key=idempotency_key)
        finally:
            self.in_flight_posts -= 1

    async def _submit(self, post: NewPost, *, client_ip: str | None, idempotency_key: str | None) -> Accepted:
        fingerprint = post.fingerprint()
        if idempotency_key:
            replay = await self._replay(idempotency_key, fingerprint)
            if replay:
                return replay
        self._check_rate(post.contact_phone, client_ip)
        await self._check_attachments(post.attachment_ids)
        for _ in range(COMMIT_ATTEMPTS):
            doc, events = self._new_case_document(post, idempotency_key, fingerprint)
            try:
                await self.store.insert(doc, events)
            except DuplicateKey:
                if idempotency_key and (replay := await self._replay(idempotency_key, fingerprint)):
                    return replay
                continue  # a tracking-number collision (1 in 10^12): draw again
            if post.attachment_ids:
                claimed = await self.store.claim_attachments(list(post.attachment_ids), doc["_id"])
                if claimed < len(post.attachment_ids):  # another post took one between the check and now
                    log.warning("attachment_claimed_twice", case_id=doc["_id"])
            metrics.POSTS.labels(post.channel.value).inc()
            self.on_commit()
            return Accepted(201, self._accepted_body(doc))
        raise Conflict("could not allocate a tracking number, please retry")

    async def upload_attachment(self, data: bytes, *, client_ip: str | None) -> dict[str, Any]:
        """A photo: its type told by its bytes, its metadata stripped, stored before anything points to it."""
        self._check_rate(None, client_ip)  # uploads share the per-address window with posts
        if len(data) > self.settings.attachment_max_bytes:
            raise TooLarge(f"a photo may be at most {self.settings.attachment_max_bytes} bytes", "file",
                           limit=self.settings.attachment_max_bytes)
        content_type = sniff_image_type(data)
        if content_type is None:
            raise UnsupportedMediaType("only JPEG, PNG and WebP photos are accepted", "file")
        try:
            clean = strip_metadata(data, content_type)
        except BadImage as exc:
            raise UnsupportedMediaType(f"the photo cannot be read: {exc}", "file") from exc
        attachment_id = new_attachment_id()
        await self.attachments.put(attachment_id, clean, content_type)
        now = self.clock.now()
        await self.store.insert_attachment({"_id": attachment_id, "content_type": content_type, "size": len(clean),
                                            "sha256": digest(clean), "case_id": None, "created_at": now,
                                            "metadata_stripped": len(clean) != len(data)})
        metrics.ATTACHMENTS.labels(EXTENSIONS[content_type]).inc()
        return {"attachment_id": attachment_id, "content_type": content_type, "size": len(clean)}

    async def attachment(self, attachment_id: str, principal: Principal | None) -> tuple[bytes, str, bool]:
        """(bytes, type, public): anyone once its case is publishable; before, its unit and supervisors."""
        metas = await self.store.get_attachments([attachment_id])
        if not metas:
            raise NotFound(f"no attachment {attachment_id}", "attachment_id")
        doc = await self.store.get(metas[0]["case_id"]) if metas[0].get("case_id") else None
        public = bool(doc and doc.get("publishable"))
        if not public and principal is None:
            raise SignInRequired("this photo is not public yet: staff sign in to see it", "Authorization")
        if doc is None and principal is not None and principal.oversees:
            doc = {}  # uploaded, not yet part of a post: supervisors may look at it (no unit's staff)
        if doc is None or (not public and not principal.may_read(doc.get("department_id"))):
            raise NotFound(f"no attachment {attachment_id}", "attachment_id")
        data = await self.attachments.get(attachment_id)
        if data is None:
            raise NotFound(f"attachment {attachment_id} is missing from the store", "attachment_id")
        return data, metas[0]["content_type"], public

    async def _check_attachments(self, ids: tuple[str, ...]) -> None:
        if not ids:
            return
        if len(set(ids)) != len(ids):
            raise Invalid("an attachment is named twice", "attachment_ids")
        found = {meta["_id"]: meta for meta in await self.store.get_attachments(list(ids))}
        for attachment_id in ids:
            meta = found.get(attachment_id)
            if meta is None:  # well formed, but nothing was uploaded under it
                raise NotFound(f"no attachment {attachment_id}", "attachment_ids")
            if meta.get("case_id") is not None:
                raise Conflict(f"attachment {attachment_id} belongs to another post", "attachment_ids")

    async def _replay(self, key: str, fingerprint: str) -> Accepted | None:
        doc = await self.store.get_by_idempotency_key(key)
        if doc is None:
            return None
        if doc.get("idempotency_fingerprint") != fingerprint:
            raise Conflict("this Idempotency-Key was already used for a different request", "Idempotency-Key")
        return Accepted(201, self._accepted_body(doc), replayed=True)

    def _accepted_body(self, doc: dict[str, Any]) -> dict[str, Any]:
        return {
            "tracking_number": doc["tracking_number"],
            "status": CaseStatus.SUBMITTED.value,
            "rating_token": domain.rating_token(self.settings.secret, doc["_id"]),
            "received_at": _iso(doc["created_at"]),
        }

    def _check_rate(self, phone: str | None, client_ip: str | None) -> None:
        if not self.settings.rate_limit_enabled:
            return
        if client_ip and (wait := self.ip_limiter.check(client_ip)) is not None:
            raise RateLimited("too many posts from this address", wait)
        if phone and (wait := self.phone_limiter.check(phone)) is not None:
            raise RateLimited("too many posts from this phone number", wait, "contact_phone")

    def _new_case_document(self, post: NewPost, idempotency_key: str | None,
                           fingerprint: str) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        now = self.clock.now()
        now = now.replace(microsecond=now.microsecond // 1000 * 1000)  # what MongoDB keeps: replays match
        case_id = new_case_id()
        tracking = new_tracking_number(now)
        names = (post.name,) if post.name else ()
        location = post.location
        if location and location.address:
            location = location.model_copy(update={"address": redact_text(location.address, names)})
        title_r, body_r = redact(post.title, names), redact(post.body, names)
        title, body = title_r.text[:100], body_r.text[:5000]
        publishable = not (title_r.uncertain or body_r.uncertain)
        case = Case(case_id=case_id, tracking_number=tracking, version=1, status=CaseStatus.SUBMITTED,
                    created_at=now, county=location.county if location else None,
                    township=location.township if location else None, publishable=publishable)
        submitted = ev.CaseSubmitted(
            case_id=case_id, tracking_number=tracking, version=1, occurred_at=now, actor=Actor.CITIZEN,
            channel=post.channel, title=title, body=body, location=location, anonymous=post.anonymous,
            attachment_count=len(post.attachments) + len(post.attachment_ids),
        )  # no poster_ref on the public topic: it would link an anonymous post to the poster's named ones
        poster_ref = domain.poster_ref(self.settings.secret, post.poster_key) if post.poster_key else None
        contact = ev.CaseContact(case_id=case_id, tracking_number=tracking, phone=post.contact_phone,
                                 name=post.name, anonymous=post.anonymous, recorded_at=now, email=post.contact_email,
                                 wechat_openid=post.wechat_openid, preferred_channel=post.preferred_channel,
                                 poster_ref=poster_ref)
        submitted_event = make_event(submitted, source=self.settings.source, time=now)
        contact_event = make_event(contact, source=self.settings.source, time=now)
        events = [outbox_entry(submitted_event, "case_events"), outbox_entry(contact_event, "case_contacts")]
        return {
            "_id": case_id,
            **case_to_fields(case),
            "idempotency_key": idempotency_key or f"auto:{case_id}",
            "idempotency_fingerprint": fingerprint,
            "updated_at": now,
            "channel": post.channel.value,
            "title": title,  # the publishable (redacted) copy; the original stays in `original`, private
            "body": body,
            "original": {"title": post.title, "body": post.body},
            "redaction": {"kinds": sorted({*title_r.kinds, *body_r.kinds}),
                          "uncertain": title_r.uncertain or body_r.uncertain},
            "location": location.model_dump(exclude_none=True) if location else None,
            "anonymous": post.anonymous,
            "attachments": list(post.attachments),
            "attachment_ids": list(post.attachment_ids),
            "requested_category": post.requested_category,
            "poster_ref": poster_ref,
            "contact": {"phone": post.contact_phone, "name": post.name, "email": post.contact_email,
                        "wechat_openid": post.wechat_openid},
            "phone_last4": post.contact_phone[-4:] if post.contact_phone else None,
            "replies": [],
            "timeline": [_timeline_entry(submitted)],
        }, events

    async def public_view(self, tracking_number: str) -> dict[str, Any]:
        doc = await self._by_tracking(tracking_number)
        return public_case_view(doc, self.clock.now())

    async def rate(self, tracking_number: str, rating: Rating, reason: str | None, *, phone_last4: str | None,
                   rating_token: str | None) -> dict[str, Any]:
        doc = await self._by_tracking(tracking_number)
        if not self._is_poster(doc, phone_last4, rating_token):
            raise Forbidden("only the poster can rate: give phone_last4 or the rating_token", "rating_token")
        command = domain.Rate(rating=rating, reason=reason,
                              auto_reopen_on_unsatisfied=self.settings.auto_reopen_on_unsatisfied,
                              reopen_working_days=self.settings.reopen_working_days)
        doc = await self.execute(doc["_id"], command, None, first=doc)
        return public_case_view(doc, self.clock.now())

    def _is_poster(self, doc: dict[str, Any], phone_last4: str | None, token: str | None) -> bool:
        if token and same_secret(token, domain.rating_token(self.settings.secret, doc["_id"])):
            return True
        last4 = doc.get("phone_last4")
        return bool(phone_last4 and last4 and same_secret(phone_last4, last4))

    # ------------------------------------------------------------------ the text conversation (SMS, WeChat)
    async def sms_inbound(self, sender: str, text: str) -> dict[str, Any]:
        return await self.converse(TextSender.sms(sender), text)

    async def converse(self, sender: TextSender, text: str, *, message_id: str | None = None) -> dict[str, Any]:
        """One conversation for every text channel: ``查询 编号`` answers the status, ``评价 编号
        满意|基本满意|不满意 [理由]`` rates the sender's own case, anything else becomes a post. On SMS every
        answer also goes out as a text through the notifications topic; WeChat answers in its reply.
        ``message_id`` (the channel's id of the message) makes a redelivered message post only once."""
        command_text = unicodedata.normalize("NFKC", text)  # full-width digits, letters and spaces too
        if match := SMS_QUERY.match(command_text):
            return await self._text_query(sender, domain.normalise_tracking_number(match.group(1)))
        if match := SMS_RATING.match(command_text):
            tracking = domain.normalise_tracking_number(match.group(1))
            return await self._text_rating(sender, tracking, SMS_RATINGS[match.group(2)], match.group(3) or None)
        text = text.strip()
        if not text:
            raise Invalid("the message is empty", "text")
        post = sender.new_post(text)
        key = f"{sender.channel.value}:{message_id}" if message_id else None
        accepted = await self.submit(post, client_ip=None, idempotency_key=key)
        tracking = accepted.body["tracking_number"]
        # the notifier sends the citizen the "received" message from the submitted event: no second one here
        return {"action": "post", "tracking_number": tracking,
                "reply": f"您的诉求已受理，编号 {tracking}。查询进度请回复：查询 {tracking}"}

    async def _text_query(self, sender: TextSender, tracking: str) -> dict[str, Any]:
        doc = await self.store.get_by_tracking(tracking)
        if doc is None:
            return {"action": "query", "reply": f"未找到编号为 {tracking} 的诉求，请核对后重试。"}
        answer = self._status_answer(doc)
        notification_id = await self._text_answer(doc, sender, answer, "status")
        return {"action": "query", "tracking_number": doc["tracking_number"], "reply": answer,
                "notification_id": notification_id}

    async def _text_rating(self, sender: TextSender, tracking: str, rating: Rating,
                           reason: str | None) -> dict[str, Any]:
        doc = await self.store.get_by_tracking(tracking)
        if doc is None or not sender.owns(doc):
            # the same answer for an unknown number and someone else's: nothing about other cases leaks
            return {"action": "rating", "reply": f"未找到您提交的编号为 {tracking} 的诉求，请核对后重试。"}
        command = domain.Rate(rating=rating, reason=mask_personal_text(reason[:500]) if reason else None,
                              auto_reopen_on_unsatisfied=self.settings.auto_reopen_on_unsatisfied,
                              reopen_working_days=self.settings.reopen_working_days)
        try:
            doc = await self.execute(doc["_id"], command, None, first=doc)
        except IllegalTransition:
            status = STATUS_TEXT[CaseStatus(doc["status"])]
            answer = f"您的诉求 {doc['tracking_number']} 当前状态：{status}，暂不能评价。"
            notification_id = await self._text_answer(doc, sender, answer, "rating_refused")
            return {"action": "rating", "tracking_number": doc["tracking_number"], "reply": answer,
                    "notification_id": notification_id}
        answer = f"感谢您的评价（{RATING_TEXT[rating]}）。您的诉求 {doc['tracking_number']} 当前状态：" \
                 f"{STATUS_TEXT[CaseStatus(doc['status'])]}。"
        notification_id = await self._text_answer(doc, sender, answer, "rating")
        return {"action": "rating", "tracking_number": doc["tracking_number"], "rating": rating.value,
                "status": doc["status"], "reply": answer, "notification_id": notification_id}

    async def _text_answer(self, doc: dict[str, Any], sender: TextSender, text: str, template: str) -> str | None:
        """Queue an SMS answer on the private notifications topic (through the case's outbox); channels that
        answer in their reply (WeChat's passive reply) need none."""
        if sender.channel is not Channel.SMS:
            return None
        now = self.clock.now()
        notification = ev.Notification(
            notification_id=f"{template}:{doc['_id']}:{secrets.token_hex(6)}", case_id=doc["_id"],
            tracking_number=doc["tracking_number"], kind=ev.NotificationKind.STATUS,
            channel=ev.NotificationChannel.SMS, to=sender.address, template=template, text=text, created_at=now)
        event = make_event(notification, source=self.settings.source, time=now)
        await self.store.push_outbox([outbox_entry(event, "notifications")])
        self.on_commit()
        return notification.notification_id

    def _status_answer(self, doc: dict[str, Any]) -> str:
        status = CaseStatus(doc["status"])
        unit_name = self.reference.unit_name(doc.get("department_id"))
        unit = f"，承办单位：{unit_name}" if unit_name else ""
        deadline = ""
        if doc.get("deadline") and status in domain.OPEN_DEADLINE_STATES:
            deadline = f"，办理期限：{people_deadline(doc['deadline'])}"
        return f"您的诉求 {doc['tracking_number']} 当前状态：{STATUS_TEXT[status]}{unit}{deadline}。"

    # ------------------------------------------------------------------ units and supervisors
    async def internal_view(self, case_id: str, principal: Principal) -> dict[str, Any]:
        doc = await self.store.get(case_id)
        if doc is None:
            raise NotFound(f"no case {case_id}", "case_id")
        _authorize_read(doc, principal)
        return internal_case_view(doc, self.clock.now(), principal)

    async def reveal_contact(self, case_id: str, principal: Principal, ip: str | None = None) -> dict[str, Any]:
        """The poster's phone (and name unless anonymous) for the unit holding the case: one audited act."""
        doc = await self.store.get(case_id)
        if doc is None:
            raise NotFound(f"no case {case_id}", "case_id")
        role = _authorize(doc, "reveal_contact", principal)
        contact = doc.get("contact") or {}
        if self.accounts is not None:
            await self.accounts.audit(principal, "reveal_contact", role=role, case_id=case_id,
                                      tracking_number=doc.get("tracking_number"), unit_id=doc.get("department_id"),
                                      ip=ip)
        metrics.COMMANDS.labels("reveal_contact", "ok").inc()
        return {"phone": contact.get("phone"), "name": None if doc.get("anonymous") else contact.get("name")}

    async def reply(self, case_id: str, text: str, template_id: str | None, principal: Principal) -> dict[str, Any]:
        """A unit's reply; a unit_staff reply waits for the unit lead when the unit asks for approval."""
        doc = await self.store.get(case_id)
        if doc is None:
            raise NotFound(f"no case {case_id}", "case_id")
        role = _authorize(doc, domain.Action.REPLY.value, principal)
        unit_id = doc.get("department_id")
        needs_approval = False
        if self.accounts is not None:
            if template_id:
                await self.accounts.template_for_reply(template_id, unit_id)
            if role is Role.UNIT_STAFF and unit_id:
                needs_approval = (await self.accounts.store.unit_settings_of(unit_id))["reply_approval_required"]
        return await self.command(case_id, domain.Reply(text, needs_approval=needs_approval, template_id=template_id),
                                  principal, first=doc)

    async def list_cases(self, principal: Principal, filters: CaseFilter, *, page: int,
                         page_size: int) -> dict[str, Any]:
        now = self.clock.now()
        query = staff_query(filters, unit_scope(principal, filters.department_id), now, self.calendar)
        docs, total = await self._find(query, skip=(page - 1) * page_size, limit=page_size)
        return {"items": [internal_case_view(d, now, principal) for d in docs], "page": page, "page_size": page_size,
                "total": total}

    async def _find(self, query: CaseQuery, *, skip: int, limit: int,
                    projection: dict[str, Any] | None = None) -> tuple[list[dict[str, Any]], int]:
        """A list: the page's cases found in the index, then read by ``_id``."""
        summaries, total = self.store.index.find(query, offset=skip, limit=limit)
        return await self.store.get_many([s.case_id for s in summaries], projection), total

    async def inbox_counts(self, principal: Principal, department_id: str | None) -> dict[str, int]:
        """Each bucket counted with the same rule the list uses (domain.BUCKETS), at this moment."""
        now = self.clock.now()
        unit = unit_scope(principal, department_id)
        counts = {bucket.value: self.store.index.count(unit, bucket_window(bucket, now, self.calendar))
                  for bucket in domain.Bucket}
        counts["open_notices"] = self.store.index.open_notice_count(unit)
        return counts

    async def notices(self, principal: Principal, *, open_only: bool, department_id: str | None) -> dict[str, Any]:
        unit = unit_scope(principal, department_id)
        ids = sorted(self.store.index.cases_with_notices(unit, open_only=open_only))
        docs = await self.store.get_many(ids, dict.fromkeys(NOTICE_ROW_FIELDS, 1))
        items = self._notice_rows(docs, unit, open_only=open_only)
        return {"items": items, "total": len(items)}

    @staticmethod
    def _notice_rows(docs: list[dict[str, Any]], unit: str | None, *, open_only: bool) -> list[dict[str, Any]]:
        rows = []
        for doc in docs:
            for notice in doc.get("notices") or []:
                view = _notice_view(notice)
                if (unit and notice["department_id"] != unit) or (open_only and not view["open"]):
                    continue
                rows.append({**view, "case_id": doc["_id"], "tracking_number": doc["tracking_number"],
                             "title": doc.get("title"), "department": _department(doc),
                             "status": doc["status"], "status_label": STATUS_LABELS[CaseStatus(doc["status"])]})
        return sorted(rows, key=lambda r: (r["reply_by"], r["issued_at"] or ""))

    async def public_board(self, filters: BoardFilter, *, page: int, page_size: int) -> dict[str, Any]:
        docs, total = await self._find(board_query(filters), skip=(page - 1) * page_size, limit=page_size,
                                       projection=BOARD_PROJECTION)
        return {"items": [board_item(d) for d in docs], "page": page, "page_size": page_size, "total": total}

    async def moderate(self, case_id: str, principal: Principal, title: str | None, body: str | None) -> dict[str, Any]:
        """Approve the redacted text as it is (no title/body), or correct it: a correction is redacted
        again (a moderator may not reintroduce a phone number) and becomes the publishable copy."""
        doc = await self.store.get(case_id)
        if doc is None:
            raise NotFound(f"no case {case_id}", "case_id")
        names = tuple(n for n in [(doc.get("contact") or {}).get("name")] if n)
        new_title = redact(title, names).text[:100] if title is not None else doc["title"]
        new_body = redact(body, names).text[:5000] if body is not None else doc["body"]
        corrected = (new_title, new_body) != (doc["title"], doc["body"])
        command = domain.Moderate(title=new_title, body=new_body, corrected=corrected)
        return await self.command(case_id, command, principal)

    async def triage_queue(self, principal: Principal, page: int, page_size: int) -> dict[str, Any]:
        if not principal.oversees:
            raise Forbidden("the triage queue is for supervisors")
        docs, total = await self._find(CaseQuery(status=CaseStatus.TRIAGE), skip=(page - 1) * page_size,
                                       limit=page_size)
        now = self.clock.now()
        return {"items": [internal_case_view(d, now, principal) for d in docs], "page": page,
                "page_size": page_size, "total": total}

    def reassign_command(self, category: str, department_id: str, reason: str) -> domain.Reassign:
        """Names and deadlines from the reference data: the case's kind picks the working days at decision time."""
        cat = self.reference.category(category)
        unit = self.reference.unit(department_id)
        if cat is None:
            raise Invalid(f"unknown category {category!r}", "category")
        if unit is None:
            raise Invalid(f"unknown unit {department_id!r}", "department_id")
        by_kind = tuple((kind, self.reference.working_days(cat.id, kind, unit.id)) for kind in ("inquiry", "complaint"))
        return domain.Reassign(category=cat.id, category_name=cat.name, department_id=unit.id,
                               department_name=unit.name, reason=reason, working_days=dict(by_kind)["complaint"],
                               working_days_by_kind=by_kind)

    def named(self, decision: ev.RoutingDecision) -> ev.RoutingDecision:
        """The decision with the Chinese names of its category and unit from the reference data, whatever the
        router wrote: a case's code and name always match."""
        return decision.model_copy(update={
            "category_name": self.reference.category_name(decision.category),
            "department_name": self.reference.unit_name(decision.department_id)})

    async def command(self, case_id: str, command: Command, principal: Principal,
                      first: dict[str, Any] | None = None) -> dict[str, Any]:
        doc = await self.execute(case_id, command, principal, first=first)
        return internal_case_view(doc, self.clock.now(), principal)

    async def execute(self, case_id: str, command: Command, principal: Principal | None,
                      first: dict[str, Any] | None = None) -> dict[str, Any]:
        """Decide and store with an optimistic version check; re-read and retry on a concurrent change."""
        name = command.action.value
        load: Callable[[], Awaitable[dict[str, Any] | None]] = lambda: self.store.get(case_id)  # noqa: E731
        doc = first
        for attempt in range(COMMIT_ATTEMPTS):
            if doc is None or attempt:
                doc = await load()
            if doc is None:
                metrics.COMMANDS.labels(name, "not_found").inc()
                raise NotFound(f"no case {case_id}", "case_id")
            role = _authorize(doc, name, principal) if principal is not None else None
            actor = _staff_actor(principal, role)
            if principal is not None and isinstance(command, domain.AnswerNotice):
                _check_notice_unit(doc, command, principal)
            command = publishable_command(command, doc)
            case = case_from_doc(doc)
            now = self.clock.now()
            try:
                outcome = domain.decide(case, command, now, self.calendar,
                                        actor_id=principal.person_id if principal else None)
            except (DomainError, DecisionIgnored) as exc:
                metrics.COMMANDS.labels(name, "rejected" if isinstance(exc, DomainError) else "ignored").inc()
                raise
            events = [make_event(e, source=self.settings.source, time=now) for e in outcome.events]
            timeline = [_timeline_entry(e, actor) for e in outcome.events]
            timeline += [{"type": kind, "at": now, "note": note, "version": outcome.case.version, "internal": True,
                          "actor": actor} for kind, note in outcome.internal_notes]
            replies = [_reply_entry(e, case) for e in outcome.events if isinstance(e, ev.CaseReplied)]
            outbox = [outbox_entry(e, "case_events") for e in events]
            also_set = {field: value for e in outcome.events if isinstance(e, ev.CaseModerated)
                        for field, value in (("title", e.title), ("body", e.body))}
            if await self.store.commit(outcome.case, case.version, outbox=outbox, timeline=timeline,
                                       replies=replies, now=now, also_set=also_set):
                metrics.COMMANDS.labels(name, "ok").inc()
                self.on_commit()
                doc.update(case_to_fields(outcome.case), updated_at=now, **also_set)
                doc["timeline"] = [*doc.get("timeline", []), *timeline]
                doc["replies"] = [*doc.get("replies", []), *replies]
                if principal is not None and self.accounts is not None:
                    await self.accounts.audit(principal, _audit_action(command, outcome), role=role, case_id=case_id,
                                              tracking_number=doc.get("tracking_number"),
                                              unit_id=case.department_id or outcome.case.department_id,
                                              detail=_audit_detail(command))
                return doc
            await asyncio.sleep(0.005 * (attempt + 1))
        metrics.COMMANDS.labels(name, "conflict").inc()
        raise Conflict("the case was changed concurrently; re-read it and retry", "version")

    # ------------------------------------------------------------------ routing decisions
    async def apply_decision(self, decision: ev.RoutingDecision) -> str:
        """Returns what happened: applied, ignored (duplicate/outdated) or raises MalformedDecision."""
        doc = await self.store.get(decision.case_id)
        if doc is None:
            raise domain.MalformedDecision(f"unknown case {decision.case_id}")
        try:
            await self.execute(decision.case_id, domain.ApplyDecision(self.named(decision)), None, first=doc)
        except DecisionIgnored as exc:
            log.info("decision_ignored", decision_id=decision.decision_id, reason=str(exc))
            metrics.DECISIONS.labels("ignored").inc()
            return "ignored"
        except IllegalTransition as exc:
            log.info("decision_ignored", decision_id=decision.decision_id, reason=exc.message)
            metrics.DECISIONS.labels("ignored").inc()
            return "ignored"
        metrics.DECISIONS.labels(decision.outcome.value).inc()
        return "applied"

    async def _by_tracking(self, tracking_number: str) -> dict[str, Any]:
        doc = await self.store.get_by_tracking(domain.normalise_tracking_number(tracking_number))
        if doc is None:
            raise NotFound(f"no post with tracking number {tracking_number!r}", "tracking_number")
        return doc


# --------------------------------------------------------------------------------------------------
# Authorization and views (pure functions of a stored document)
# --------------------------------------------------------------------------------------------------


FREE_TEXT_FIELDS = ("text", "reason", "note")
NOTICE_ROW_FIELDS = ["tracking_number", "title", "status", "department_id", "department_name", "notices"]
BOARD_PROJECTION = {name: 1 for name in ("tracking_number", "title", "body", "category", "category_name",
                                         "department_id", "department_name", "county", "status", "created_at",
                                         "replied_at", "replies", "attachment_ids", "attachments")}
TRACKING_SHAPE = re.compile(r"^WZ\d{4}-?[A-Z0-9]{4}-?[A-Z0-9]{4}$")


# ----- who may see what

def unit_scope(principal: Principal, requested: str | None) -> str | None:
    """The unit whose cases a list shows: a unit's own; supervisors choose one or see the whole city."""
    if principal.oversees:
        return requested
    if principal.unit_id is None:
        raise Forbidden("case work is for units and supervisors")
    if requested is not None and requested != principal.unit_id:
        raise Forbidden("only supervisors can look at another unit's cases", "department_id")
    return principal.unit_id


@dataclass(frozen=True)
class CaseFilter:
    status: CaseStatus | None = None
    overdue: bool | None = None
    bucket: domain.Bucket | None = None
    q: str | None = None
    since: date | None = None
    until: date | None = None
    category: str | None = None
    county: str | None = None
    department_id: str | None = None
    pending_extension: bool | None = None
    rating: Rating | None = None
    flagged: bool | None = None
    awaiting_moderation: bool | None = None  # the moderators' queue: text not yet publishable


@dataclass(frozen=True)
class BoardFilter:
    q: str | None = None
    county: str | None = None
    category: str | None = None
    department_id: str | None = None
    status: CaseStatus | None = None


def _day_start(day: date) -> datetime:
    return datetime(day.year, day.month, day.day, tzinfo=SHANGHAI)


def tracking_number_in(q: str | None) -> str | None:
    """The tracking number a search names (any case, with or without dashes), or None for keywords."""
    if not q:
        return None
    tracking = domain.normalise_tracking_number(q)
    if not TRACKING_SHAPE.match(tracking):
        return None
    bare = tracking.replace("-", "")
    return f"{bare[:6]}-{bare[6:10]}-{bare[10:]}"


def _text(q: str | None, *, include_original: bool) -> dict[str, Any]:
    """A search: a tracking number is looked up exactly; anything else is a case-insensitive substring of the
    redacted text (for staff also of the citizen's own words)."""
    if not q or not q.strip():
        return {}
    tracking = tracking_number_in(q)
    if tracking:
        return {"tracking_number": tracking}
    return {"text": q.strip(), "include_original": include_original}


def _day_start_ms(day: date | None, plus_days: int = 0) -> int | None:
    return to_ms(_day_start(day) + timedelta(days=plus_days)) if day else None


def bucket_window(bucket: domain.Bucket, now: datetime, calendar: WorkCalendar) -> StateWindow:
    """The domain's rule of a bucket, evaluated now."""
    rule = domain.BUCKETS[bucket]
    after, before = domain.deadline_window(rule, now, calendar)
    return StateWindow(frozenset(rule.states), to_ms(after), to_ms(before))


def staff_query(f: CaseFilter, unit: str | None, now: datetime, calendar: WorkCalendar) -> CaseQuery:
    """The conditions of a staff list."""
    overdue = bucket_window(domain.Bucket.OVERDUE, now, calendar)
    within = (overdue,) if f.overdue is True else ()
    if f.bucket is not None:
        within += (bucket_window(f.bucket, now, calendar),)
    return CaseQuery(
        unit=unit, status=f.status, within=within, outside=(overdue,) if f.overdue is False else (),
        created_from_ms=_day_start_ms(f.since), created_before_ms=_day_start_ms(f.until, 1),
        category=f.category, county=f.county, pending_extension=f.pending_extension,
        rating=f.rating.value if f.rating is not None else None, flagged=f.flagged,
        publishable=None if f.awaiting_moderation is None else not f.awaiting_moderation,
        **_text(f.q, include_original=True))


def board_query(f: BoardFilter) -> CaseQuery:
    """The public board: only publishable cases, filtered over their redacted text."""
    return CaseQuery(publishable=True, county=f.county, category=f.category, unit=f.department_id,
                     status=f.status, **_text(f.q, include_original=False))


def publishable_command(command: Command, doc: dict[str, Any]) -> Command:
    """A command whose free text (a reply, a reason, a note) leaves on the public topic: redacted, with the
    poster's own name, before the domain turns it into events."""
    names = tuple(n for n in [(doc.get("contact") or {}).get("name")] if n)
    changes = {f.name: redact_text(getattr(command, f.name), names) for f in dataclasses.fields(command)  # type: ignore[arg-type]
               if f.name in FREE_TEXT_FIELDS and isinstance(getattr(command, f.name), str)}
    return dataclasses.replace(command, **changes) if changes else command  # type: ignore[type-var]


def _authorize_read(doc: dict[str, Any], principal: Principal) -> None:
    if not principal.may_read(doc.get("department_id")):
        if principal.oversees or principal.unit_id:
            raise Forbidden("this case belongs to another unit")
        raise Forbidden("case work is for units and supervisors")


def _check_notice_unit(doc: dict[str, Any], command: domain.AnswerNotice, principal: Principal) -> None:
    """A notice is answered by the unit it was sent to, even once the case has moved to another unit."""
    notice = next((n for n in doc.get("notices") or [] if n["notice_id"] == command.notice_id), None)
    if notice is not None and not principal.in_unit(notice["department_id"]):
        raise Forbidden("only the unit the notice was sent to can answer it")


def _authorize(doc: dict[str, Any], action: str, principal: Principal) -> Role:
    """The role under which ``principal`` takes ``action`` on this case, or 403."""
    role = principal.acting_role(action, doc.get("department_id"))
    if role is None:
        _authorize_read(doc, principal)
        raise Forbidden(f"your role may not {action} this case")
    return role


def _staff_actor(principal: Principal | None, role: Role | None) -> dict[str, Any] | None:
    if principal is None:
        return None
    return {"role": role.value if role else None, "id": principal.person_id, "display_name": principal.display_name}


def _audit_action(command: Command, outcome: domain.Outcome) -> str:
    if isinstance(command, domain.Reply) and not outcome.events:
        return "reply_submitted"
    return command.action.value


def _audit_detail(command: Command) -> str | None:
    parts = [f"{name}={getattr(command, name)}" for name in ("template_id", "extra_working_days", "department_id",
                                                             "category") if getattr(command, name, None)]
    for name in ("reason", "note"):
        if getattr(command, name, None):
            parts.append(str(getattr(command, name))[:200])
    return "; ".join(parts) or None


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value else None


def _timeline_entry(event: ev.CaseEvent, staff: dict[str, Any] | None = None) -> dict[str, Any]:
    short = ev.short_type(ev.SPEC_BY_MODEL[type(event)].type).removeprefix("case.")
    actor = staff if staff is not None and event.actor_id else {"role": event.actor.value}
    return {"type": short, "at": event.occurred_at, "note": domain.public_note(event), "version": event.version,
            "actor": actor}


def _reply_entry(event: ev.CaseReplied, case: Case) -> dict[str, Any]:
    return {"text": event.reply, "at": event.occurred_at, "department_id": event.department_id,
            "department_name": case.department_name, "handling_round": event.handling_round,
            "on_time": event.on_time}


def _department(doc: dict[str, Any]) -> dict[str, Any] | None:
    if not doc.get("department_id"):
        return None
    return {"id": doc["department_id"], "name": doc.get("department_name") or doc["department_id"]}


def _category(doc: dict[str, Any]) -> dict[str, Any] | None:
    if not doc.get("category"):
        return None
    return {"code": doc["category"], "name": doc.get("category_name") or doc["category"]}


STATUS_LABELS = {
    CaseStatus.SUBMITTED: "已受理",
    CaseStatus.ASSIGNED: "已转办",
    CaseStatus.TRIAGE: "人工分派中",
    CaseStatus.SIGNED: "办理中",
    CaseStatus.RETURNED: "重新分派中",
    CaseStatus.EXTENDED: "办理中（已延期）",
    CaseStatus.REPLIED: "已答复",
    CaseStatus.RATED: "已评价",
    CaseStatus.REOPENED: "二次办理中",
    CaseStatus.CLOSED: "已办结",
}
EXCERPT_CHARS = 120


def _public_replies(doc: dict[str, Any]) -> list[dict[str, Any]]:
    return [{"text": r["text"], "at": _iso(r["at"]), "department": r.get("department_name"),
             "handling_round": r.get("handling_round", 1)} for r in doc.get("replies", [])]


def _attachments(doc: dict[str, Any]) -> list[dict[str, Any]]:
    """Photos uploaded to intake (served by GET /v1/attachments/{id}), then links a client gave."""
    return ([{"id": a, "url": f"/v1/attachments/{a}"} for a in doc.get("attachment_ids") or []]
            + [{"id": None, "url": url} for url in doc.get("attachments") or []])


def _legacy_actor(kind: str) -> dict[str, Any]:
    """Timeline entries written before actors were recorded: who does this kind of step."""
    role = {"submitted": "citizen", "rated": "citizen", "assigned": "router", "triaged": "router",
            "linked": "router"}.get(kind, "department" if kind in ("signed", "returned", "replied",
                                                                    "extension_requested") else "supervisor")
    return {"role": role}


def public_case_view(doc: dict[str, Any], now: datetime) -> dict[str, Any]:
    """What anyone holding the tracking number sees: never a phone number or a name. The text is the
    redacted copy, and only once it is publishable (checked automatically or by a moderator)."""
    status = CaseStatus(doc["status"])
    publishable = bool(doc.get("publishable"))
    return {
        "tracking_number": doc["tracking_number"],
        "status": status.value,
        "status_label": STATUS_LABELS[status],
        "channel": doc.get("channel"),
        "title": doc.get("title") if publishable else None,
        "publishable": publishable,
        "category": _category(doc),
        "department": _department(doc),
        "county": doc.get("county"),
        "deadline": _iso(doc.get("deadline")),
        "overdue": domain.is_overdue(status, doc.get("deadline"), now),
        "submitted_at": _iso(doc.get("created_at")),
        "replied_at": _iso(doc.get("replied_at")),
        "closed_at": _iso(doc.get("closed_at")),
        "handling_round": doc.get("handling_round", 1),
        "rating": doc.get("rating"),
        "attachments": _attachments(doc) if publishable else [],
        "replies": _public_replies(doc),
        "timeline": [{"type": t["type"], "at": _iso(t["at"]), "note": t.get("note")} for t in doc.get("timeline", [])
                     if not t.get("internal")],
    }


def board_item(doc: dict[str, Any]) -> dict[str, Any]:
    """One case on the public board (callers only pass publishable cases)."""
    status = CaseStatus(doc["status"])
    body = doc.get("body") or ""
    return {
        "tracking_number": doc["tracking_number"],
        "title": doc.get("title"),
        "excerpt": body if len(body) <= EXCERPT_CHARS else body[:EXCERPT_CHARS] + "…",
        "category": _category(doc),
        "department": _department(doc),
        "county": doc.get("county"),
        "status": status.value,
        "status_label": STATUS_LABELS[status],
        "submitted_at": _iso(doc.get("created_at")),
        "replied_at": _iso(doc.get("replied_at")),
        "attachments": _attachments(doc),
        "replies": _public_replies(doc),
    }


def _notice_view(notice: dict[str, Any]) -> dict[str, Any]:
    return {**notice, "issued_at": _iso(notice.get("issued_at")), "answered_at": _iso(notice.get("answered_at")),
            "open": notice.get("answered_at") is None}


def internal_case_view(doc: dict[str, Any], now: datetime, principal: Principal | None = None) -> dict[str, Any]:
    """What units and supervisors see: the whole case except contact details and plumbing; ``allowed_actions``
    is what ``principal`` may do now (the state machine, the case's guards, the role and the unit)."""
    pending = doc.get("pending_extension")
    pending_reply = doc.get("pending_reply")
    candidates = [*domain.available_actions(case_from_doc(doc)), "reveal_contact"]
    allowed = permitted_actions(principal, candidates, doc.get("department_id")) if principal else []
    view = public_case_view(doc, now)
    original = doc.get("original") or {}
    view.update(
        case_id=doc["_id"],
        version=doc["version"],
        title=doc.get("title"),
        body=doc.get("body"),
        original_title=original.get("title", doc.get("title")),  # as the citizen typed it: staff only
        original_body=original.get("body", doc.get("body")),
        redaction=doc.get("redaction") or {"kinds": [], "uncertain": False},
        awaiting_moderation=not doc.get("publishable"),
        location=doc.get("location"),
        anonymous=doc.get("anonymous", False),
        attachments=_attachments(doc),
        requested_category=doc.get("requested_category"),
        requested_category_name=reference().category_name(doc.get("requested_category")),
        assigned_at=_iso(doc.get("assigned_at")),
        working_days=doc.get("working_days"),
        routing_round=doc.get("routing_round", 1),
        return_count=doc.get("return_count", 0),
        tried_departments=doc.get("tried_departments", []),
        tried_units=[{"id": u, "name": reference().unit_name(u)} for u in doc.get("tried_departments", [])],
        pending_extension={**pending, "requested_at": _iso(pending["requested_at"])} if pending else None,
        flagged=doc.get("flagged", False),
        linked_case_id=doc.get("linked_case_id"),
        notices=[_notice_view(n) for n in doc.get("notices") or []],
        callbacks=[{**c, "recorded_at": _iso(c.get("recorded_at"))} for c in doc.get("callbacks") or []],
        pending_reply={**pending_reply, "submitted_at": _iso(pending_reply["submitted_at"])} if pending_reply else None,
        allowed_actions=allowed,
        updated_at=_iso(doc.get("updated_at")),
    )
    view["timeline"] = [{"type": t["type"], "at": _iso(t["at"]), "note": t.get("note"), "version": t.get("version"),
                         "actor": t.get("actor") or _legacy_actor(t["type"])} for t in doc.get("timeline", [])]
    for private in PRIVATE_FIELDS:
        view.pop(private, None)
    return view
