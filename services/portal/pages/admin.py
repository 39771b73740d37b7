"""Admins: accounts and roles, the reference data as the router knows it (read-only), reply templates and
the reply-approval setting per unit."""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import Response

from services.portal import domain
from services.portal.client import ApiError
from services.portal.web import ADMIN_ROLES, call, portal, read_form, redirect, render, require

router = APIRouter()
ROLES = tuple(domain.ROLE_WORDS)
UNIT_ROLES = {"unit_staff", "unit_lead"}


def check_account(form: dict[str, Any], creating: bool) -> tuple[dict[str, Any], dict[str, str], dict[str, Any]]:
    raw_roles = form.get("roles") or []
    roles = [r for r in (raw_roles if isinstance(raw_roles, list) else [raw_roles]) if r in ROLES]
    typed = {k: str(form.get(k) or "").strip() for k in ("username", "display_name", "unit_id", "password",
                                                         "disabled")}
    typed["roles"] = roles
    errors = {}
    body: dict[str, Any] = {"display_name": typed["display_name"], "roles": roles,
                            "unit_id": typed["unit_id"] or None}
    if creating:
        if not typed["username"] or len(typed["username"]) > 64:
            errors["username"] = "请填写用户名（不超过 64 个字符）"
        body["username"] = typed["username"]
        if typed["password"]:
            if len(typed["password"]) < 10:
                errors["password"] = "初始密码至少 10 位，并包含字母和数字"
            body["password"] = typed["password"]
    else:
        body["disabled"] = typed["disabled"] == "yes"
    if not typed["display_name"]:
        errors["display_name"] = "请填写姓名（显示名）"
    if not roles:
        errors["roles"] = "请至少选择一个角色"
    if set(roles) & UNIT_ROLES and not typed["unit_id"]:
        errors["unit_id"] = "单位经办人和单位负责人必须选择所属单位"
    return body, errors, typed


@router.get("/admin")
async def accounts(request: Request) -> Response:
    session = require(request, ADMIN_ROLES)
    p = portal(request)
    page = request.query_params.get("page") or "1"
    answer, reference = await asyncio.gather(
        call(request, p.intake.accounts(session.token or "", page=page if page.isdigit() else "1")),
        p.reference.get())
    return render(request, "admin/accounts.html", title="账号和角色", accounts=answer.get("items", []),
                  units=reference.get("units", []), roles=ROLES, values={"roles": ["unit_staff"]},
                  done=request.query_params.get("done"))


@router.post("/admin/accounts")
async def create_account(request: Request) -> Response:
    session = require(request, ADMIN_ROLES)
    form = await read_form(request)
    body, errors, typed = check_account(form, creating=True)
    p = portal(request)
    if not errors:
        try:
            await call(request, p.intake.create_account(session.token or "", body))
            return redirect("/admin?done=created")
        except ApiError as exc:
            if exc.status >= 500:
                raise
            errors = {exc.field if exc.field in typed else "_": domain.error_words(exc.code, exc.status)}
            if exc.status == 409:
                errors = {"username": "这个用户名已经有人使用"}
    answer, reference = await asyncio.gather(call(request, p.intake.accounts(session.token or "")),
                                             p.reference.get())
    typed.pop("password", None)
    return render(request, "admin/accounts.html", 422, title="账号和角色", accounts=answer.get("items", []),
                  units=reference.get("units", []), roles=ROLES, values=typed, errors=errors)


async def _account_page(request: Request, person_id: str, status: int = 200, **context: Any) -> Response:
    session = require(request, ADMIN_ROLES)
    p = portal(request)
    answer, reference = await asyncio.gather(call(request, p.intake.accounts(session.token or "", id=person_id)),
                                             p.reference.get())
    person = next((a for a in answer.get("items", []) if a.get("id") == person_id), None)
    if person is None:
        return render(request, "error.html", 404, title="没有这个账号", message="没有找到这个账号。", back="/admin")
    values = context.pop("values", None) or {
        "display_name": person.get("display_name"), "roles": person.get("roles", []),
        "unit_id": (person.get("unit") or {}).get("id", ""), "disabled": "yes" if person.get("disabled") else "no"}
    return render(request, "admin/account.html", status, title=f"账号：{person.get('display_name')}", account=person,
                  units=reference.get("units", []), roles=ROLES, values=values, **context)


@router.get("/admin/accounts/{person_id}")
async def account(request: Request, person_id: str) -> Response:
    return await _account_page(request, person_id)


@router.post("/admin/accounts/{person_id}")
async def update_account(request: Request, person_id: str) -> Response:
    session = require(request, ADMIN_ROLES)
    form = await read_form(request)
    body, errors, typed = check_account(form, creating=False)
    if not errors:
        try:
            await call(request, portal(request).intake.update_account(session.token or "", person_id, body))
            return redirect(f"/admin/accounts/{person_id}?done=saved")
        except ApiError as exc:
            if exc.status >= 500:
                raise
            errors = {exc.field if exc.field in typed else "_": domain.error_words(exc.code, exc.status)}
    return await _account_page(request, person_id, 422, values=typed, errors=errors)


@router.post("/admin/accounts/{person_id}/reset-password")
async def reset_password(request: Request, person_id: str) -> Response:
    session = require(request, ADMIN_ROLES)
    await read_form(request)
    answer = await call(request, portal(request).intake.reset_password(session.token or "", person_id))
    return await _account_page(request, person_id, temporary_password=answer.get("temporary_password"))


@router.get("/admin/reference")
async def reference(request: Request) -> Response:
    require(request, ADMIN_ROLES)
    ref = await portal(request).reference.get()
    categories = domain.names_by_id(ref.get("categories"), "code")
    return render(request, "admin/reference.html", title="单位和类别", reference=ref, category_names=categories)


async def _templates_page(request: Request, status: int = 200, **context: Any) -> Response:
    session = require(request, ADMIN_ROLES)
    p = portal(request)
    reference = await p.reference.get()
    units = reference.get("units", [])
    unit_id = str(context.pop("unit_id", None) or request.query_params.get("unit_id") or "")
    templates: list[dict[str, Any]] = []
    settings: dict[str, Any] = {}
    if unit_id:
        answer, settings = await asyncio.gather(
            call(request, p.intake.reply_templates(session.token or "", unit_id)),
            call(request, p.intake.unit_settings(session.token or "", unit_id)))
        templates = answer.get("items", [])
    return render(request, "admin/templates.html", status, title="回复模板", units=units, unit_id=unit_id,
                  unit_name=domain.names_by_id(units).get(unit_id, unit_id), templates=templates,
                  unit_settings=settings, done=request.query_params.get("done"), **context)


@router.get("/admin/templates")
async def templates(request: Request) -> Response:
    return await _templates_page(request)


@router.post("/admin/templates")
async def create_template(request: Request) -> Response:
    session = require(request, ADMIN_ROLES)
    form = await read_form(request)
    typed = {k: str(form.get(k) or "").strip() for k in ("unit_id", "title", "text")}
    errors = {}
    if not typed["unit_id"]:
        errors["unit_id"] = "请选择单位"
    if not 1 <= len(typed["title"]) <= 100:
        errors["title"] = "请填写模板名称（不超过 100 个字）"
    if not 2 <= len(typed["text"]) <= 5000:
        errors["text"] = "请填写模板内容（2 到 5000 个字）"
    if not errors:
        try:
            await call(request, portal(request).intake.create_template(session.token or "", typed))
            return redirect(f"/admin/templates?unit_id={typed['unit_id']}&done=created")
        except ApiError as exc:
            if exc.status >= 500:
                raise
            errors = {exc.field if exc.field in typed else "_": domain.error_words(exc.code, exc.status)}
    return await _templates_page(request, 422, unit_id=typed["unit_id"], values=typed, errors=errors)


@router.post("/admin/templates/{template_id}/delete")
async def delete_template(request: Request, template_id: str) -> Response:
    session = require(request, ADMIN_ROLES)
    form = await read_form(request)
    await call(request, portal(request).intake.delete_template(session.token or "", template_id))
    return redirect(f"/admin/templates?unit_id={form.get('unit_id') or ''}&done=deleted")


@router.post("/admin/units/{unit_id}/settings")
async def unit_settings(request: Request, unit_id: str) -> Response:
    session = require(request, ADMIN_ROLES)
    form = await read_form(request)
    body = {"reply_approval_required": form.get("reply_approval_required") == "yes"}
    await call(request, portal(request).intake.put_unit_settings(session.token or "", unit_id, body))
    return redirect(f"/admin/templates?unit_id={unit_id}&done=settings")
