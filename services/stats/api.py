"""HTTP API: public rates, rankings, the monthly bulletin (JSON, CSV, HTML, Excel) and the ledger browser.

One router per resource, each route a thin call of :class:`services.stats.handlers.StatsQueries`; the files
for people are rendered in ``reports.py``. No personal data is ever stored in the ledger, so nothing here can
leak it: cases are named by tracking number.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Annotated, Any, Literal
from urllib.parse import quote

from fastapi import APIRouter, Depends, FastAPI, Query, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response
from pymongo import AsyncMongoClient
from pymongo.errors import PyMongoError

from services.common.clock import Clock, clock_from_environment
from services.common.config import TopicSettings, common_settings, topics
from services.common.errors import BodyLimits, document_errors, error_response, install_error_handlers
from services.common.logging import get_logger
from services.common.metrics import METRICS_CONTENT_TYPE, render_metrics
from services.common.mongo import new_client, ping
from services.stats import metrics, shapes
from services.stats.config import StatsSettings
from services.stats.consumer import StatsConsumer
from services.stats.domain import InvalidQuery, LedgerFilters
from services.stats.handlers import Projector, StatsQueries, ledger_label
from services.stats.reports import XLSX_TYPE, bulletin_csv, bulletin_html, ledger_csv, ledger_xlsx
from services.stats.shapes import documented
from services.stats.store import StatsStore
from services.stats.view import RollupView

log = get_logger(__name__)

MONTH_PATTERN = r"^(19|20)\d{2}-(0[1-9]|1[0-2])$"
DATE_PATTERN = r"^(19|20)\d{2}-(0[1-9]|1[0-2])-(0[1-9]|[12]\d|3[01])$"
MonthQuery = Annotated[str | None, Query(pattern=MONTH_PATTERN, description="YYYY-MM")]
_DATE_FORMAT = {"format": "date"}
FromQuery = Annotated[str | None, Query(alias="from", pattern=DATE_PATTERN, description="YYYY-MM-DD",
                                        json_schema_extra=_DATE_FORMAT)]
ToQuery = Annotated[str | None, Query(pattern=DATE_PATTERN, description="YYYY-MM-DD", json_schema_extra=_DATE_FORMAT)]
SortQuery = Annotated[Literal["reply_rate", "on_time_rate", "satisfaction_rate"], Query()]
PageQuery = Annotated[int, Query(ge=1, le=100_000)]
PageSizeQuery = Annotated[int, Query(ge=1, le=200)]
_NOT_FOUND: dict[int | str, dict[str, Any]] = {404: {"description": "no such unit in the period"}}


@dataclass
class Runtime:
    """What the routes and the background tasks share, built in the lifespan."""

    settings: StatsSettings
    names: TopicSettings
    clock: Clock
    client: AsyncMongoClient | None = None
    store: StatsStore | None = None
    projector: Projector | None = None
    queries: StatsQueries | None = None
    consumer: StatsConsumer | None = None
    stop: asyncio.Event = field(default_factory=asyncio.Event)
    tasks: list[asyncio.Task] = field(default_factory=list)

    @property
    def view(self) -> RollupView:
        """The rollups in memory (what every query reads)."""
        assert self.projector is not None, "read before start-up"
        return self.projector.view


def _queries(request: Request) -> StatsQueries:
    return request.app.state.runtime.queries


Queries = Annotated[StatsQueries, Depends(_queries)]


def ledger_filters(unit: str | None = None, category: str | None = None, county: str | None = None,
                   status: str | None = None, month: MonthQuery = None, flagged: bool | None = None,
                   overdue: bool | None = None) -> LedgerFilters:
    """The ledger's filters as query parameters."""
    return LedgerFilters(unit=unit, category=category, county=county, status=status, month=month,
                         flagged=flagged, overdue=overdue)


Filters = Annotated[LedgerFilters, Depends(ledger_filters)]


# --------------------------------------------------------------------------------------------------
# Routes, one router per resource
# --------------------------------------------------------------------------------------------------

rates = APIRouter(prefix="/v1/stats", tags=["rates"])


@rates.get("/overview", responses=documented(shapes.Overview))
async def overview(queries: Queries, month: MonthQuery = None, from_: FromQuery = None,
                   to: ToQuery = None) -> dict[str, Any]:
    return queries.overview(month, from_, to)


@rates.get("/categories", responses=documented(shapes.Breakdown))
async def categories(queries: Queries, month: MonthQuery = None, from_: FromQuery = None,
                     to: ToQuery = None) -> dict[str, Any]:
    return queries.items("category", month, from_, to)


@rates.get("/counties", responses=documented(shapes.Breakdown))
async def counties(queries: Queries, month: MonthQuery = None, from_: FromQuery = None,
                   to: ToQuery = None) -> dict[str, Any]:
    return queries.items("county", month, from_, to)


@rates.get("/timeseries", responses=documented(shapes.Timeseries))
async def timeseries(queries: Queries, granularity: Annotated[Literal["daily", "monthly"], Query()] = "monthly",
                     from_: FromQuery = None, to: ToQuery = None) -> dict[str, Any]:
    return queries.timeseries(granularity, from_, to)


rankings = APIRouter(prefix="/v1/stats/departments", tags=["rankings"])


@rankings.get("", responses=documented(shapes.Departments))
async def departments(queries: Queries, month: MonthQuery = None, from_: FromQuery = None, to: ToQuery = None,
                      sort: SortQuery = "satisfaction_rate",
                      min_sample: int | None = Query(None, ge=1, le=1_000_000)) -> dict[str, Any]:
    return queries.departments(month, from_, to, sort, min_sample)


@rankings.get("/{unit_id}", responses={**documented(shapes.Department), **_NOT_FOUND})
async def department(queries: Queries, unit_id: str, month: MonthQuery = None, from_: FromQuery = None,
                     to: ToQuery = None) -> dict[str, Any]:
    return queries.department(unit_id, month, from_, to)


bulletins = APIRouter(prefix="/v1/reports", tags=["bulletins"])


@bulletins.get("/monthly", responses=documented(shapes.Monthly, "text/csv", "text/html", XLSX_TYPE))
async def monthly_report(request: Request, queries: Queries, month: Annotated[str, Query(pattern=MONTH_PATTERN)],
                         format: Annotated[Literal["json", "csv", "html", "xlsx"] | None, Query()] = None,
                         sort: SortQuery = "satisfaction_rate") -> Response:
    wanted = format or _format_from_accept(request.headers.get("accept", ""))
    if wanted not in ("json", "csv", "html", "xlsx"):
        raise InvalidQuery("invalid_format", "format must be json, csv, html or xlsx", "format")
    report = queries.monthly_report(month, sort)
    filename = f"{queries.settings.bulletin_title}-{month}"
    if wanted == "csv":
        return _download(bulletin_csv(report).encode("utf-8"), "text/csv; charset=utf-8", f"{filename}.csv")
    if wanted == "xlsx":
        return _download(queries.monthly_workbook(month, sort), XLSX_TYPE, f"{filename}.xlsx")
    if wanted == "html":
        return HTMLResponse(bulletin_html(report))
    return JSONResponse(report)


ledger_router = APIRouter(prefix="/v1", tags=["ledger"])


@ledger_router.get("/cases", responses=documented(shapes.LedgerPage))
async def cases(queries: Queries, filters: Filters, page: PageQuery = 1, page_size: PageSizeQuery = 50
                ) -> dict[str, Any]:
    return await queries.ledger_page(filters, page, page_size)


@ledger_router.get("/ledger", responses=documented(shapes.LedgerPage, "text/csv", XLSX_TYPE))
async def ledger(queries: Queries, filters: Filters,
                 format: Annotated[Literal["json", "csv", "xlsx"], Query()] = "json",
                 page: PageQuery = 1, page_size: PageSizeQuery = 50) -> Response:
    """The ledger (台账): one row per case with names; ``format=csv|xlsx`` downloads every matching row (up
    to ``ledger_export_max``), ``json`` pages like ``/v1/cases``."""
    if format not in ("json", "csv", "xlsx"):
        raise InvalidQuery("invalid_format", "format must be json, csv or xlsx", "format")
    if format == "json":
        return JSONResponse(await queries.ledger_page(filters, page, page_size))
    rows = await queries.ledger_export(filters)
    name = f"问政台账-{filters.month or queries.today().isoformat()}"
    if format == "csv":
        return _download(ledger_csv(rows).encode("utf-8"), "text/csv; charset=utf-8", f"{name}.csv")
    title = f"赣州市网络问政台账（{ledger_label(filters)}）"
    return _download(ledger_xlsx(rows, title), XLSX_TYPE, f"{name}.xlsx")


health = APIRouter(tags=["operations"])


@health.get("/healthz")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@health.get("/readyz")
async def readyz(request: Request) -> JSONResponse:
    runtime: Runtime = request.app.state.runtime
    mongo_ok = runtime.client is not None and await ping(runtime.client)
    consuming = runtime.consumer is None or runtime.consumer.consuming
    ok = mongo_ok and consuming
    return JSONResponse({"status": "ready" if ok else "not_ready", "mongo": mongo_ok, "consuming": consuming},
                        status_code=200 if ok else 503)


@health.get("/metrics")
async def metrics_page() -> Response:
    return Response(render_metrics(), media_type=METRICS_CONTENT_TYPE)


ROUTERS = (rates, rankings, bulletins, ledger_router, health)


# --------------------------------------------------------------------------------------------------
# Errors and downloads
# --------------------------------------------------------------------------------------------------


async def invalid_query(_request: Request, exc: Exception) -> Response:
    assert isinstance(exc, InvalidQuery)
    return error_response(exc.status, exc.code, exc.message, exc.field)


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


# --------------------------------------------------------------------------------------------------
# Start and stop
# --------------------------------------------------------------------------------------------------


async def start_runtime(runtime: Runtime) -> None:
    settings = runtime.settings
    common = common_settings()
    runtime.client = new_client(common.mongo_url, service="stats")
    runtime.store = store = StatsStore(runtime.client[settings.database])
    await store.ensure_indexes()
    runtime.projector = projector = Projector(store, settings.instance_id, flush_seconds=settings.flush_seconds,
                                              fold_seconds=settings.fold_seconds)
    runtime.queries = StatsQueries(settings, store, projector.view, runtime.clock)
    await projector.resume(unclean=await store.mark_running(settings.instance_id))
    runtime.stop = stop = asyncio.Event()
    runtime.tasks = [asyncio.create_task(_refresh_gauges(runtime, stop)),
                     asyncio.create_task(projector.view.follow(stop, settings.view_poll_seconds))]
    if settings.consumer_enabled:
        runtime.consumer = StatsConsumer(projector, runtime.names, group_id=settings.consumer_group,
                                         bootstrap=common.kafka_bootstrap, max_batch=settings.max_batch,
                                         source=settings.source)
        runtime.tasks.append(asyncio.create_task(runtime.consumer.run(stop)))


async def stop_runtime(runtime: Runtime) -> None:
    runtime.stop.set()
    for task in runtime.tasks:
        try:
            await asyncio.wait_for(task, timeout=10)
        except (TimeoutError, asyncio.CancelledError, Exception):
            task.cancel()
    await runtime.store.clear_running(runtime.settings.instance_id)
    await runtime.client.close()


async def _refresh_gauges(runtime: Runtime, stop: asyncio.Event, every: float = 15.0) -> None:
    while not stop.is_set():
        try:
            metrics.publish_rates(*runtime.queries.gauges(), max_units=runtime.settings.metrics_max_units)
            metrics.LEDGER_SIZE.set(await runtime.store.ledger_size())
        except Exception as exc:
            log.warning("gauge_refresh_failed", error=str(exc)[:200])
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=every)


def create_app(settings: StatsSettings | None = None, *, names: TopicSettings | None = None,
               clock: Clock | None = None) -> FastAPI:
    runtime = Runtime(settings=settings or StatsSettings(), names=names or topics(),
                      clock=clock or clock_from_environment())

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await start_runtime(runtime)
        try:
            yield
        finally:
            await stop_runtime(runtime)

    app = FastAPI(title="Wenzheng stats", version="1.0", lifespan=lifespan)
    app.state.runtime = runtime
    install_error_handlers(app)
    app.add_exception_handler(InvalidQuery, invalid_query)
    app.add_exception_handler(PyMongoError, database_unavailable)
    for router in ROUTERS:
        app.include_router(router)
    app.add_middleware(BodyLimits)
    document_errors(app, text_paths={"/metrics": "text/plain"})
    return app
