"""The supervision office's console: the triage queue with the router's reasons and next best units,
extension requests, unsatisfied ratings waiting for second handling, flagged cases, the overdue board by
unit and county, 督办 notices, and bulk actions over the cases ticked in any of those lists."""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import Response

from services.portal import domain
from services.portal.web import OFFICE_ROLES, call, optional, portal, read_form, redirect, render, require

router = APIRouter()
# each queue of the console: (name, title, the GET /v1/cases filters)
QUEUES: dict[str, tuple[str, dict[str, Any]]] = {
    "triage": ("待人工分派", {"status": "triage"}),
    "extensions": ("延期申请待审批", {"pending_extension": "true"}),
    "unsatisfied": ("不满意待二次办理", {"rating": "unsatisfied", "status": "rated"}),
    "overdue": ("已超期", {"overdue": "true"}),
    "flagged": ("典型案例", {"flagged": "true"}),
    "all": ("全部诉求", {}),
}
BULK_ACTIONS = {
    "approve_extension": ("批准延期", False), "deny_extension": ("不批准延期", False),
    "reopen": ("转二次办理", True), "close": ("办结销号", True), "flag": ("列为典型案例", False),
}
MAX_BULK = 100  # intake's limit per bulk command


def _page(raw: str | None) -> int:
    return int(raw) if raw and raw.isdigit() and 0 < int(raw) <= 100000 else 1


@router.get("/supervisor")
async def console(request: Request) -> Response:
    session = require(request, OFFICE_ROLES)
    p = portal(request)
    view = request.query_params.get("view") or "triage"
    if view not in QUEUES:
        view = "triage"
    page = _page(request.query_params.get("page"))
    token = session.token or ""
    title, filters = QUEUES[view]
    q = (request.query_params.get("q") or "").strip()[:100]
    cases, counts = await call(request, asyncio.gather(
        p.intake.cases(token, **filters, q=q, page=page, page_size=p.settings.page_size),
        optional(p.intake.inbox_counts(token), {})))
    results = request.query_params.get("ok"), request.query_params.get("failed")
    return render(request, "supervisor/console.html", title=f"督办工作台：{title}", view=view, queues=QUEUES,
                  cases=cases, counts=counts, page=page, bulk_actions=BULK_ACTIONS, results=results,
                  page_size=p.settings.page_size, queue_title=title, values={"q": q})


@router.post("/supervisor/bulk")
async def bulk(request: Request) -> Response:
    session = require(request, OFFICE_ROLES)
    form = await read_form(request)
    view = str(form.get("view") or "triage")
    action = str(form.get("action") or "")
    reason = str(form.get("reason") or "").strip()
    raw_ids = form.get("case_ids") or []
    case_ids = [str(c) for c in (raw_ids if isinstance(raw_ids, list) else [raw_ids])]
    if len(case_ids) > MAX_BULK:
        errors_over = {"case_ids": f"一次最多处理 {MAX_BULK} 件，请分批勾选"}
    else:
        errors_over = {}
    errors = dict(errors_over)
    if action not in BULK_ACTIONS:
        errors["action"] = "请选择要批量进行的操作"
    elif BULK_ACTIONS[action][1] and len(reason) < 2:
        errors["reason"] = f"“{BULK_ACTIONS[action][0]}”需要填写理由"
    if not case_ids:
        errors["case_ids"] = "请至少勾选一件诉求"
    if errors:
        p = portal(request)
        title, filters = QUEUES.get(view, QUEUES["triage"])
        cases = await call(request, p.intake.cases(session.token or "", **filters, page=1,
                                                   page_size=p.settings.page_size))
        return render(request, "supervisor/console.html", 422, title=f"督办工作台：{title}", view=view,
                      queues=QUEUES, cases=cases, counts={}, page=1, bulk_actions=BULK_ACTIONS, errors=errors,
                      values={"action": action, "reason": reason, "case_ids": case_ids}, results=(None, None),
                      page_size=p.settings.page_size, queue_title=title)
    extra = {"reason": reason} if reason else {}
    answer = await call(request, portal(request).intake.bulk(session.token or "", action, case_ids, **extra))
    outcomes = answer.get("results", [])
    ok = sum(1 for r in outcomes if r.get("ok"))
    return redirect(f"/supervisor?view={view}&ok={ok}&failed={len(outcomes) - ok}")


@router.get("/supervisor/overdue")
async def overdue_board(request: Request) -> Response:
    session = require(request, OFFICE_ROLES)
    p = portal(request)
    reference, departments, counties, cases = await asyncio.gather(
        p.reference.get(), p.stats.departments(min_sample=1), p.stats.counties(),
        call(request, p.intake.cases(session.token or "", overdue="true", page=1, page_size=p.settings.page_size)))
    names = domain.names_by_id(reference.get("units"))
    units = [{**r, "name": r.get("name") or names.get(r["id"], r["id"])}
             for r in [*departments.get("ranking", []), *departments.get("below_min_sample", [])]
             if r.get("overdue_open")]
    units.sort(key=lambda r: -r["overdue_open"])
    county_rows = sorted((r for r in counties.get("items", []) if r.get("overdue_open")),
                         key=lambda r: -r["overdue_open"])
    return render(request, "supervisor/overdue.html", title="超期情况", units=units, county_rows=county_rows,
                  cases=cases)


@router.get("/supervisor/notices")
async def notices(request: Request) -> Response:
    session = require(request, OFFICE_ROLES)
    show_all = request.query_params.get("all") == "1"
    answer = await call(request, portal(request).intake.notices(session.token or "", open_only=not show_all))
    return render(request, "supervisor/notices.html", title="督办通知", notices=answer.get("items", []),
                  show_all=show_all)
