"""Units' workbench and the case page shared with the supervision office: sign-in and out, password change,
the inbox with its six counts and 督办 notices, the case with its whole history and a form for every action
intake allows this person now."""

from __future__ import annotations

import asyncio
import re
from dataclasses import dataclass
from datetime import date
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import Response

from services.portal import domain, metrics
from services.portal.client import ApiError
from services.portal.security import safe_next as safe_next_path
from services.portal.web import (
    ADMIN_ROLES,
    OFFICE_ROLES,
    STAFF_ROLES,
    call,
    forwarded_for,
    home_for,
    optional,
    portal,
    read_form,
    redirect,
    render,
    require,
    session_of,
)

router = APIRouter()
CASE_ROLES = STAFF_ROLES | OFFICE_ROLES
DONE_WORDS = {
    "sign": "已签收", "reply": "回复已提交", "reply_pending": "回复已提交，等待单位负责人审核后公开",
    "approve_reply": "回复已审核通过并公开", "reject_reply": "回复已退回经办人修改", "return": "已退单，等待重新分派",
    "request_extension": "延期申请已提交，等待督办人员审批", "approve_extension": "已批准延期",
    "deny_extension": "已不批准延期", "reassign": "已改派", "reopen": "已转二次办理", "close": "已办结销号",
    "flag": "已列为典型案例", "notice": "督办通知已发出", "callback": "回访已记录", "answer_notice": "督办已答复",
    "password": "密码已修改",
}


@dataclass(frozen=True)
class Field:
    name: str
    label: str
    kind: str = "text"  # text | textarea | int | date | choice | bool
    required: bool = True
    min_len: int = 2
    max_len: int = 500
    choices: tuple[str, ...] = ()


@dataclass(frozen=True)
class Action:
    path: str
    fields: tuple[Field, ...] = ()


REASON = Field("reason", "理由")
ACTIONS: dict[str, Action] = {
    "sign": Action("sign"),
    "reply": Action("reply", (Field("text", "回复内容", "textarea", min_len=1, max_len=10000),
                              Field("template_id", "回复模板", required=False, min_len=0, max_len=64))),
    "approve_reply": Action("reply/approve"),
    "reject_reply": Action("reply/reject", (REASON,)),
    "return": Action("return", (Field("reason", "退单理由", "textarea"),)),
    "request_extension": Action("extension", (Field("reason", "延期理由", "textarea"),
                                              Field("extra_working_days", "延长的工作日", "int"))),
    "approve_extension": Action("extension/approve"),
    "deny_extension": Action("extension/deny", (Field("reason", "不批准的理由", "textarea", required=False,
                                                      min_len=0),)),
    "reassign": Action("reassign", (Field("category", "类别", "choice", min_len=1, max_len=64),
                                    Field("department_id", "承办单位", "choice", min_len=1, max_len=64),
                                    Field("reason", "改派理由"))),
    "reopen": Action("reopen", (Field("reason", "二次办理的要求", "textarea"),)),
    "close": Action("close", (Field("reason", "办结说明"),)),
    "flag": Action("flag", (Field("note", "说明", required=False, min_len=0),)),
    "notice": Action("notices", (Field("method", "督办方式", "choice", choices=tuple(domain.NOTICE_METHODS)),
                                 Field("note", "督办要求", "textarea"), Field("reply_by", "限期答复日期", "date"))),
    "callback": Action("callback", (Field("reached", "是否联系上", "bool"),
                                    Field("rating", "群众评价", "choice", required=False,
                                          choices=tuple(domain.RATING_WORDS)),
                                    Field("note", "回访记录", "textarea"))),
    "reveal_contact": Action("contact"),
}
DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")


def check_action(action: Action, form: dict[str, Any]) -> tuple[dict[str, Any], dict[str, str], dict[str, str]]:
    """(the API body, errors per field, what was typed) for one action's form. Pure."""
    body: dict[str, Any] = {}
    errors: dict[str, str] = {}
    typed = {f.name: str(form.get(f.name) or "").strip() for f in action.fields}
    for f in action.fields:
        raw = typed[f.name]
        if not raw:
            if f.required and f.kind != "bool":
                errors[f.name] = f"请填写{f.label}" if f.kind not in ("choice",) else f"请选择{f.label}"
            continue
        if f.kind == "int":
            if not raw.isdigit() or not 1 <= int(raw) <= 30:
                errors[f.name] = f"{f.label}请填写 1 到 30 之间的整数"
            else:
                body[f.name] = int(raw)
        elif f.kind == "date":
            try:
                if not DATE.match(raw):
                    raise ValueError
                body[f.name] = date.fromisoformat(raw).isoformat()
            except ValueError:
                errors[f.name] = f"{f.label}请按 年-月-日 填写，例如 2026-12-08"
        elif f.kind == "bool":
            body[f.name] = raw in ("yes", "true", "1", "on")
        elif f.choices and raw not in f.choices:
            errors[f.name] = f"请从列表中选择{f.label}"
        elif len(raw) < f.min_len:
            errors[f.name] = f"{f.label}至少要写 {f.min_len} 个字"
        elif len(raw) > f.max_len:
            errors[f.name] = f"{f.label}不能超过 {f.max_len} 个字，现在是 {len(raw)} 个字"
        else:
            body[f.name] = raw
    if "reached" in typed and not typed["reached"]:
        errors["reached"] = "请选择是否联系上群众"
    elif "reached" in typed and body.get("rating") and not body.get("reached"):
        errors["rating"] = "没有联系上群众时，不能替群众评价"
    return body, errors, typed


# --------------------------------------------------------------------------------------------------
# Sign-in, sign-out, password
# --------------------------------------------------------------------------------------------------


@router.get("/staff/login")
async def login_form(request: Request, next: str | None = None) -> Response:
    session = session_of(request)
    if session.signed_in:
        return redirect(safe_next_path(next, home_for(session)))
    providers = await _providers(request)
    return render(request, "staff/login.html", title="工作人员登录", next_path=safe_next_path(next, ""),
                  providers=providers)


async def _providers(request: Request) -> dict[str, Any]:
    try:
        return await portal(request).intake.providers()
    except ApiError:
        return {"password": True, "oidc": {"enabled": False}}


@router.post("/staff/login")
async def login(request: Request) -> Response:
    form = await read_form(request)
    username = str(form.get("username") or "").strip()
    password = str(form.get("password") or "")
    next_path = safe_next_path(str(form.get("next") or ""), "")
    errors = {}
    if not username:
        errors["username"] = "请输入用户名"
    if not password:
        errors["password"] = "请输入密码"
    if not errors:
        try:
            answer = await portal(request).intake.login(username, password, forwarded_for(request))
        except ApiError as exc:
            metrics.SIGN_INS.labels(exc.code if exc.status < 500 else "unavailable").inc()
            if exc.status == 401:
                errors["password"] = "用户名或密码不正确"
            elif exc.status in (423, 429):
                wait = f"，请 {exc.retry_after} 秒后再试" if exc.retry_after else ""
                errors["_"] = domain.error_words(exc.code, exc.status) + wait
            else:
                errors["_"] = domain.error_words(exc.code, exc.status)
            status = exc.status if 400 <= exc.status < 500 else 503
            return render(request, "staff/login.html", status, title="工作人员登录", next_path=next_path,
                          values={"username": username}, errors=errors, providers=await _providers(request))
        person = answer["person"]
        session = session_of(request)
        session.sign_in(answer["token"], _person_summary(person), answer.get("expires_at"))
        metrics.SIGN_INS.labels("ok").inc()
        if person.get("must_change_password"):
            return redirect("/staff/password?next=" + (next_path or home_for(session)))
        return redirect(next_path or home_for(session))
    metrics.SIGN_INS.labels("incomplete").inc()
    return render(request, "staff/login.html", 422, title="工作人员登录", next_path=next_path,
                  values={"username": username}, errors=errors, providers=await _providers(request))


def _person_summary(person: dict[str, Any]) -> dict[str, Any]:
    unit = person.get("unit") or None
    return {"id": person.get("id"), "display_name": person.get("display_name") or person.get("username"),
            "roles": list(person.get("roles") or []),
            "unit": {"id": unit.get("id"), "name": unit.get("name")} if unit else None}


@router.get("/staff/oidc")
async def oidc_start(request: Request) -> Response:
    redirect_uri = str(request.url_for("oidc_callback"))
    answer = await portal(request).intake.oidc_start(redirect_uri)
    return redirect(answer["authorization_url"])


@router.get("/staff/oidc/callback", name="oidc_callback")
async def oidc_callback(request: Request, code: str = "", state: str = "") -> Response:
    try:
        answer = await portal(request).intake.oidc_callback(code, state, str(request.url_for("oidc_callback")))
    except ApiError as exc:
        metrics.SIGN_INS.labels("oidc_" + exc.code).inc()
        return render(request, "staff/login.html", exc.status if exc.status < 500 else 503, title="工作人员登录",
                      errors={"_": "统一身份认证登录没有成功，请重试或使用用户名和密码登录"},
                      providers=await _providers(request), next_path="")
    session_of(request).sign_in(answer["token"], _person_summary(answer["person"]), answer.get("expires_at"))
    metrics.SIGN_INS.labels("ok").inc()
    return redirect(home_for(session_of(request)))


@router.post("/staff/logout")
async def logout(request: Request) -> Response:
    await read_form(request)
    session = session_of(request)
    if session.token:
        try:
            await portal(request).intake.logout(session.token)
        except ApiError:
            pass  # the token may have ended already: the portal forgets it either way
    session.sign_out()
    return redirect("/staff/login?out=1")


@router.get("/staff/password")
async def password_form(request: Request, next: str | None = None) -> Response:
    require(request, CASE_ROLES | ADMIN_ROLES)
    return render(request, "staff/password.html", title="修改密码", next_path=safe_next_path(next, ""))


@router.post("/staff/password")
async def password_change(request: Request) -> Response:
    session = require(request, CASE_ROLES | ADMIN_ROLES)
    form = await read_form(request)
    current, new, again = (str(form.get(k) or "") for k in ("current_password", "new_password", "new_password_again"))
    next_path = safe_next_path(str(form.get("next") or ""), "")
    errors = {}
    if not current:
        errors["current_password"] = "请输入现在的密码"
    if len(new) < 10:
        errors["new_password"] = "新密码至少 10 位，并包含字母和数字"
    elif new != again:
        errors["new_password_again"] = "两次输入的新密码不一致"
    if not errors:
        try:
            await call(request, portal(request).intake.change_password(session.token or "", current, new))
        except ApiError as exc:
            if exc.status == 401 or exc.field == "current_password":
                errors["current_password"] = "现在的密码不正确"
            else:
                errors["new_password" if exc.field == "new_password" else "_"] = domain.error_words(exc.code,
                                                                                                     exc.status)
    if errors:
        return render(request, "staff/password.html", 422, title="修改密码", errors=errors, next_path=next_path)
    return redirect((next_path or home_for(session)) + "?done=password")


# --------------------------------------------------------------------------------------------------
# The inbox
# --------------------------------------------------------------------------------------------------


def list_filters(query: Any) -> tuple[dict[str, Any], dict[str, str]]:
    """The inbox's filters from the query string, checked (dates as YYYY-MM-DD)."""
    values = {k: (query.get(k) or "").strip()[:100] for k in ("bucket", "q", "since", "until", "page")}
    errors = {}
    if values["bucket"] and values["bucket"] not in dict(domain.BUCKETS):
        values["bucket"] = ""
    for key, label in (("since", "开始日期"), ("until", "结束日期")):
        if values[key]:
            try:
                date.fromisoformat(values[key])
            except ValueError:
                errors[key] = f"{label}请按 年-月-日 填写，例如 2026-12-01"
                values[key] = ""
    if values["since"] and values["until"] and values["since"] > values["until"]:
        errors["until"] = "结束日期不能早于开始日期"
    page = values.pop("page")
    values["page"] = int(page) if page.isdigit() and 0 < int(page) <= 100000 else 1
    return values, errors


@router.get("/staff")
async def inbox(request: Request) -> Response:
    session = require(request, CASE_ROLES | ADMIN_ROLES)
    if not session.roles & STAFF_ROLES:
        return redirect(home_for(session))
    p = portal(request)
    token = session.token or ""
    filters, errors = list_filters(request.query_params)
    page_size = p.settings.page_size
    cases, counts, notices = await call(request, asyncio.gather(
        p.intake.cases(token, bucket=filters["bucket"], q=filters["q"], since=filters["since"],
                       until=filters["until"], page=filters["page"], page_size=page_size),
        optional(p.intake.inbox_counts(token), {}), optional(p.intake.notices(token), {"items": []})))
    keep = "&".join(f"{k}={v}" for k, v in filters.items() if v and k != "page")
    return render(request, "staff/inbox.html", 422 if errors else 200, title="待办诉求", cases=cases,
                  counts=counts, notices=notices.get("items", []), values=filters, errors=errors, keep=keep,
                  done=DONE_WORDS.get(request.query_params.get("done") or ""), page_size=page_size)


# --------------------------------------------------------------------------------------------------
# The case page and its actions
# --------------------------------------------------------------------------------------------------


async def case_page(request: Request, case_id: str, status: int = 200, **context: Any) -> Response:
    session = require(request, CASE_ROLES)
    p = portal(request)
    token = session.token or ""
    case = await call(request, p.intake.case(token, case_id))
    allowed = list(case.get("allowed_actions") or [])
    templates: list[dict[str, Any]] = []
    if "reply" in allowed:
        unit_id = (case.get("department") or {}).get("id") if session.roles & OFFICE_ROLES else None
        templates = (await call(request, optional(p.intake.reply_templates(token, unit_id), {}))).get("items", [])
    reference = await p.reference.get() if {"reassign"} & set(allowed) else {}
    chosen = request.query_params.get("template")
    values = context.pop("values", {}) or {}
    template = next((t for t in templates if t.get("id") == chosen), None)
    if template and "reply" not in values:
        values["reply"] = {"text": template.get("text", ""), "template_id": template["id"]}
    return render(request, "staff/case.html", status, title=f"诉求 {case.get('tracking_number', case_id)}",
                  case=case, allowed=allowed, templates=templates, reference=reference, values=values,
                  units_by_category=_units_by_category(reference), back=home_for(session),
                  done=DONE_WORDS.get(request.query_params.get("done") or ""), **context)


def _units_by_category(reference: dict[str, Any]) -> dict[str, list[str]]:
    result: dict[str, list[str]] = {}
    for unit in reference.get("units", []) or []:
        for category in unit.get("categories") or []:
            result.setdefault(category, []).append(unit["id"])
    return result


@router.get("/staff/cases/{case_id}")
async def case_view(request: Request, case_id: str) -> Response:
    return await case_page(request, case_id)


@router.post("/staff/cases/{case_id}/notices/{notice_id}/answer")
async def answer_notice(request: Request, case_id: str, notice_id: str) -> Response:
    session = require(request, CASE_ROLES)
    form = await read_form(request)
    text = str(form.get("text") or "").strip()
    if len(text) < 2 or len(text) > 2000:
        errors = {"answer_notice": {"text": "请填写督办答复（2 到 2000 个字）"}}
        return await case_page(request, case_id, 422, errors=errors, values={"answer_notice": {"text": text}})
    try:
        await call(request, portal(request).intake.command(session.token or "", case_id,
                                                           f"notices/{notice_id}/answer", {"text": text}))
    except ApiError as exc:
        if exc.status >= 500 or exc.status == 404:
            raise
        return await case_page(request, case_id, exc.status, errors={"answer_notice": {
            "_": domain.error_words(exc.code, exc.status)}}, values={"answer_notice": {"text": text}})
    return redirect(f"/staff/cases/{case_id}?done=answer_notice")


@router.post("/staff/cases/{case_id}/{action}")
async def case_action(request: Request, case_id: str, action: str) -> Response:
    session = require(request, CASE_ROLES)
    spec = ACTIONS.get(action)
    if spec is None:
        return render(request, "error.html", 404, title="没有这项操作",
                      message="没有这项操作，请从诉求页面上的按钮进入。")
    form = await read_form(request)
    body, errors, typed = check_action(spec, form)
    if errors:
        return await case_page(request, case_id, 422, errors={action: errors}, values={action: typed})
    p = portal(request)
    try:
        answer = await call(request, p.intake.command(session.token or "", case_id, spec.path, body))
    except ApiError as exc:
        if exc.status >= 500 or exc.status == 404:
            raise
        known = {f.name for f in spec.fields}
        field = exc.field if exc.field in known else "_"
        return await case_page(request, case_id, exc.status, errors={action: {field: domain.error_words(
            exc.code, exc.status)}}, values={action: typed})
    if action == "reveal_contact":  # shown once, on this answer only; audited by intake
        return await case_page(request, case_id, contact=answer)
    done = "reply_pending" if action == "reply" and answer.get("pending_reply") else action
    if action in ("return", "reassign") and not session.roles & OFFICE_ROLES:
        return redirect(f"/staff?done={done}")
    return redirect(f"/staff/cases/{case_id}?done={done}")
