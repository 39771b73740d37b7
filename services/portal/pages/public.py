"""The public (no account): the board of published cases, the live dashboard with its map and trends, the
monthly bulletin as a printable A4 page and its Excel download (proxied from stats)."""

from __future__ import annotations

import asyncio
import re
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import Response

from services.portal import domain
from services.portal.client import ApiError
from services.portal.web import portal, render, session_of

router = APIRouter()
MONTH = re.compile(r"^\d{4}-(0[1-9]|1[0-2])$")
BOARD_FILTERS = ("q", "county", "category", "department_id", "status")
BOARD_STATUSES = ("assigned", "signed", "extended", "replied", "rated", "reopened", "closed")
# the map package's features (src/江西/赣州市.js), which the page's script registers as the map "赣州"
GEO_NAMES = ["章贡区", "南康区", "赣县区", "信丰县", "大余县", "上犹县", "崇义县", "安远县", "龙南县", "定南县",
             "全南县", "宁都县", "于都县", "兴国县", "会昌县", "寻乌县", "石城县", "瑞金市"]


def _page_number(raw: str | None) -> int:
    return int(raw) if raw and raw.isdigit() and 0 < int(raw) <= 100000 else 1


@router.get("/board")
async def board(request: Request) -> Response:
    p = portal(request)
    query = request.query_params
    filters = {k: (query.get(k) or "").strip()[:100] for k in BOARD_FILTERS}
    page = _page_number(query.get("page"))
    errors = {}
    if filters["status"] and filters["status"] not in BOARD_STATUSES:
        errors["status"] = "请从列表中选择办理状态"
        filters["status"] = ""
    reference = await p.reference.get()
    answer = await p.intake.public_cases(**filters, page=page, page_size=p.settings.page_size)
    items = answer.get("items", [])
    total = answer.get("total")
    has_next = (page * p.settings.page_size < total) if isinstance(total, int) else len(items) >= p.settings.page_size
    keep = "&".join(f"{k}={v}" for k, v in filters.items() if v)
    return render(request, "public/board.html", 422 if errors else 200, title="留言公开栏", items=items,
                  values=filters, errors=errors, page=page, has_next=has_next, total=total, keep=keep,
                  counties=list(domain.counties_of(reference)), categories=reference.get("categories", []),
                  units=reference.get("units", []), statuses=BOARD_STATUSES)


@router.get("/photos/{attachment_id}")
async def photo(request: Request, attachment_id: str) -> Response:
    """A post's photo, from intake, which serves it only once its case is public (or to staff, for theirs)."""
    if not re.match(r"^[A-Za-z0-9_.:-]{1,64}$", attachment_id):
        return render(request, "error.html", 404, title="没有找到", message="没有这张照片。")
    session = session_of(request)
    try:
        answer = await portal(request).intake.attachment(attachment_id, session.token if session.signed_in else None)
    except ApiError as exc:
        if exc.status < 500:
            return render(request, "error.html", 404, title="没有找到", message="这张照片不存在或还没有公开。")
        raise
    media_type = answer.headers.get("content-type", "application/octet-stream")
    if domain.sniff_image(answer.content[:16]) is None:
        return render(request, "error.html", 404, title="没有找到", message="这张照片不存在或还没有公开。")
    return Response(answer.content, media_type=media_type,
                    headers={"cache-control": "private, max-age=300", "content-disposition": "inline"})


def _named(rows: list[dict[str, Any]], names: dict[str, str]) -> list[dict[str, Any]]:
    return [{**row, "name": row.get("name") or names.get(row["id"], row["id"])} for row in rows]


def _period(request: Request) -> tuple[dict[str, str], str | None, str | None]:
    month = (request.query_params.get("month") or "").strip()
    if not month:
        return {}, None, None
    if not MONTH.match(month):
        return {}, None, "请按“年-月”选择月份，例如 2026-11"
    return {"month": month}, month, None


@router.get("/dashboard")
async def dashboard(request: Request) -> Response:
    p = portal(request)
    period, month, error = _period(request)
    reference, overview, departments, counties, categories, series = await asyncio.gather(
        p.reference.get(), p.stats.overview(**period), p.stats.departments(**period), p.stats.counties(**period),
        p.stats.categories(**period), p.stats.timeseries("monthly"))
    unit_names = domain.names_by_id(reference.get("units"))
    category_names = domain.names_by_id(reference.get("categories"), "code")
    ranking = _named(departments.get("ranking", []), unit_names)
    small = _named(departments.get("below_min_sample", []), unit_names)
    county_rows = _named(counties.get("items", []), {})
    category_rows = _named(categories.get("items", []), category_names)
    lists = departments.get("praise") or departments.get("lists") or {}
    praise = _named(lists.get("praise", []) if isinstance(lists, dict) else [], unit_names) or ranking[:5]
    criticise = _named(lists.get("criticise", []) if isinstance(lists, dict) else [], unit_names) or [
        r for r in sorted(ranking, key=lambda r: r["satisfaction_rate"].get("wilson_high") or 0)[:5]
        if r not in ranking[:5]]
    geo = domain.map_names(GEO_NAMES, reference) if reference.get("counties") else {}
    geo_of = {row["name"]: geo.get(row["name"]) or next((g for g in GEO_NAMES if g[:-1] == row["name"][:-1]), None)
              for row in county_rows}
    chart = {
        "counties": [{"name": r["name"], "map_name": geo_of.get(r["name"]), "received": r["received"],
                      "satisfaction": _value(r["satisfaction_rate"]), "reply": _value(r["reply_rate"]),
                      "on_time": _value(r["on_time_rate"])} for r in county_rows],
        "trend": [{"period": pt["period"], "received": pt["received"], "reply": _value(pt["reply_rate"]),
                   "on_time": _value(pt["on_time_rate"]), "satisfaction": _value(pt["satisfaction_rate"])}
                  for pt in series.get("points", [])],
    }
    today = domain.today_shanghai()
    return render(request, "public/dashboard.html", 422 if error else 200, title="数据公开", overview=overview,
                  ranking=ranking, small=small, county_rows=county_rows, category_rows=category_rows, praise=praise,
                  criticise=criticise, chart=chart, month=month, errors={"month": error} if error else {},
                  min_sample=departments.get("min_sample"), last_month=domain.previous_month(today),
                  this_month=domain.current_month(today))


def _value(ratio: dict[str, Any] | None) -> float | None:
    return None if not ratio or ratio.get("value") is None else round(ratio["value"] * 100, 2)


def _bulletin_month(request: Request) -> tuple[str, str | None]:
    month = (request.query_params.get("month") or "").strip()
    if not month:
        return domain.previous_month(domain.today_shanghai()), None
    if not MONTH.match(month):
        return month, "请按“年-月”选择月份，例如 2026-11"
    return month, None


@router.get("/dashboard/bulletin")
async def bulletin(request: Request) -> Response:
    p = portal(request)
    month, error = _bulletin_month(request)
    if error:
        return render(request, "error.html", 422, title="月份不正确", message=error, back="/dashboard")
    reference, report = await asyncio.gather(
        p.reference.get(), p.bulletins.get(month, lambda: p.stats.monthly_report(month)))
    unit_names = domain.names_by_id(reference.get("units"))
    category_names = domain.names_by_id(reference.get("categories"), "code")
    ranking = _named(report.get("ranking", []), unit_names)
    small = _named(report.get("below_min_sample", []), unit_names)
    flagged = [{**c, "unit_name": c.get("unit_name") or unit_names.get(c.get("unit") or "", c.get("unit") or "—"),
                "category_name": c.get("category_name") or category_names.get(c.get("category") or "", "—")}
               for c in report.get("overdue_and_escalated", [])]
    supervision = report.get("supervision") or {}
    notices = _named(supervision.get("by_unit") or [], unit_names)
    today = domain.today_shanghai()
    return render(request, "public/bulletin.html", title=f"{domain.month_words(month)}网络问政办理情况通报",
                  report=report, month=month, ranking=ranking, small=small, praise=_named(report.get("praise", []),
                  unit_names), criticise=_named(report.get("criticise", []), unit_names), flagged=flagged,
                  notices=notices, supervision=supervision, typical=report.get("typical_cases") or [],
                  office=report.get("issuer") or p.settings.issuing_office, issued=domain.official_date(today),
                  print_page=True)


@router.get("/dashboard/bulletin.xlsx")
async def bulletin_xlsx(request: Request) -> Response:
    month, error = _bulletin_month(request)
    if error:
        return render(request, "error.html", 422, title="月份不正确", message=error, back="/dashboard")
    return await _download(request, "/v1/reports/monthly", {"month": month, "format": "xlsx"},
                           f"wenzheng-bulletin-{month}.xlsx")


@router.get("/dashboard/ledger.xlsx")
async def ledger_xlsx(request: Request) -> Response:
    return await _download(request, "/v1/ledger", {"format": "xlsx"}, "wenzheng-ledger.xlsx")


async def _download(request: Request, path: str, params: dict[str, str], default_name: str) -> Response:
    try:
        file = await portal(request).stats.download(path, params)
    except ApiError as exc:
        if exc.status in (404, 422):
            return render(request, "error.html", 404, title="暂不能下载",
                          message="这份 Excel 文件暂时不能下载，请稍后再试，或先打印网页版通报。", back="/dashboard")
        raise
    return Response(file.content, media_type=file.media_type,
                    headers={"content-disposition": f'attachment; filename="{file.filename or default_name}"'})
