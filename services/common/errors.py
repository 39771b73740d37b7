"""One error shape for every HTTP service: ``{"error": {"code", "message", "field"}}`` on every 4xx.

- :class:`ApiError` is what handlers raise; :func:`error_response` renders any error the same way.
- :func:`install_error_handlers` turns FastAPI's validation errors, Starlette's 404/405 and our own errors
  into the envelope, naming the field at fault as a JSON path (``location.lat``, ``attachments[0]``).
- :class:`BodyLimits` (ASGI middleware) refuses an over-size body with 413 before reading it whole (from
  ``Content-Length``, or while it streams in), and a JSON body that does not parse or nests too deep with
  422 at the JSON path where it goes wrong, not a character offset.
- :func:`document_errors` makes the OpenAPI say exactly that: the envelope for every 4xx, 413 on every
  operation with a body, and no FastAPI ``HTTPValidationError`` that the services never send.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

DEFAULT_MAX_BODY_BYTES = 64 * 1024
DEFAULT_MAX_JSON_DEPTH = 32
_LOCATIONS = {"body", "query", "path", "header", "cookie"}
_HTTP_CODES = {400: "bad_request", 401: "unauthorized", 403: "forbidden", 404: "not_found",
               405: "method_not_allowed", 406: "not_acceptable", 409: "conflict", 413: "body_too_large",
               415: "unsupported_media_type", 422: "validation_error", 429: "rate_limited"}


class ErrorDetail(BaseModel):
    code: str
    message: str
    field: str | None = None


class ErrorBody(BaseModel):
    """Every 4xx answer of every service."""

    error: ErrorDetail


class ApiError(Exception):
    def __init__(self, status: int, code: str, message: str, field: str | None = None, *,
                 headers: dict[str, str] | None = None, **extra: Any) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.field = status, code, message, field
        self.headers = headers
        self.extra = extra


def error_body(code: str, message: str, field: str | None = None, /, **extra: Any) -> dict[str, Any]:
    return {"error": {"code": code, "message": message, "field": field, **extra}}


def error_response(http_status: int, code: str, message: str, field: str | None = None, /, *,
                   headers: dict[str, str] | None = None, **extra: Any) -> JSONResponse:
    return JSONResponse(error_body(code, message, field, **extra), status_code=http_status, headers=headers)


def json_path(parts: Iterable[str | int]) -> str | None:
    """``("location", "lat")`` → ``location.lat``; ``("attachments", 0)`` → ``attachments[0]``."""
    out = ""
    for part in parts:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out or None


def validation_field(loc: Sequence[Any]) -> str | None:
    parts = list(loc)
    if parts and parts[0] in _LOCATIONS:
        parts = parts[1:]
    return json_path(parts)


def validation_message(errors: Sequence[dict[str, Any]]) -> str:
    first = errors[0] if errors else {"msg": "invalid request"}
    more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
    return f"{first.get('msg', 'invalid')}{more}"


Renderer = Callable[[Request, int, str, str, str | None, dict[str, str] | None, dict[str, Any]], Response]
# A protocol's own error format for the paths that must not answer the envelope (Open311's GeoReport list):
# (path, status, message, headers) -> response
ForeignRenderer = Callable[[str, int, str, dict[str, str] | None], Response]


def render_error(path: str, status: int, code: str, message: str, field: str | None = None, *,
                 headers: dict[str, str] | None = None, extra: dict[str, Any] | None = None,
                 foreign: dict[str, ForeignRenderer] | None = None) -> Response:
    """The one renderer of an error: the envelope, or the foreign format of a path under one of ``foreign``'s
    prefixes. A 401 that names the Authorization header says which scheme to use."""
    for prefix, render in (foreign or {}).items():
        if path.startswith(prefix):
            return render(path, status, message, headers)
    headers = dict(headers or {})
    if status == 401 and field == "Authorization":
        headers.setdefault("WWW-Authenticate", "Bearer")
    return error_response(status, code, message, field, headers=headers or None, **(extra or {}))


def install_error_handlers(app: FastAPI, render: Renderer | None = None,
                           validation_code: str = "validation_error", *,
                           foreign: dict[str, ForeignRenderer] | None = None) -> None:
    """Validation errors, unknown routes and methods, and :class:`ApiError` all answer the envelope;
    paths under a ``foreign`` prefix answer their protocol's own format (``render`` replaces both)."""
    if render is None:
        def render(request: Request, status: int, code: str, message: str, field: str | None,
                   headers: dict[str, str] | None, extra: dict[str, Any]) -> Response:
            return render_error(request.url.path, status, code, message, field, headers=headers, extra=extra,
                                foreign=foreign)

    @app.exception_handler(ApiError)
    async def _api_error(request: Request, exc: ApiError) -> Response:
        return render(request, exc.status, exc.code, exc.message, exc.field, exc.headers, dict(exc.extra))

    @app.exception_handler(RequestValidationError)
    async def _validation_error(request: Request, exc: RequestValidationError) -> Response:
        errors = list(exc.errors())
        field = validation_field(errors[0].get("loc", ())) if errors else None
        return render(request, 422, validation_code, validation_message(errors), field, None, {})

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> Response:
        code = _HTTP_CODES.get(exc.status_code, "http_error")
        message = exc.detail if isinstance(exc.detail, str) else code.replace("_", " ")
        headers = dict(exc.headers or {})
        if exc.status_code == 405:  # every method of the path, not only those of the first route matched
            headers["Allow"] = ", ".join(allowed_methods(app, request.scope))
        return render(request, exc.status_code, code, message, None, headers or None, {})


def allowed_methods(app: FastAPI, scope: Scope) -> list[str]:
    methods: set[str] = set()
    for route in app.router.routes:
        match, _ = route.matches({**scope, "method": "GET"})
        if match is not Match.NONE:
            methods |= set(getattr(route, "methods", None) or ())
    return sorted(methods)


# --------------------------------------------------------------------------------------------------
# Body limits (pure ASGI, so an over-size body is refused before it is read)
# --------------------------------------------------------------------------------------------------


def _scan_json(text: str, stop: int | None = None, max_depth: int | None = None) -> tuple[list[str | int], int]:
    """Walk JSON text (well formed up to ``stop``): the path of containers open at ``stop`` (or where
    the nesting first passes ``max_depth``), and the deepest nesting seen."""
    path: list[str | int] = []
    kinds: list[str] = []
    pending_key: str | None = None
    deepest = 0
    i, end = 0, len(text) if stop is None else min(stop, len(text))
    while i < end:
        ch = text[i]
        if ch == '"':
            j = i + 1
            while j < len(text) and text[j] != '"':
                j += 2 if text[j] == "\\" else 1
            if kinds and kinds[-1] == "obj" and path and path[-1] is None:
                try:
                    pending_key = json.loads(text[i:j + 1])
                except ValueError:
                    pending_key = text[i + 1:j]
            i = j + 1
            continue
        if ch == ":" and kinds and kinds[-1] == "obj":
            path[-1] = pending_key if pending_key is not None else ""
        elif ch == "," and kinds:
            path[-1] = path[-1] + 1 if kinds[-1] == "arr" else None  # type: ignore[operator]
        elif ch in "{[":
            kinds.append("obj" if ch == "{" else "arr")
            path.append(None if ch == "{" else 0)  # type: ignore[arg-type]
            deepest = max(deepest, len(kinds))
            if max_depth is not None and len(kinds) > max_depth:
                return [p for p in path[:-1] if p is not None], deepest
        elif ch in "}]" and kinds:
            kinds.pop()
            path.pop()
        i += 1
    return [p for p in path if p is not None], deepest


def json_error_path(text: str, position: int) -> str:
    """The JSON path of the value being read at ``position`` (where a parser gave up)."""
    return json_path(_scan_json(text, stop=position)[0]) or "body"


class BodyLimits:
    """Refuses request bodies larger than ``max_bytes`` (413, with the limit) for the media types given,
    checked from ``Content-Length`` before reading and counted while reading; for JSON bodies also
    unparsable or too deeply nested JSON (422 at the JSON path)."""

    def __init__(self, app: ASGIApp, max_bytes: int = DEFAULT_MAX_BODY_BYTES,
                 max_depth: int = DEFAULT_MAX_JSON_DEPTH,
                 media_types: Sequence[str] = ("application/json", "application/x-www-form-urlencoded",
                                               "text/xml", "application/xml", "text/plain"),
                 render: Callable[[Scope, int, str, str, str | None, dict[str, Any]],
                                  Response] | None = None, *,
                 foreign: dict[str, ForeignRenderer] | None = None) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.max_depth = max_depth
        self.media_types = tuple(media_types)
        self.render = render or (lambda scope, status, code, message, field, extra: render_error(
            str(scope.get("path", "")), status, code, message, field, extra=extra, foreign=foreign))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] in ("GET", "HEAD", "OPTIONS", "DELETE"):
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
        media = headers.get("content-type", "").split(";")[0].strip().lower()
        if media and not media.startswith(self.media_types) and not media.endswith("+json"):
            await self.app(scope, receive, send)  # multipart uploads have their own limit
            return
        length = headers.get("content-length", "")
        if length.isdigit() and int(length) > self.max_bytes:
            await self._too_large(scope, receive, send)
            return
        body, more = bytearray(), True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            body += message.get("body", b"")
            more = message.get("more_body", False)
            if len(body) > self.max_bytes:
                await self._too_large(scope, receive, send)
                return
        if media == "application/json" or media.endswith("+json"):
            problem = self._json_problem(bytes(body))
            if problem is not None:
                code, message_text, field = problem
                await self.render(scope, 422, code, message_text, field, {})(scope, receive, send)
                return
        await self.app(scope, _replay(bytes(body)), send)

    async def _too_large(self, scope: Scope, receive: Receive, send: Send) -> None:
        response = self.render(scope, 413, "body_too_large", f"the request body is larger than {self.max_bytes} bytes",
                               "body", {"limit_bytes": self.max_bytes})
        await response(scope, receive, send)

    def _json_problem(self, raw: bytes) -> tuple[str, str, str | None] | None:
        if not raw.strip():
            return None  # FastAPI says which field is missing
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            return "invalid_json", f"the body is not UTF-8 (byte {exc.start})", "body"
        # the C parser first, and the character walk only for a body that fails: the walk costs a busy intake
        # more than the rest of a post's checks
        try:
            parsed = json.loads(text)
        except json.JSONDecodeError as exc:
            path, deepest = _scan_json(text, max_depth=self.max_depth)
            if deepest > self.max_depth:
                return self._too_deep(json_path(path))
            return "invalid_json", f"invalid JSON: {exc.msg} (line {exc.lineno}, column {exc.colno})", \
                json_error_path(text, exc.pos)
        except RecursionError:
            return self._too_deep(None)
        if _depth(parsed) > self.max_depth:
            return self._too_deep(json_path(_scan_json(text, max_depth=self.max_depth)[0]))
        return None

    def _too_deep(self, path: str | None) -> tuple[str, str, str]:
        return "json_too_deep", f"JSON nested deeper than {self.max_depth} levels", path or "body"


def _depth(value: Any) -> int:
    """How deeply containers nest in a parsed JSON value (a scalar: 0)."""
    deepest, level = 0, [(value, 1)]
    while level:
        item, depth = level.pop()
        if isinstance(item, dict):
            deepest = max(deepest, depth)
            level.extend((v, depth + 1) for v in item.values())
        elif isinstance(item, list):
            deepest = max(deepest, depth)
            level.extend((v, depth + 1) for v in item)
    return deepest


def _replay(body: bytes) -> Callable[[], Awaitable[Message]]:
    sent = False

    async def receive() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return {"type": "http.disconnect"}

    return receive


# --------------------------------------------------------------------------------------------------
# OpenAPI: document what the services answer
# --------------------------------------------------------------------------------------------------

_ERROR_REF = {"$ref": "#/components/schemas/ErrorBody"}
_ERROR_CONTENT = {"application/json": {"schema": _ERROR_REF}}
_DESCRIPTIONS = {400: "Bad request", 401: "Unauthorized", 403: "Forbidden", 404: "Not found", 405: "Method not allowed",
                 409: "Conflict", 413: "Request body too large", 422: "Invalid request", 429: "Too many requests"}


def document_errors(app: FastAPI, *, skip_prefixes: Sequence[str] = (),
                    text_paths: dict[str, str] | None = None) -> None:
    """Post-process the generated OpenAPI: every 4xx answers :class:`ErrorBody`, every operation with a
    request body may answer 413 and 422, and ``text_paths`` (e.g. ``/metrics``) answer that media type."""
    original = app.openapi
    text_paths = text_paths or {}

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is not None:
            return app.openapi_schema
        schema = original()
        components = schema.setdefault("components", {}).setdefault("schemas", {})
        components["ErrorDetail"] = ErrorDetail.model_json_schema()
        components["ErrorBody"] = {
            "title": "ErrorBody", "type": "object", "required": ["error"], "description": ErrorBody.__doc__.strip(),
            "properties": {"error": {"$ref": "#/components/schemas/ErrorDetail"}}}
        for name in ("HTTPValidationError", "ValidationError"):
            components.pop(name, None)
        for path, operations in schema.get("paths", {}).items():
            for operation in operations.values():
                if not isinstance(operation, dict) or "responses" not in operation:
                    continue
                responses = operation["responses"]
                if path in text_paths:
                    for answer in responses.values():
                        answer["content"] = {text_paths[path]: {"schema": {"type": "string"}}}
                if any(path.startswith(prefix) for prefix in skip_prefixes):
                    continue
                if operation.get("requestBody") or operation.get("parameters"):
                    responses.setdefault("422", {"description": _DESCRIPTIONS[422]})
                if operation.get("requestBody"):
                    responses.setdefault("413", {"description": _DESCRIPTIONS[413]})
                for status, answer in responses.items():
                    if status.startswith("4"):
                        answer["content"] = _ERROR_CONTENT
                        if not answer.get("description") or answer["description"] in ("Validation Error", ""):
                            answer["description"] = _DESCRIPTIONS.get(int(status), "Client error")
        app.openapi_schema = schema
        return schema

    app.openapi = openapi  # type: ignore[method-assign]
