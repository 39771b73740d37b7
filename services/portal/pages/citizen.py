"""Citizens (no account): post (one form that works without JavaScript), the confirmation with the tracking
number, looking a case up, rating the reply with the poster's proof."""

from __future__ import annotations

import secrets
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import Response
from starlette.datastructures import UploadFile

from services.portal import domain, metrics
from services.portal.client import ApiError
from services.portal.security import CSRF_FIELD, csrf_ok
from services.portal.web import forwarded_for, portal, redirect, render, session_of

router = APIRouter()
POST_FIELDS = {"kind", "title", "body", "county", "township", "address", "phone", "name", "anonymous", "photos"}
# intake's field names -> the form's
API_FIELDS = {"contact_phone": "phone", "location": "county", "location.county": "county",
              "location.township": "township", "attachment_ids": "photos", "file": "photos"}


@router.get("/")
async def home(request: Request) -> Response:
    return render(request, "citizen/home.html", title="首页")


async def _post_page(request: Request, status: int = 200, **context: Any) -> Response:
    reference = await portal(request).reference.get()
    counties = domain.counties_of(reference)
    return render(request, "citizen/post.html", status, title="我要留言", counties=counties,
                  max_mb=portal(request).settings.upload_max_bytes // (1024 * 1024),
                  max_files=portal(request).settings.upload_max_files, **context)


@router.get("/post")
async def post_form(request: Request) -> Response:
    return await _post_page(request, values={"kind": "complaint", "anonymous": "no"},
                            idempotency_key=secrets.token_urlsafe(16))


async def _checked_photos(request: Request, files: list[Any]
                          ) -> tuple[list[tuple[str, bytes, str]], str | None, int]:
    """Each photo read up to the limit and recognised by its first bytes, before anything is forwarded."""
    settings = portal(request).settings
    max_mb = settings.upload_max_bytes // (1024 * 1024)
    photos = [f for f in files if isinstance(f, UploadFile) and f.filename]
    if len(photos) > settings.upload_max_files:
        return [], f"最多上传 {settings.upload_max_files} 张照片", 422
    checked = []
    for photo in photos:
        content = await photo.read(settings.upload_max_bytes + 1)
        if len(content) > settings.upload_max_bytes:
            return [], f"照片“{photo.filename}”超过 {max_mb} MB，请压缩后再上传", 413
        media_type = domain.sniff_image(content[:16])
        if media_type is None:
            return [], f"“{photo.filename}”不是 JPG、PNG 或 WebP 图片，只能上传这三种格式的照片", 415
        checked.append((photo.filename or "photo", content, media_type))
    return checked, None, 200


@router.post("/post")
async def post_submit(request: Request) -> Response:
    form = await request.form(max_files=20)
    data = {k: form.get(k) for k in POST_FIELDS - {"photos"}}
    idempotency_key = str(form.get("idempotency_key") or "")[:64] or secrets.token_urlsafe(16)
    context = {"idempotency_key": idempotency_key}
    if not csrf_ok(session_of(request), form.get(CSRF_FIELD) if isinstance(form.get(CSRF_FIELD), str) else None):
        metrics.CSRF_REFUSED.inc()
        values = domain.check_post_form(data, {}).values
        return await _post_page(request, 403, values=values, errors={"_": domain.ERROR_WORDS["csrf"]}, **context)
    counties = domain.counties_of(await portal(request).reference.get())
    check = domain.check_post_form(data, counties)
    photos, photo_error, photo_status = await _checked_photos(request, form.getlist("photos"))
    if photo_error:
        check.errors["photos"] = photo_error
    if not check.ok:
        status = photo_status if photo_error and len(check.errors) == 1 else 422
        return await _post_page(request, status, values=check.values, errors=check.errors, **context)
    intake = portal(request).intake
    try:
        chain = forwarded_for(request)
        attachment_ids = [await intake.upload(name, content, media, chain) for name, content, media in photos]
        accepted = await intake.submit_post(domain.post_payload(check.values, attachment_ids),
                                            idempotency_key=idempotency_key, forwarded_for=chain)
    except ApiError as exc:
        field = API_FIELDS.get(exc.field or "", exc.field)
        message = domain.error_words(exc.code, exc.status)
        if exc.status == 429:
            message = "提交太频繁了，请过一会儿再提交（同一个手机号每小时最多 5 条）"
        elif exc.code in ("too_large", "payload_too_large") or exc.status == 413:
            limit = portal(request).settings.upload_max_bytes // 1048576
            field, message = "photos", f"照片太大，每张不能超过 {limit} MB"
        elif exc.status == 415 or exc.code == "unsupported_media_type":
            field, message = "photos", "只能上传 JPG、PNG 或 WebP 图片"
        elif exc.status >= 500:
            field = "_"
        elif exc.status == 404 and photos:
            field, message = "photos", "照片暂时无法上传，请去掉照片后提交，或稍后再试"
        errors = {field if field in POST_FIELDS else "_": message}
        status = exc.status if 400 <= exc.status < 500 else 503
        return await _post_page(request, status, values=check.values, errors=errors, **context)
    tracking = accepted["tracking_number"]
    if accepted.get("rating_token"):
        session_of(request).remember_rating_token(tracking, accepted["rating_token"])
    return redirect(f"/post/done/{tracking}")


@router.get("/post/done/{tracking}")
async def post_done(request: Request, tracking: str) -> Response:
    tracking = domain.normalise_tracking(tracking)
    if not domain.TRACKING.match(tracking):
        return render(request, "error.html", 404, title="没有找到", message="编号不正确。")
    return render(request, "citizen/done.html", title=f"提交成功：{tracking}", tracking=tracking,
                  remembered=tracking in session_of(request).rating_tokens)


def _tracking_error(raw: str) -> str | None:
    if not raw:
        return "请输入诉求编号"
    if not domain.TRACKING.match(raw):
        return "编号由字母、数字和“-”组成，请核对后重新输入"
    return None


@router.get("/track")
async def track_form(request: Request, n: str | None = None) -> Response:
    if n is None:
        return render(request, "citizen/track.html", title="查询办理进度")
    tracking = domain.normalise_tracking(n)
    error = _tracking_error(tracking)
    if error:
        return render(request, "citizen/track.html", 422, title="查询办理进度", values={"n": n}, errors={"n": error})
    return redirect(f"/track/{tracking}")


async def _case_page(request: Request, tracking: str, status: int = 200, **context: Any) -> Response:
    tracking = domain.normalise_tracking(tracking)
    error = _tracking_error(tracking)
    if error:
        return render(request, "citizen/track.html", 422, title="查询办理进度", values={"n": tracking},
                      errors={"n": error})
    try:
        case = await portal(request).intake.post(tracking)
    except ApiError as exc:
        if exc.status in (404, 422):
            return render(request, "citizen/track.html", 404, title="没有找到这件诉求", values={"n": tracking},
                          errors={"n": f"没有找到编号为 {tracking} 的诉求，请核对编号（在提交成功的页面和短信里）"})
        raise
    can_rate = case["status"] == "replied" and not case.get("rating")
    return render(request, "citizen/case.html", status, title=f"诉求 {tracking}", case=case, can_rate=can_rate,
                  has_token=tracking in session_of(request).rating_tokens, **context)


@router.get("/track/{tracking}")
async def track_case(request: Request, tracking: str) -> Response:
    return await _case_page(request, tracking)


@router.post("/track/{tracking}/rating")
async def rate(request: Request, tracking: str) -> Response:
    tracking = domain.normalise_tracking(tracking)
    form = await request.form()
    values = {k: str(form.get(k) or "").strip() for k in ("rating", "reason", "phone_last4")}
    if not csrf_ok(session_of(request), form.get(CSRF_FIELD) if isinstance(form.get(CSRF_FIELD), str) else None):
        metrics.CSRF_REFUSED.inc()
        return await _case_page(request, tracking, 403, values=values, errors={"_": domain.ERROR_WORDS["csrf"]})
    token = session_of(request).rating_tokens.get(tracking)
    errors = {}
    if values["rating"] not in domain.RATING_WORDS:
        errors["rating"] = "请选择满意、基本满意或不满意"
    if values["rating"] == "unsatisfied" and len(values["reason"]) < 2:
        errors["reason"] = "选择不满意时，请写明不满意的原因，以便二次办理"
    if len(values["reason"]) > 500:
        errors["reason"] = "原因不能超过 500 个字"
    if not token and not (len(values["phone_last4"]) == 4 and values["phone_last4"].isdigit()):
        errors["phone_last4"] = "请输入留言时所填手机号码的后四位数字"
    if errors:
        return await _case_page(request, tracking, 422, values=values, errors=errors)
    body: dict[str, Any] = {"rating": values["rating"]}
    if values["reason"]:
        body["reason"] = values["reason"]
    if token:
        body["rating_token"] = token
    else:
        body["phone_last4"] = values["phone_last4"]
    try:
        await portal(request).intake.rate(tracking, body, forwarded_for(request))
    except ApiError as exc:
        if exc.status == 403:
            errors = {"phone_last4": "手机号后四位与留言时填写的不一致，只有留言人本人可以评价"}
        elif exc.status == 409:
            errors = {"_": "这件诉求现在不能评价：可能已经评价过，或单位还没有回复"}
        elif exc.status == 404:
            raise
        else:
            errors = {"rating" if exc.field == "rating" else "_": domain.error_words(exc.code, exc.status)}
        status = exc.status if 400 <= exc.status < 500 else 503
        return await _case_page(request, tracking, status, values=values, errors=errors)
    return redirect(f"/track/{tracking}?rated=1")
