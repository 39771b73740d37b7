"""The city's WeChat official account (微信公众号): the message-push webhook (服务器配置).

- ``GET /v1/wechat/callback`` — WeChat's server check: ``signature`` = SHA1 of the sorted token, timestamp
  and nonce; a right one answers ``echostr`` as plain text.
- ``POST /v1/wechat/callback`` — a follower's message (XML, plain or AES-encrypted in safe mode). Text is
  handled by the same conversation as SMS (``查询 编号``, ``评价 编号 满意|基本满意|不满意 [理由]``,
  anything else becomes a post with the follower's openid as its contact) and answered *passively*, in
  the XML reply, within WeChat's 5-second limit: when the work takes longer, the reply says it is being
  handled and the work finishes anyway. WeChat retries a message it got no answer to; the message id is
  the post's idempotency key, so a retry never posts twice.

AppID, AppSecret, token (and the EncodingAESKey for safe mode) come from settings; production refuses to
start with the channel on and any of them missing (``IntakeSettings.check_production``).
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import PlainTextResponse, Response
from wechatpy import parse_message
from wechatpy.crypto import WeChatCrypto
from wechatpy.exceptions import InvalidAppIdException, InvalidSignatureException
from wechatpy.replies import TextReply
from wechatpy.utils import check_signature

from services.common.logging import get_logger
from services.intake import metrics
from services.intake.config import IntakeSettings
from services.intake.handlers import IntakeService, Invalid, NotFound, RateLimited, ServiceError, TextSender

log = get_logger(__name__)
wechat_router = APIRouter(prefix="/v1/wechat", tags=["wechat"])
WELCOME = "欢迎关注赣州网络问政。直接发送文字即可反映问题；发送“查询 编号”查看办理进度；" \
          "发送“评价 编号 满意/基本满意/不满意 理由”评价答复。"
TEXT_ONLY = "目前仅支持文字消息，请用文字描述您的诉求。"
STILL_WORKING = "已收到您的消息，正在处理。稍后可发送“查询 编号”查看进度。"
TRY_LATER = "系统繁忙，请稍后再试。"
_XML = "application/xml"


class InvalidSignature(ServiceError):
    status, code = 403, "invalid_signature"


def _settings(request: Request) -> IntakeSettings:
    settings: IntakeSettings = request.app.state.runtime.settings
    if not settings.wechat_enabled or not settings.wechat_token:
        raise NotFound("the WeChat channel is not enabled here", None)
    return settings


def _verify(settings: IntakeSettings, signature: str, timestamp: str, nonce: str) -> None:
    try:
        check_signature(settings.wechat_token, signature, timestamp, nonce)
    except InvalidSignatureException:
        metrics.WECHAT_MESSAGES.labels("bad_signature").inc()
        raise InvalidSignature("the signature does not match the token", "signature") from None


Signature = Annotated[str, Query(min_length=1, max_length=128)]
Stamp = Annotated[str, Query(min_length=1, max_length=64)]
_TEXT = {"content": {"text/plain": {"schema": {"type": "string"}}}, "description": "echostr, as sent"}
_REPLY = {"content": {_XML: {"schema": {"type": "string"}}, "text/plain": {"schema": {"type": "string"}}},
          "description": "the passive reply (XML), or `success` when there is nothing to say"}
_ERRORS: dict[int | str, dict[str, Any]] = {403: {"description": "bad signature"},
                                            404: {"description": "channel not enabled"}}
_BODY = {"requestBody": {"required": True, "content": {_XML: {"schema": {"type": "string"}},
                                                       "text/xml": {"schema": {"type": "string"}}}}}


@wechat_router.get("/callback", responses={200: _TEXT, **_ERRORS}, response_class=PlainTextResponse)
async def verify_server(request: Request, signature: Signature, timestamp: Stamp, nonce: Stamp,
                        echostr: Annotated[str, Query(min_length=1, max_length=256)]) -> PlainTextResponse:
    settings = _settings(request)
    _verify(settings, signature, timestamp, nonce)
    return PlainTextResponse(echostr)


@wechat_router.post("/callback", responses={200: _REPLY, **_ERRORS}, openapi_extra=_BODY)
async def receive_message(request: Request, signature: Signature, timestamp: Stamp, nonce: Stamp,
                          encrypt_type: Annotated[str | None, Query(max_length=16)] = None,
                          msg_signature: Annotated[str | None, Query(max_length=128)] = None) -> Response:
    settings = _settings(request)
    _verify(settings, signature, timestamp, nonce)
    raw = (await request.body()).decode("utf-8", errors="replace")
    crypto = None
    if encrypt_type == "aes":
        if not settings.wechat_encoding_aes_key or not msg_signature:
            raise InvalidSignature("an encrypted message needs the EncodingAESKey and msg_signature", "msg_signature")
        crypto = WeChatCrypto(settings.wechat_token, settings.wechat_encoding_aes_key, settings.wechat_app_id)
        try:
            raw = crypto.decrypt_message(raw, msg_signature, timestamp, nonce)
        except (InvalidSignatureException, InvalidAppIdException):
            metrics.WECHAT_MESSAGES.labels("bad_signature").inc()
            raise InvalidSignature("the encrypted message does not verify", "msg_signature") from None
    try:
        message = parse_message(raw)
    except Exception as exc:  # not the XML WeChat sends
        raise Invalid(f"not a WeChat message: {type(exc).__name__}", "body") from None
    answer = await answer_message(request.app.state.runtime.service, message, settings.wechat_reply_seconds)
    if answer is None:
        return PlainTextResponse("success")  # WeChat's "nothing to reply"
    xml = TextReply(content=answer, message=message).render()
    if crypto is not None:
        xml = crypto.encrypt_message(xml, nonce, timestamp)
    return Response(xml, media_type=_XML)


async def answer_message(service: IntakeService, message: Any, within_seconds: float) -> str | None:
    """What to reply to one WeChat message (None: nothing)."""
    kind = getattr(message, "type", "unknown")
    if kind == "event":
        metrics.WECHAT_MESSAGES.labels("event").inc()
        return WELCOME if getattr(message, "event", "") == "subscribe" else None
    if kind != "text":
        metrics.WECHAT_MESSAGES.labels("not_text").inc()
        return TEXT_ONLY
    sender = TextSender.wechat(message.source)
    work = asyncio.ensure_future(service.converse(sender, message.content or "", message_id=str(message.id)))
    try:
        result = await asyncio.wait_for(asyncio.shield(work), timeout=within_seconds)
    except TimeoutError:
        metrics.WECHAT_MESSAGES.labels("late").inc()
        work.add_done_callback(_log_late_failure)
        return STILL_WORKING  # the work goes on; WeChat would drop an answer after 5 s
    except Invalid:
        metrics.WECHAT_MESSAGES.labels("empty").inc()
        return TEXT_ONLY
    except RateLimited:
        metrics.WECHAT_MESSAGES.labels("rate_limited").inc()
        return "发送太频繁，请稍后再试。"
    except ServiceError as exc:
        log.info("wechat_message_refused", code=exc.code)
        metrics.WECHAT_MESSAGES.labels("refused").inc()
        return TRY_LATER
    metrics.WECHAT_MESSAGES.labels(result["action"]).inc()
    return result["reply"]


def _log_late_failure(task: asyncio.Future) -> None:
    with contextlib.suppress(asyncio.CancelledError):
        if task.exception() is not None:
            log.warning("wechat_late_message_failed", error=type(task.exception()).__name__)
