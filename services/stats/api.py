"""HTTP API: public rates, rankings, the monthly bulletin (JSON, CSV, HTML) and the ledger browser.

No personal data is ever stored in the ledger, so nothing here can leak it: cases are named by tracking number.
"""

from __future__ import annotations

import asyncio
import contextlib
import csv
import html
import io
import re
from collections.abc import AsyncIterator
from datetime import date, timedelta
from typing import Annotated, Any, Literal

from fastapi import FastAPI, Query, Request
from fastapi.responses import HTMLResponse, JSONResponse, PlainTextResponse, Response
from prometheus_client import REGISTRY, CollectorRegistry

from services.common.clock import Clock, clock_from_environment
from services.common.config import TopicSettings, common_settings, topics
from services.common.errors import ApiError, BodyLimits, document_errors, install_error_handlers
from services.common.kafka import EventPublisher, new_producer
from services.common.logging import get_logger
from services.common.metrics import METRICS_CONTENT_TYPE, render_metrics
from services.common.mongo import new_client, ping
from services.common.workdays import local_date
from services.stats.config import StatsSettings
from services.stats.consumer import StatsConsumer
from services.stats.domain import (
    RANKABLE,
    Summary,
    month_bounds,
    period_keys,
    praise_and_criticism,
    rank,
)
from services.stats.handlers import Projector
from services.stats.metrics import StatsMetrics
from services.stats.store import StatsStore

log = get_logger(__name__)
MONTH = re.compile(r"^\d{4}-(0[1-9]|1[0-2])$")


MONTH_PATTERN = r"^(19|20)\d{2}-(0[1-9]|1[0-2])$"
DATE_PATTERN = r"^(19|20)\d{2}-(0[1-9]|1[0-2])-(0[1-9]|[12]\d|3[01])$"
MonthQuery = Annotated[str | None, Query(pattern=MONTH_PATTERN, description="YYYY-MM")]
_DATE_FORMAT = {"format": "date"}
FromQuery = Annotated[str | None, Query(alias="from", pattern=DATE_PATTERN, description="YYYY-MM-DD",
                                        json_schema_extra=_DATE_FORMAT)]
ToQuery = Annotated[str | None, Query(pattern=DATE_PATTERN, description="YYYY-MM-DD", json_schema_extra=_DATE_FORMAT)]
SortQuery = Annotated[Literal["reply_rate", "on_time_rate", "satisfaction_rate"], Query()]
_NOT_FOUND: dict[int | str, dict[str, Any]] = {404: {"description": "no such unit in the period"}}
_REPORT: dict[int | str, dict[str, Any]] = {200: {"description": "the bulletin", "content": {
    "application/json": {"schema": {"type": "object"}}, "text/csv": {"schema": {"type": "string"}},
    "text/html": {"schema": {"type": "string"}}}}}


def _parse_date(value: str, field: str) -> date:
    try:
        return date.fromisoformat(value)
    except ValueError as exc:
        raise ApiError(422, "invalid_date", "expected a date YYYY-MM-DD", field) from exc


class Service:
    """What the routes need, built in the lifespan."""

    def __init__(self, settings: StatsSettings, store: StatsStore, projector: Projector, clock: Clock,
                 metrics: StatsMetrics) -> None:
        self.settings = settings
        self.store = store
        self.projector = projector
        self.view = projector.view
        self.clock = clock
        self.metrics = metrics
        self.consumer: StatsConsumer | None = None
        self.mongo_client: Any = None

    def today(self) -> date:
        return local_date(self.clock.now())

    async def period(self, month: str | None, start: str | None, end: str | None) -> tuple[list[str], list[str], dict]:
        if month is not None:
            if not MONTH.match(month):
                raise ApiError(422, "invalid_month", "expected YYYY-MM", "month")
            first, last = month_bounds(month)
            return [month], [], {"from": first.isoformat(), "to": last.isoformat(), "month": month}
        if start is None and end is None:
            return self.view.months(), [], {"from": None, "to": None, "all_time": True}
        periods = self.view.months()
        first = _parse_date(start, "from") if start else (
            month_bounds(periods[0])[0] if periods else self.today())
        last = _parse_date(end, "to") if end else self.today()
        asked = {"from": first.isoformat(), "to": last.isoformat()}
        # nothing was counted before the first month with data or after today: the same rates, fewer keys
        if periods:
            first = max(first, month_bounds(periods[0])[0])
        last = min(last, self.today())
        if last < first:  # an empty period (or 'to' before 'from'): no cases, every rate empty
            return [], [], {**asked, "empty": True}
        months, days = period_keys(first, last)
        return months, days, asked


def create_app(settings: StatsSettings | None = None, *, names: TopicSettings | None = None,
               clock: Clock | None = None, registry: CollectorRegistry = REGISTRY) -> FastAPI:
    settings = settings or StatsSettings()
    names = names or topics()
    clock = clock or clock_from_environment()
    metrics = StatsMetrics(registry, settings.metrics_max_units)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        common = common_settings()
        client = new_client(common.mongo_url)
        store = StatsStore(client[settings.database])
        await store.ensure_indexes()
        projector = Projector(store, settings.instance_id, flush_seconds=settings.flush_seconds,
                              fold_seconds=settings.fold_seconds)
        svc = Service(settings, store, projector, clock, metrics)
        svc.mongo_client = client
        app.state.svc = svc
        if await store.mark_running(settings.instance_id):
            log.warning("unclean_shutdown_detected", instance=settings.instance_id)
            report = await projector.reconcile(fix=True)
            log.info("startup_reconcile", differences=report["differences"], cases=report["cases"])
        else:
            await projector.start()
        stop = asyncio.Event()
        tasks: list[asyncio.Task] = [asyncio.create_task(_refresh_gauges(svc, stop)),
                                     asyncio.create_task(svc.view.follow(stop, settings.view_poll_seconds))]
        producer = None
        if settings.consumer_enabled:
            producer = new_producer(common.kafka_bootstrap)
            await producer.start()
            publisher = EventPublisher(producer, source=settings.source, names=names)
            svc.consumer = StatsConsumer(projector, names, publisher, metrics, group_id=settings.consumer_group,
                                         bootstrap=common.kafka_bootstrap, max_batch=settings.max_batch)
            tasks.append(asyncio.create_task(svc.consumer.run(stop)))
        try:
            yield
        finally:
            stop.set()
            for task in tasks:
                try:
                    await asyncio.wait_for(task, timeout=10)
                except (TimeoutError, asyncio.CancelledError, Exception):
                    task.cancel()
            if producer is not None:
                await producer.stop()
            await store.clear_running(settings.instance_id)
            await client.close()

    app = FastAPI(title="Wenzheng stats", version="1.0", lifespan=lifespan)
    install_error_handlers(app)
    app.add_middleware(BodyLimits)
    document_errors(app, text_paths={"/metrics": "text/plain"})

    def svc_of(request: Request) -> Service:
        return request.app.state.svc

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz")
    async def readyz(request: Request) -> JSONResponse:
        svc = svc_of(request)
        mongo_ok = await ping(svc.mongo_client)
        consuming = svc.consumer is None or svc.consumer.consuming
        ok = mongo_ok and consuming
        return JSONResponse({"status": "ready" if ok else "not_ready", "mongo": mongo_ok, "consuming": consuming},
                            status_code=200 if ok else 503)

    @app.get("/metrics")
    async def metrics_page() -> Response:
        return Response(render_metrics(registry), media_type=METRICS_CONTENT_TYPE)

    @app.get("/v1/stats/overview")
    async def overview(request: Request, month: MonthQuery = None, from_: FromQuery = None,
                       to: ToQuery = None) -> dict[str, Any]:
        svc = svc_of(request)
        months, days, period = await svc.period(month, from_, to)
        return {"period": period, **overall(svc, months, days)}

    def breakdown(svc: Service, dim: str, months: list[str], days: list[str]) -> list[dict[str, Any]]:
        today = svc.today()

        def compute() -> list[dict[str, Any]]:
            by_key = svc.view.summaries(dim, months, days)
            return [{"id": key, **summary.rates(today)} for key, summary in sorted(by_key.items())]

        # the rates of every key, reused until the rollups change (each row is copied: callers add a rank)
        rows = svc.view.cached(("breakdown", dim, tuple(months), tuple(days), today), compute)
        return [dict(row) for row in rows]

    def check_sort(sort: str) -> str:
        if sort not in RANKABLE:
            raise ApiError(422, "invalid_sort", f"sort must be one of {sorted(RANKABLE)}", "sort")
        return sort

    @app.get("/v1/stats/departments")
    async def departments(request: Request, month: MonthQuery = None, from_: FromQuery = None, to: ToQuery = None,
                          sort: SortQuery = "satisfaction_rate",
                          min_sample: int | None = Query(None, ge=1, le=1_000_000)) -> dict[str, Any]:
        svc = svc_of(request)
        check_sort(sort)
        months, days, period = await svc.period(month, from_, to)
        rows = breakdown(svc, "unit", months, days)
        minimum = min_sample or svc.settings.min_sample
        ranked, small = rank(rows, sort, minimum)
        return {"period": period, "sort": sort, "min_sample": minimum, "method": "wilson_lower_bound_95",
                "ranking": ranked, "below_min_sample": small}

    @app.get("/v1/stats/departments/{unit_id}", responses=_NOT_FOUND)
    async def department(request: Request, unit_id: str, month: MonthQuery = None, from_: FromQuery = None,
                         to: ToQuery = None) -> dict[str, Any]:
        svc = svc_of(request)
        months, days, period = await svc.period(month, from_, to)
        row = next((r for r in breakdown(svc, "unit", months, days) if r["id"] == unit_id), None)
        if row is None:
            raise ApiError(404, "not_found", "no cases for this unit in the period", "unit_id")
        return {"period": period, **row}

    @app.get("/v1/stats/categories")
    async def categories(request: Request, month: MonthQuery = None, from_: FromQuery = None,
                         to: ToQuery = None) -> dict[str, Any]:
        svc = svc_of(request)
        months, days, period = await svc.period(month, from_, to)
        return {"period": period, "items": breakdown(svc, "category", months, days)}

    @app.get("/v1/stats/counties")
    async def counties(request: Request, month: MonthQuery = None, from_: FromQuery = None,
                       to: ToQuery = None) -> dict[str, Any]:
        svc = svc_of(request)
        months, days, period = await svc.period(month, from_, to)
        return {"period": period, "items": breakdown(svc, "county", months, days)}

    @app.get("/v1/stats/timeseries")
    async def timeseries(request: Request, granularity: Annotated[Literal["daily", "monthly"], Query()] = "monthly",
                         from_: FromQuery = None, to: ToQuery = None) -> dict[str, Any]:
        svc = svc_of(request)
        if granularity not in ("daily", "monthly"):
            raise ApiError(422, "invalid_granularity", "granularity must be daily or monthly", "granularity")
        today = svc.today()
        if granularity == "monthly":
            months, _days, period = await svc.period(None, from_, to)
            points = [{"period": m, **rollup.rates(today)} for m in sorted(months)
                      if (rollup := svc.view.rollup("all", "all", m))]
            return {"granularity": granularity, "period": period, "points": points}
        last = _parse_date(to, "to") if to else today
        first = _parse_date(from_, "from") if from_ else last - timedelta(days=30)
        first = max(first, last - timedelta(days=366))  # a daily series covers at most 366 days up to 'to'
        days = [(first + timedelta(days=i)).isoformat() for i in range(max(0, (last - first).days + 1))]
        points = [{"period": day, **svc.view.rollup("all", "all", day).rates(today)} for day in days]
        return {"granularity": granularity, "period": {"from": first.isoformat(), "to": last.isoformat()},
                "points": points}

    @app.get("/v1/reports/monthly", responses=_REPORT)
    async def monthly_report(request: Request, month: Annotated[str, Query(pattern=MONTH_PATTERN)],
                             format: Annotated[Literal["json", "csv", "html"] | None, Query()] = None,
                             sort: SortQuery = "satisfaction_rate") -> Response:
        svc = svc_of(request)
        check_sort(sort)
        months, days, period = await svc.period(month, None, None)
        wanted = format or _format_from_accept(request.headers.get("accept", ""))
        if wanted not in ("json", "csv", "html"):
            raise ApiError(422, "invalid_format", "format must be json, csv or html", "format")
        report = await build_monthly_report(svc, month, months, days, period, sort)
        if wanted == "csv":
            return PlainTextResponse(_report_csv(report), media_type="text/csv; charset=utf-8",
                                     headers={"content-disposition": f'attachment; filename="stats-{month}.csv"'})
        if wanted == "html":
            return HTMLResponse(_report_html(report))
        return JSONResponse(report)

    @app.get("/v1/cases")
    async def cases(request: Request, unit: str | None = None, category: str | None = None,
                    county: str | None = None, status: str | None = None, overdue: bool | None = None,
                    page: int = Query(1, ge=1, le=100_000), page_size: int = Query(50, ge=1, le=200)
                    ) -> dict[str, Any]:
        svc = svc_of(request)
        flt: dict[str, Any] = {}
        for name, value in (("unit", unit), ("category", category), ("county", county), ("status", status)):
            if value is not None:
                flt[f"s.{name}"] = value
        if overdue is not None:
            now = svc.clock.now().isoformat()
            late = {"s.awaiting_reply": True, "s.closed_at": None, "s.deadline": {"$lt": now}}
            flt.update(late if overdue else {"$or": [{"s.awaiting_reply": False}, {"s.closed_at": {"$ne": None}},
                                                      {"s.deadline": {"$gte": now}}, {"s.deadline": None}]})
        size = min(page_size, svc.settings.page_size_max)
        docs = await svc.store.browse(flt, (page - 1) * size, size)
        return {"page": page, "page_size": size, "items": [_public_case(d) for d in docs]}

    return app


def _public_case(doc: dict[str, Any]) -> dict[str, Any]:
    s = doc.get("s") or {}
    keep = ("tracking_number", "status", "unit", "category", "county", "received_at", "deadline", "signed_at",
            "first_reply_at", "on_time", "rating", "second_handling", "returns", "closed_at", "flagged",
            "overdue_alerted", "escalated", "awaiting_reply")
    out = {k: s.get(k) for k in keep}
    out["case_id"] = doc["_id"]
    out["reply_working_hours"] = None if s.get("reply_tenths") is None else s["reply_tenths"] / 10
    return out


def _format_from_accept(accept: str) -> str:
    if "text/csv" in accept:
        return "csv"
    if "text/html" in accept:
        return "html"
    return "json"


def overall(svc: Service, months: list[str], days: list[str]) -> dict[str, Any]:
    """The rates of every case in the period (cached until the rollups change)."""
    today = svc.today()

    def compute() -> dict[str, Any]:
        return svc.view.summaries("all", months, days).get("all", Summary()).rates(today)

    return svc.view.cached(("overall", tuple(months), tuple(days), today), compute)


async def build_monthly_report(svc: Service, month: str, months: list[str], days: list[str], period: dict,
                               sort: str) -> dict[str, Any]:
    today = svc.today()
    totals = overall(svc, months, days)
    rows = [{"id": key, **s.rates(today)} for key, s in sorted(svc.view.summaries("unit", months, days).items())]
    ranked, small = rank(rows, sort, svc.settings.min_sample)
    lists = praise_and_criticism(ranked, sort, svc.settings.list_size)
    first, last = month_bounds(month)
    flagged_docs = await svc.store.browse(
        {"s.received_day": {"$gte": first.isoformat(), "$lte": last.isoformat()},
         "$or": [{"s.overdue_alerted": True}, {"s.escalated": True}]}, 0, 500)
    named = [{"tracking_number": d["s"].get("tracking_number"), "unit": d["s"].get("unit"),
              "category": d["s"].get("category"), "escalated": d["s"].get("escalated", False),
              "replied": d["s"].get("first_reply_at") is not None} for d in flagged_docs]
    return {
        "month": month, "period": period, "generated_for": today.isoformat(), "sort": sort,
        "min_sample": svc.settings.min_sample, "totals": totals, "ranking": ranked, "below_min_sample": small,
        "praise": [_brief(r, sort) for r in lists["praise"]],
        "criticise": [_brief(r, sort) for r in lists["criticise"]],
        "overdue_and_escalated": named,
        "second_handling": {"cases": totals["second_handling"], "rated": totals["second_handling_rated"],
                            "satisfied": totals["second_handling_satisfied"]},
    }


def _brief(row: dict[str, Any], sort: str) -> dict[str, Any]:
    return {"id": row["id"], "rank": row.get("rank"), sort: row[sort], "received": row["received"]}


def _report_csv(report: dict[str, Any]) -> str:
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(["rank", "unit", "received", "replied", "reply_rate", "on_time_rate", "rated", "satisfied",
                     "satisfaction_rate", "satisfaction_wilson_low", "overdue_open", "median_reply_working_hours",
                     "returns", "second_handling"])
    for row in [*report["ranking"], *report["below_min_sample"]]:
        writer.writerow([row.get("rank", ""), row["id"], row["received"], row["replied"],
                         row["reply_rate"]["percent"] or "", row["on_time_rate"]["percent"] or "", row["rated"],
                         row["satisfied"], row["satisfaction_rate"]["percent"] or "",
                         row["satisfaction_rate"]["wilson_low"] or "", row["overdue_open"],
                         row["median_reply_working_hours"] if row["median_reply_working_hours"] is not None else "",
                         row["returns"], row["second_handling"]])
    t = report["totals"]
    writer.writerow(["", "TOTAL", t["received"], t["replied"], t["reply_rate"]["percent"] or "",
                     t["on_time_rate"]["percent"] or "", t["rated"], t["satisfied"],
                     t["satisfaction_rate"]["percent"] or "", "", t["overdue_open"],
                     t["median_reply_working_hours"] if t["median_reply_working_hours"] is not None else "",
                     t["returns"], t["second_handling"]])
    return out.getvalue()


def _bars(rows: list[dict[str, Any]], sort: str) -> str:
    width, bar_h = 640, 18
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{bar_h * len(rows) + 10}" '
             f'role="img" aria-label="{html.escape(sort)}">']
    for i, row in enumerate(rows):
        ratio = row[sort]
        value = ratio["value"] or 0.0
        y = i * bar_h + 5
        parts.append(f'<text x="0" y="{y + 13}" font-size="12">{html.escape(row["id"])}</text>')
        parts.append(f'<rect x="170" y="{y}" width="{value * 380:.1f}" height="{bar_h - 4}" fill="#2b6cb0"/>')
        if ratio["wilson_low"] is not None:
            lo, hi = 170 + ratio["wilson_low"] * 380, 170 + ratio["wilson_high"] * 380
            parts.append(f'<line x1="{lo:.1f}" x2="{hi:.1f}" y1="{y + 7}" y2="{y + 7}" stroke="#000"/>')
        parts.append(f'<text x="560" y="{y + 13}" font-size="12">{ratio["percent"] or "–"} (n={ratio["denominator"]})'
                     "</text>")
    parts.append("</svg>")
    return "".join(parts)


def _report_html(report: dict[str, Any]) -> str:
    t, sort = report["totals"], report["sort"]
    esc = html.escape

    def items(rows: list[dict[str, Any]]) -> str:
        return "".join(f"<li>{esc(r['id'])}: {esc(r[sort]['percent'] or '–')} (n={r[sort]['denominator']})</li>"
                       for r in rows) or "<li>—</li>"

    named = "".join(f"<tr><td>{esc(c['tracking_number'] or '')}</td><td>{esc(c['unit'] or '')}</td>"
                    f"<td>{'是' if c['escalated'] else '否'}</td><td>{'是' if c['replied'] else '否'}</td></tr>"
                    for c in report["overdue_and_escalated"])
    return f"""<!doctype html><html lang="zh"><head><meta charset="utf-8">
<title>问政月报 {esc(report['month'])}</title>
<style>body{{font-family:sans-serif;max-width:900px;margin:2em auto}}table{{border-collapse:collapse}}
td,th{{border:1px solid #ccc;padding:2px 6px}}@media print{{a{{display:none}}}}</style></head><body>
<h1>问政月报 {esc(report['month'])}</h1>
<p>收件 {t['received']}，答复 {t['replied']}，答复率 {esc(t['reply_rate']['percent'] or '–')}；
按期答复率 {esc(t['on_time_rate']['percent'] or '–')}；评价 {t['rated']}，满意 {t['satisfied']}，
满意率 {esc(t['satisfaction_rate']['percent'] or '–')}；逾期未答复 {t['overdue_open']}；
答复用时中位数 {t['median_reply_working_hours'] if t['median_reply_working_hours'] is not None else '–'} 工作小时；
退单 {t['returns']}；二次办理 {t['second_handling']}（评价 {report['second_handling']['rated']}，
满意 {report['second_handling']['satisfied']}）。</p>
<h2>单位排名（{esc(sort)}，按95% Wilson下限，最少样本 {report['min_sample']}）</h2>
{_bars(report['ranking'], sort)}
<h2>表扬</h2><ul>{items(report['praise'])}</ul>
<h2>批评</h2><ul>{items(report['criticise'])}</ul>
<h2>逾期与督办件</h2><table><tr><th>查询码</th><th>单位</th><th>督办</th><th>已答复</th></tr>{named}</table>
</body></html>"""


async def _refresh_gauges(svc: Service, stop: asyncio.Event, every: float = 15.0) -> None:
    while not stop.is_set():
        try:
            months = svc.view.months()
            everything = svc.view.summaries("all", months, []).get("all", Summary())
            svc.metrics.publish_rates(everything, svc.view.summaries("unit", months, []), svc.today())
            svc.metrics.ledger_size.set(await svc.store.ledger_size())
        except Exception as exc:
            log.warning("gauge_refresh_failed", error=str(exc)[:200])
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=every)
