"""HTTP API: public rates, rankings, the monthly bulletin (JSON, CSV, HTML) and the ledger browser.

No personal data is ever stored in the ledger, so nothing here can leak it: cases are named by tracking number.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import AsyncIterator
from datetime import date, datetime, timedelta
from typing import Annotated, Any, Literal
from urllib.parse import quote

import pymongo
from fastapi import Depends, FastAPI, Query, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response
from prometheus_client import REGISTRY, CollectorRegistry
from pymongo.errors import PyMongoError

from services.common.clock import Clock, clock_from_environment
from services.common.config import TopicSettings, common_settings, topics
from services.common.errors import ApiError, BodyLimits, document_errors, error_response, install_error_handlers
from services.common.kafka import EventPublisher, new_producer
from services.common.logging import get_logger
from services.common.metrics import METRICS_CONTENT_TYPE, render_metrics
from services.common.mongo import new_client, ping
from services.common.people import chinese_date, people_date, people_month
from services.common.workdays import local_date
from services.stats import shapes
from services.stats.config import StatsSettings
from services.stats.consumer import StatsConsumer
from services.stats.domain import (
    RANKABLE,
    UNASSIGNED,
    Summary,
    month_bounds,
    period_keys,
    praise_and_criticism,
    rank,
)
from services.stats.handlers import Projector
from services.stats.metrics import StatsMetrics
from services.stats.naming import RATE_NAMES, key_name, named_row
from services.stats.reports import (
    XLSX_TYPE,
    bulletin_csv,
    bulletin_html,
    bulletin_xlsx,
    invalid_reason_name,
    ledger_csv,
    ledger_row,
    ledger_xlsx,
)
from services.stats.shapes import documented
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
        client = new_client(common.mongo_url, service="stats")
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
    app.add_exception_handler(PyMongoError, database_unavailable)
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

    @app.get("/v1/stats/overview", responses=documented(shapes.Overview))
    async def overview(request: Request, month: MonthQuery = None, from_: FromQuery = None,
                       to: ToQuery = None) -> dict[str, Any]:
        svc = svc_of(request)
        months, days, period = await svc.period(month, from_, to)
        rates = overall(svc, months, days)
        return {"period": period, **rates, "invalid_reasons": invalid_reasons(rates)}

    def breakdown(svc: Service, dim: str, months: list[str], days: list[str]) -> list[dict[str, Any]]:
        today = svc.today()

        def compute() -> list[dict[str, Any]]:
            by_key = svc.view.summaries(dim, months, days)
            return [named_row(dim, key, summary.rates(today)) for key, summary in sorted(by_key.items())]

        # the rates of every key, reused until the rollups change (each row is copied: callers add a rank)
        rows = svc.view.cached(("breakdown", dim, tuple(months), tuple(days), today), compute)
        return [dict(row) for row in rows]

    def check_sort(sort: str) -> str:
        if sort not in RANKABLE:
            raise ApiError(422, "invalid_sort", f"sort must be one of {sorted(RANKABLE)}", "sort")
        return sort

    @app.get("/v1/stats/departments", responses=documented(shapes.Departments))
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

    @app.get("/v1/stats/departments/{unit_id}", responses={**documented(shapes.Department), **_NOT_FOUND})
    async def department(request: Request, unit_id: str, month: MonthQuery = None, from_: FromQuery = None,
                         to: ToQuery = None) -> dict[str, Any]:
        svc = svc_of(request)
        months, days, period = await svc.period(month, from_, to)
        row = next((r for r in breakdown(svc, "unit", months, days) if r["id"] == unit_id), None)
        if row is None:
            raise ApiError(404, "not_found", "no cases for this unit in the period", "unit_id")
        return {"period": period, **row}

    @app.get("/v1/stats/categories", responses=documented(shapes.Breakdown))
    async def categories(request: Request, month: MonthQuery = None, from_: FromQuery = None,
                         to: ToQuery = None) -> dict[str, Any]:
        svc = svc_of(request)
        months, days, period = await svc.period(month, from_, to)
        return {"period": period, "items": breakdown(svc, "category", months, days)}

    @app.get("/v1/stats/counties", responses=documented(shapes.Breakdown))
    async def counties(request: Request, month: MonthQuery = None, from_: FromQuery = None,
                       to: ToQuery = None) -> dict[str, Any]:
        svc = svc_of(request)
        months, days, period = await svc.period(month, from_, to)
        return {"period": period, "items": breakdown(svc, "county", months, days)}

    @app.get("/v1/stats/timeseries", responses=documented(shapes.Timeseries))
    async def timeseries(request: Request, granularity: Annotated[Literal["daily", "monthly"], Query()] = "monthly",
                         from_: FromQuery = None, to: ToQuery = None) -> dict[str, Any]:
        svc = svc_of(request)
        if granularity not in ("daily", "monthly"):
            raise ApiError(422, "invalid_granularity", "granularity must be daily or monthly", "granularity")
        today = svc.today()
        if granularity == "monthly":
            months, _days, period = await svc.period(None, from_, to)
            points = [{"period": m, "label": people_month(m), **rollup.rates(today)} for m in sorted(months)
                      if (rollup := svc.view.rollup("all", "all", m))]
            return {"granularity": granularity, "period": period, "points": points}
        last = _parse_date(to, "to") if to else today
        first = _parse_date(from_, "from") if from_ else last - timedelta(days=30)
        first = max(first, last - timedelta(days=366))  # a daily series covers at most 366 days up to 'to'
        days = [(first + timedelta(days=i)).isoformat() for i in range(max(0, (last - first).days + 1))]
        points = [{"period": day, "label": chinese_date(date.fromisoformat(day)),
                   **svc.view.rollup("all", "all", day).rates(today)} for day in days]
        return {"granularity": granularity, "period": {"from": first.isoformat(), "to": last.isoformat()},
                "points": points}

    @app.get("/v1/reports/monthly", responses=documented(shapes.Monthly, "text/csv", "text/html", XLSX_TYPE))
    async def monthly_report(request: Request, month: Annotated[str, Query(pattern=MONTH_PATTERN)],
                             format: Annotated[Literal["json", "csv", "html", "xlsx"] | None, Query()] = None,
                             sort: SortQuery = "satisfaction_rate") -> Response:
        svc = svc_of(request)
        check_sort(sort)
        months, days, period = await svc.period(month, None, None)
        wanted = format or _format_from_accept(request.headers.get("accept", ""))
        if wanted not in ("json", "csv", "html", "xlsx"):
            raise ApiError(422, "invalid_format", "format must be json, csv, html or xlsx", "format")
        # the report and its workbook (~100 ms of openpyxl) are reused until the rollups or the lists change
        key = ("monthly", month, sort, svc.today())
        report = svc.view.cached(key, lambda: build_monthly_report(svc, month, months, days, period, sort))
        filename = f"{svc.settings.bulletin_title}-{month}"
        if wanted == "csv":
            return _download(bulletin_csv(report).encode("utf-8"), "text/csv; charset=utf-8", f"{filename}.csv")
        if wanted == "xlsx":
            book = svc.view.cached((*key, "xlsx"), lambda: bulletin_xlsx(report))
            return _download(book, XLSX_TYPE, f"{filename}.xlsx")
        if wanted == "html":
            return HTMLResponse(bulletin_html(report))
        return JSONResponse(report)

    async def ledger_page(svc: Service, filters: LedgerFilters, skip: int, limit: int) -> list[dict[str, Any]]:
        """A filtered read of the ledger: a scan on the local server, so bounded in time (``ledger_query_seconds``;
        past it pymongo raises a timeout, answered 503 by :func:`database_unavailable`)."""
        with pymongo.timeout(svc.settings.ledger_query_seconds):
            docs = await svc.store.browse(filters.query(svc.clock.now()), skip, limit)
        return [ledger_row(d) for d in docs]

    @app.get("/v1/cases", responses=documented(shapes.LedgerPage))
    async def cases(request: Request, filters: Annotated[LedgerFilters, Depends()],
                    page: int = Query(1, ge=1, le=100_000), page_size: int = Query(50, ge=1, le=200)
                    ) -> dict[str, Any]:
        svc = svc_of(request)
        size = min(page_size, svc.settings.page_size_max)
        return {"page": page, "page_size": size, "items": await ledger_page(svc, filters, (page - 1) * size, size)}

    @app.get("/v1/ledger", responses=documented(shapes.LedgerPage, "text/csv", XLSX_TYPE))
    async def ledger(request: Request, filters: Annotated[LedgerFilters, Depends()],
                     format: Annotated[Literal["json", "csv", "xlsx"], Query()] = "json",
                     page: int = Query(1, ge=1, le=100_000), page_size: int = Query(50, ge=1, le=200)) -> Response:
        """The ledger (台账): one row per case with names; ``format=csv|xlsx`` downloads every matching row (up
        to ``ledger_export_max``), ``json`` pages like ``/v1/cases``."""
        svc = svc_of(request)
        if format not in ("json", "csv", "xlsx"):
            raise ApiError(422, "invalid_format", "format must be json, csv or xlsx", "format")
        if format == "json":
            size = min(page_size, svc.settings.page_size_max)
            items = await ledger_page(svc, filters, (page - 1) * size, size)
            return JSONResponse({"page": page, "page_size": size, "items": items})
        rows = await ledger_page(svc, filters, 0, svc.settings.ledger_export_max)
        name = f"问政台账-{filters.month or svc.today().isoformat()}"
        if format == "csv":
            return _download(ledger_csv(rows).encode("utf-8"), "text/csv; charset=utf-8", f"{name}.csv")
        title = f"赣州市网络问政台账（{filters.label()}）"
        return _download(ledger_xlsx(rows, title), XLSX_TYPE, f"{name}.xlsx")

    return app


class LedgerFilters:
    """Filters of the ledger (query parameters): unit, category, county, status, received month, flags."""

    def __init__(self, unit: str | None = None, category: str | None = None, county: str | None = None,
                 status: str | None = None, month: MonthQuery = None, flagged: bool | None = None,
                 overdue: bool | None = None) -> None:
        if month is not None and not MONTH.match(month):
            raise ApiError(422, "invalid_month", "expected YYYY-MM", "month")
        self.unit, self.category, self.county, self.status = unit, category, county, status
        self.month, self.flagged, self.overdue = month, flagged, overdue

    def query(self, now: datetime) -> dict[str, Any]:
        flt: dict[str, Any] = {}
        for name in ("unit", "category", "county", "status"):
            if (value := getattr(self, name)) is not None:
                flt[f"s.{name}"] = value
        if self.month is not None:
            first, last = month_bounds(self.month)
            flt["s.received_day"] = {"$gte": first.isoformat(), "$lte": last.isoformat()}
        if self.flagged is not None:
            flt["s.flagged"] = True if self.flagged else {"$ne": True}
        if self.overdue is not None:
            late = {"s.awaiting_reply": True, "s.closed_at": None, "s.deadline": {"$lt": now.isoformat()}}
            flt.update(late if self.overdue else {"$or": [
                {"s.awaiting_reply": False}, {"s.closed_at": {"$ne": None}}, {"s.deadline": {"$gte": now.isoformat()}},
                {"s.deadline": None}]})
        return flt

    def label(self) -> str:
        parts = [people_month(self.month) if self.month else "全部"]
        parts += [n for n in (key_name("unit", self.unit), key_name("category", self.category), self.county) if n]
        return "，".join(parts)


async def database_unavailable(request: Request, exc: Exception) -> Response:
    """A database timeout or error in a request: 503 with the error envelope (and Retry-After), never a 500."""
    timeout = isinstance(exc, PyMongoError) and exc.timeout
    log.warning("stats_database_error", path=request.url.path, error_type=type(exc).__name__,
                error=str(exc)[:200], timeout=timeout)
    if timeout:
        return error_response(503, "query_timeout", "查询超时：条件范围太大，请缩小筛选条件（如按月份、单位）后重试",
                              None, headers={"retry-after": "30"})
    return error_response(503, "database_unavailable", "数据库暂时不可用，请稍后重试", None,
                          headers={"retry-after": "5"})


def _download(body: bytes, media_type: str, filename: str) -> Response:
    return Response(body, media_type=media_type,
                    headers={"content-disposition": f"attachment; filename*=UTF-8''{quote(filename)}"})


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


def build_monthly_report(svc: Service, month: str, months: list[str], days: list[str], period: dict,
                               sort: str) -> dict[str, Any]:
    """The monthly bulletin (月报): totals, the ranking with names, praise and criticism, the typical cases
    flagged in the month, the overdue and escalated cases, the issuing office and the period in Chinese."""
    today = svc.today()
    totals = overall(svc, months, days)
    by_unit = svc.view.summaries("unit", months, days)
    rows = [named_row("unit", key, s.rates(today)) for key, s in sorted(by_unit.items())]
    waiting = by_unit.get(UNASSIGNED)
    ranked, small = rank(rows, sort, svc.settings.min_sample)
    lists = praise_and_criticism(ranked, sort, svc.settings.list_size)
    first, last = month_bounds(month)
    # the month's short lists come from the view (lists.py), never from a filtered read of the ledger
    late = [ledger_row({"_id": cid, "s": s}) for cid, s in svc.view.lists.late(month)]
    typical = [ledger_row({"_id": cid, "s": s}) for cid, s in svc.view.lists.typical(month)]
    label = people_month(month)
    return {
        "month": month, "period": period, "period_label": label,
        "period_range_label": f"{chinese_date(first)}至{chinese_date(last)}",
        "title": f"{svc.settings.bulletin_title}（{label}）", "issuer": svc.settings.bulletin_issuer,
        "generated_for": today.isoformat(), "generated_for_label": chinese_date(today),
        "sort": sort, "sort_name": RATE_NAMES[sort],
        "min_sample": svc.settings.min_sample, "totals": totals, "ranking": ranked, "below_min_sample": small,
        # cases no unit is responsible for yet (routing, triage): in the totals, never ranked
        "unassigned": {"name": key_name("unit", UNASSIGNED), **waiting.rates(today)} if waiting else None,
        "praise": [_brief(r, sort) for r in lists["praise"]],
        "criticise": [_brief(r, sort) for r in lists["criticise"]],
        "invalid_reasons": invalid_reasons(totals),
        "typical_cases": [_case_brief(c) for c in typical],
        "overdue_and_escalated": [{**_case_brief(c), "escalated": c["escalated"],
                                   "replied": c["first_reply_at"] is not None} for c in late],
        "second_handling": {"cases": totals["second_handling"], "rated": totals["second_handling_rated"],
                            "satisfied": totals["second_handling_satisfied"]},
        "supervision": {  # 督办 notices and 回访 callbacks of the month's cases, per unit
            "notices_issued": totals["notices_issued"], "notices_answered": totals["notices_answered"],
            "callbacks": totals["callbacks"],
            "by_unit": [{"id": r["id"], "name": r.get("name"),
                         **{k: r[k] for k in ("notices_issued", "notices_answered", "callbacks")}}
                        for r in rows if r["notices_issued"] or r["callbacks"]],
        },
    }


def invalid_reasons(rates: dict[str, Any]) -> list[dict[str, Any]]:
    return [{"code": code, "name": invalid_reason_name(code), "count": n}
            for code, n in rates["invalid_by_reason"].items()]


def _case_brief(row: dict[str, Any]) -> dict[str, Any]:
    return {"tracking_number": row["tracking_number"], "unit": row["unit"], "unit_name": row["unit_name"],
            "category": row["category"], "category_name": row["category_name"], "county": row["county"],
            "status": row["status"], "status_name": row["status_name"], "received_at": row["received_at"],
            "received_label": _label(row["received_at"]), "flagged_at": row["flagged_at"],
            "flagged_label": _label(row["flagged_at"])}


def _label(value: str | None) -> str:
    return people_date(datetime.fromisoformat(value)) if value else ""


def _brief(row: dict[str, Any], sort: str) -> dict[str, Any]:
    return {"id": row["id"], "name": row["name"], "rank": row.get("rank"), sort: row[sort], "received": row["received"]}


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
