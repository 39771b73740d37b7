"""What every page handler shares: the runtime (clients, templates, settings), rendering with the session
and CSRF token, reading a form with its CSRF check, and signing in when a page needs a person."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable, Iterable
from pathlib import Path
from typing import Any
from urllib.parse import quote

from fastapi import Request
from fastapi.responses import HTMLResponse, RedirectResponse
from jinja2 import Environment, FileSystemLoader, select_autoescape
from markupsafe import Markup

from services.portal import domain, metrics
from services.portal.client import ApiError, IntakeClient, StatsClient
from services.portal.config import PortalSettings
from services.portal.security import CSRF_FIELD, Session, csrf_ok

TEMPLATES = Path(__file__).resolve().parent / "templates"
STAFF_ROLES = {"unit_staff", "unit_lead"}
OFFICE_ROLES = {"supervisor"}
ADMIN_ROLES = {"admin"}


class SignInNeeded(Exception):
    """The page needs a signed-in person (none, or the intake token ended): show sign-in, then come back."""

    def __init__(self, next_path: str, expired: bool = False) -> None:
        self.next_path, self.expired = next_path, expired


class CsrfRefused(Exception):
    pass


class NotAllowed(Exception):
    """Signed in, but this page is for other roles."""


class TtlCache:
    """Public answers that change slowly (the unit directory, a month's bulletin), reused for ``ttl`` seconds;
    one caller fetches while the others wait. Never used for anything personal or per person."""

    def __init__(self, ttl: float, max_entries: int = 64) -> None:
        self.ttl, self.max_entries = ttl, max_entries
        self.entries: dict[Any, tuple[float, Any]] = {}
        self.lock = asyncio.Lock()

    async def get(self, key: Any, fetch: Callable[[], Awaitable[Any]]) -> Any:
        hit = self.entries.get(key)
        if hit is not None and time.monotonic() - hit[0] < self.ttl:
            return hit[1]
        async with self.lock:
            hit = self.entries.get(key)
            if hit is not None and time.monotonic() - hit[0] < self.ttl:
                return hit[1]
            value = await fetch()
            if len(self.entries) >= self.max_entries:
                self.entries.pop(next(iter(self.entries)))
            self.entries[key] = (time.monotonic(), value)
            return value


class Reference:
    """GET /v1/reference, reused for ``reference_cache_seconds`` (units and places, not case data)."""

    def __init__(self, intake: IntakeClient, ttl: float) -> None:
        self.intake = intake
        self.cache = TtlCache(ttl, 1)
        self.last: dict[str, Any] | None = None

    async def get(self) -> dict[str, Any]:
        try:
            self.last = await self.cache.get("reference", self.intake.reference)
        except ApiError:
            if self.last is None:  # not there (yet): pickers fall back to free text
                return {"units": [], "categories": [], "counties": []}
        return self.last or {}


class Portal:
    def __init__(self, settings: PortalSettings, intake: IntakeClient, stats: StatsClient, production: bool) -> None:
        self.settings, self.intake, self.stats = settings, intake, stats
        self.production = production
        self.reference = Reference(intake, settings.reference_cache_seconds)
        self.bulletins = TtlCache(settings.bulletin_cache_seconds)
        self.env = Environment(loader=FileSystemLoader(TEMPLATES), autoescape=select_autoescape(["html"]),
                               trim_blocks=True, lstrip_blocks=True)
        self.env.filters.update(
            local_time=domain.local_time, local_date=domain.local_date, percent=domain.percent,
            interval=domain.interval, fraction=domain.fraction, status_words=lambda s: domain.STATUS_WORDS.get(s, s),
            status_short=lambda s: domain.STATUS_SHORT.get(s, s), event_words=lambda s: domain.EVENT_WORDS.get(s, s),
            rating_words=lambda s: domain.RATING_WORDS.get(s or "", s or ""),
            action_words=lambda s: domain.ACTION_WORDS.get(s, s), role_words=lambda s: domain.ROLE_WORDS.get(s, s),
            notice_method=lambda s: domain.NOTICE_METHODS.get(s, s), month_words=domain.month_words,
            tojson_attr=lambda v: Markup(json.dumps(v, ensure_ascii=False)), urlquote=lambda v: quote(str(v)),
            name_of=lambda item: (item or {}).get("name") or (item or {}).get("id") or (item or {}).get("code") or "",
        )
        self.env.globals.update(site_name=settings.site_name, buckets=domain.BUCKETS,
                                notice_methods=domain.NOTICE_METHODS, rating_choices=domain.RATING_WORDS,
                                kinds=domain.KIND_WORDS, csrf_field=CSRF_FIELD)


def portal(request: Request) -> Portal:
    return request.app.state.portal


def session_of(request: Request) -> Session:
    return request.state.session


def render(request: Request, template: str, status: int = 200, **context: Any) -> HTMLResponse:
    p = portal(request)
    session = session_of(request)
    html = p.env.get_template(template).render(
        request=request, session=session, person=session.person if session.signed_in else None,
        csrf_token=session.csrf, path=request.url.path, errors=context.pop("errors", {}) or {},
        values=context.pop("values", {}) or {}, **context)
    return HTMLResponse(html, status_code=status)


async def read_form(request: Request) -> dict[str, Any]:
    """The submitted fields (files kept as UploadFile), after the CSRF check."""
    form = await request.form()
    data: dict[str, Any] = {}
    for key, value in form.multi_items():
        if key in data:
            data[key] = [*data[key], value] if isinstance(data[key], list) else [data[key], value]
        else:
            data[key] = value
    if not csrf_ok(session_of(request), data.get(CSRF_FIELD) if isinstance(data.get(CSRF_FIELD), str) else None):
        metrics.CSRF_REFUSED.inc()
        request.state.form = data
        raise CsrfRefused()
    return data


def form_list(form: dict[str, Any], key: str) -> list[Any]:
    value = form.get(key)
    if value is None:
        return []
    return value if isinstance(value, list) else [value]


def back_to(request: Request) -> str:
    """Where the person was: this page for a GET, the page that sent the form for a POST."""
    if request.method == "GET":
        return request.url.path + (f"?{request.url.query}" if request.url.query else "")
    referer = request.headers.get("referer", "")
    host = f"{request.url.scheme}://{request.url.netloc}"
    if referer.startswith(host):
        return referer[len(host):] or "/staff"
    return request.url.path.rsplit("/", 1)[0] if "/cases/" in request.url.path else "/staff"


def require(request: Request, roles: Iterable[str]) -> Session:
    session = session_of(request)
    if not session.signed_in:
        raise SignInNeeded(back_to(request))
    if not session.roles & set(roles):
        raise NotAllowed()
    return session


async def call(request: Request, coroutine: Any) -> Any:
    """A back-end call made for the signed-in person: a 401 means the session ended -> sign in again."""
    try:
        return await coroutine
    except ApiError as exc:
        if exc.unauthenticated and session_of(request).signed_in:
            session_of(request).sign_out()
            raise SignInNeeded(back_to(request), expired=True) from exc
        raise


async def optional(coroutine: Any, default: Any) -> Any:
    """A part of a page that may be missing (an older back end): the page still renders without it; a lost
    sign-in still ends the page."""
    try:
        return await coroutine
    except ApiError as exc:
        if exc.unauthenticated:
            raise
        return default


def forwarded_for(request: Request) -> str | None:
    """The X-Forwarded-For chain to send on: what reached the portal plus the address it came from."""
    peer = request.client.host if request.client else None
    earlier = request.headers.get("x-forwarded-for", "").strip()
    return ", ".join(part for part in (earlier, peer) if part) or None


def redirect(url: str) -> RedirectResponse:
    return RedirectResponse(url, status_code=303)


def field_errors(exc: ApiError, known: set[str], default_field: str = "_") -> dict[str, str]:
    """The contract's error as a message at its field (or at the top when the field is not on the page)."""
    words = domain.error_words(exc.code, exc.status)
    return {exc.field if exc.field in known else default_field: words}


def home_for(session: Session) -> str:
    roles = session.roles
    if roles & OFFICE_ROLES:
        return "/supervisor"
    if roles & STAFF_ROLES:
        return "/staff"
    if roles & ADMIN_ROLES:
        return "/admin"
    return "/"
