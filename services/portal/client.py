"""Typed HTTP clients for intake and stats (docs/people-api.md): pooled connections, timeouts, and every
4xx answer turned into an ``ApiError`` carrying the contract's ``{"code", "message", "field"}``.

The portal never reads a database: what a page shows comes from these calls, made with the signed-in
person's bearer token, and intake decides what that person may see and do.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, TypedDict

import httpx

Json = dict[str, Any]


class ApiError(Exception):
    """A back end refused a call (4xx), or could not be reached (``status`` 502/503/504)."""

    def __init__(self, status: int, code: str, message: str = "", field: str | None = None,
                 retry_after: str | None = None) -> None:
        super().__init__(f"{status} {code}: {message}")
        self.status, self.code, self.message, self.field, self.retry_after = status, code, message, field, retry_after

    @property
    def unauthenticated(self) -> bool:
        return self.status == 401


class Unit(TypedDict, total=False):
    id: str
    name: str


class Person(TypedDict, total=False):
    id: str
    username: str
    display_name: str
    roles: list[str]
    unit: Unit | None
    disabled: bool
    must_change_password: bool


class LoginAnswer(TypedDict):
    token: str
    token_type: str
    expires_at: str
    person: Person


@dataclass(frozen=True)
class Download:
    content: bytes
    media_type: str
    filename: str | None


def _error_from(response: httpx.Response) -> ApiError:
    code, message, field = f"http_{response.status_code}", response.reason_phrase, None
    try:
        body = response.json()
    except ValueError:
        body = None
    if isinstance(body, dict):
        err = body.get("error")
        if isinstance(err, dict):
            code = str(err.get("code") or code)
            message = str(err.get("message") or message)
            field = err.get("field")
        elif isinstance(body.get("detail"), str):  # FastAPI's own 404/405 answers
            message = body["detail"]
    status = response.status_code if response.status_code < 500 else 502
    return ApiError(status, code if response.status_code < 500 else "backend_error", message, field,
                    response.headers.get("retry-after"))


def _forwarded(chain: str | None) -> dict[str, str]:
    """The citizen's or staff member's address for intake's per-address limits and audit (intake trusts it
    only from the proxies it is told about: WENZHENG_INTAKE_TRUSTED_PROXIES)."""
    return {"x-forwarded-for": chain} if chain else {}


class _Api:
    def __init__(self, base_url: str, *, timeout: float, connect_timeout: float, max_connections: int,
                 transport: httpx.AsyncBaseTransport | None = None) -> None:
        self.http = httpx.AsyncClient(
            base_url=base_url.rstrip("/"), transport=transport,
            timeout=httpx.Timeout(timeout, connect=connect_timeout),
            limits=httpx.Limits(max_connections=max_connections, max_keepalive_connections=max_connections // 2 or 1),
            headers={"accept": "application/json", "user-agent": "wenzheng-portal"})

    async def close(self) -> None:
        await self.http.aclose()

    async def call(self, method: str, path: str, *, token: str | None = None, params: Json | None = None,
                   json: Json | None = None, files: Any = None, expect_json: bool = True,
                   headers: dict[str, str] | None = None) -> Any:
        headers = {**(headers or {}), **({"authorization": f"Bearer {token}"} if token else {})}
        clean = {k: v for k, v in (params or {}).items() if v not in (None, "")}
        try:
            response = await self.http.request(method, path, params=clean or None, json=json, files=files,
                                               headers=headers)
        except httpx.TimeoutException as exc:
            raise ApiError(504, "backend_timeout", str(exc) or "timeout") from exc
        except httpx.HTTPError as exc:
            raise ApiError(503, "backend_unreachable", str(exc) or "unreachable") from exc
        if response.status_code >= 400:
            raise _error_from(response)
        if not expect_json:
            return response
        if response.status_code == 204 or not response.content:
            return {}
        return response.json()

    async def ready(self) -> bool:
        try:
            return (await self.http.get("/readyz", timeout=2)).status_code == 200
        except httpx.HTTPError:
            return False


class IntakeClient(_Api):
    """Intake: sign-in, people, cases, commands, reference data, citizens' posts and the public board."""

    # ---- people and sign-in
    async def login(self, username: str, password: str, forwarded_for: str | None = None) -> LoginAnswer:
        return await self.call("POST", "/v1/auth/login", json={"username": username, "password": password},
                               headers=_forwarded(forwarded_for))

    async def logout(self, token: str) -> None:
        await self.call("POST", "/v1/auth/logout", token=token)

    async def me(self, token: str) -> Person:
        return await self.call("GET", "/v1/auth/me", token=token)

    async def change_password(self, token: str, current: str, new: str) -> None:
        await self.call("POST", "/v1/auth/password", token=token,
                        json={"current_password": current, "new_password": new})

    async def providers(self) -> Json:
        return await self.call("GET", "/v1/auth/providers")

    async def oidc_start(self, redirect_uri: str) -> Json:
        return await self.call("GET", "/v1/auth/oidc/start", params={"redirect_uri": redirect_uri})

    async def oidc_callback(self, code: str, state: str, redirect_uri: str) -> LoginAnswer:
        return await self.call("POST", "/v1/auth/oidc/callback",
                               json={"code": code, "state": state, "redirect_uri": redirect_uri})

    # ---- cases for staff
    async def cases(self, token: str, **filters: Any) -> Json:
        return await self.call("GET", "/v1/cases", token=token, params=filters)

    async def triage(self, token: str, page: int = 1, page_size: int = 20) -> Json:
        return await self.call("GET", "/v1/triage", token=token, params={"page": page, "page_size": page_size})

    async def inbox_counts(self, token: str, department_id: str | None = None) -> Json:
        return await self.call("GET", "/v1/inbox/counts", token=token, params={"department_id": department_id})

    async def case(self, token: str, case_id: str) -> Json:
        return await self.call("GET", f"/v1/cases/{case_id}", token=token)

    async def command(self, token: str, case_id: str, action: str, body: Json | None = None) -> Json:
        return await self.call("POST", f"/v1/cases/{case_id}/{action}", token=token, json=body or {})

    async def bulk(self, token: str, action: str, case_ids: list[str], **extra: Any) -> Json:
        return await self.call("POST", "/v1/cases/bulk", token=token,
                               json={"action": action, "case_ids": case_ids, **extra})

    async def notices(self, token: str, open_only: bool = True) -> Json:
        return await self.call("GET", "/v1/notices", token=token, params={"open": "true" if open_only else None})

    async def reply_templates(self, token: str, unit_id: str | None = None) -> Json:
        return await self.call("GET", "/v1/reply-templates", token=token, params={"unit_id": unit_id})

    async def reference(self) -> Json:
        return await self.call("GET", "/v1/reference")

    # ---- admin
    async def accounts(self, token: str, **params: Any) -> Json:
        return await self.call("GET", "/v1/admin/accounts", token=token, params=params)

    async def create_account(self, token: str, body: Json) -> Json:
        return await self.call("POST", "/v1/admin/accounts", token=token, json=body)

    async def update_account(self, token: str, person_id: str, body: Json) -> Json:
        return await self.call("PATCH", f"/v1/admin/accounts/{person_id}", token=token, json=body)

    async def reset_password(self, token: str, person_id: str) -> Json:
        return await self.call("POST", f"/v1/admin/accounts/{person_id}/reset-password", token=token)

    async def unit_settings(self, token: str, unit_id: str) -> Json:
        return await self.call("GET", f"/v1/admin/units/{unit_id}/settings", token=token)

    async def put_unit_settings(self, token: str, unit_id: str, body: Json) -> Json:
        return await self.call("PUT", f"/v1/admin/units/{unit_id}/settings", token=token, json=body)

    async def create_template(self, token: str, body: Json) -> Json:
        return await self.call("POST", "/v1/admin/reply-templates", token=token, json=body)

    async def delete_template(self, token: str, template_id: str) -> None:
        await self.call("DELETE", f"/v1/admin/reply-templates/{template_id}", token=token)

    async def audit(self, token: str, **params: Any) -> Json:
        return await self.call("GET", "/v1/admin/audit", token=token, params=params)

    # ---- citizens and the public
    async def upload(self, filename: str, content: bytes, media_type: str, forwarded_for: str | None = None) -> str:
        answer = await self.call("POST", "/v1/attachments", files={"file": (filename, content, media_type)},
                                 headers=_forwarded(forwarded_for))
        return answer["attachment_id"]

    async def attachment(self, attachment_id: str, token: str | None = None) -> httpx.Response:
        return await self.call("GET", f"/v1/attachments/{attachment_id}", token=token, expect_json=False)

    async def submit_post(self, body: Json, idempotency_key: str | None = None,
                          forwarded_for: str | None = None) -> Json:
        headers = _forwarded(forwarded_for) | ({"idempotency-key": idempotency_key} if idempotency_key else {})
        return await self.call("POST", "/v1/posts", json=body, headers=headers)

    async def post(self, tracking_number: str) -> Json:
        return await self.call("GET", f"/v1/posts/{tracking_number}")

    async def rate(self, tracking_number: str, body: Json, forwarded_for: str | None = None) -> Json:
        return await self.call("POST", f"/v1/posts/{tracking_number}/rating", json=body,
                               headers=_forwarded(forwarded_for))

    async def public_cases(self, **params: Any) -> Json:
        return await self.call("GET", "/v1/public/cases", params=params)


class StatsClient(_Api):
    """Stats: public rates, rankings, the monthly bulletin and the ledger (no personal data there)."""

    async def overview(self, **period: Any) -> Json:
        return await self.call("GET", "/v1/stats/overview", params=period)

    async def departments(self, **params: Any) -> Json:
        return await self.call("GET", "/v1/stats/departments", params=params)

    async def categories(self, **period: Any) -> Json:
        return await self.call("GET", "/v1/stats/categories", params=period)

    async def counties(self, **period: Any) -> Json:
        return await self.call("GET", "/v1/stats/counties", params=period)

    async def timeseries(self, granularity: str = "monthly", **period: Any) -> Json:
        return await self.call("GET", "/v1/stats/timeseries", params={"granularity": granularity, **period})

    async def monthly_report(self, month: str) -> Json:
        return await self.call("GET", "/v1/reports/monthly", params={"month": month, "format": "json"})

    async def download(self, path: str, params: Json) -> Download:
        response = await self.call("GET", path, params=params, expect_json=False)
        disposition = response.headers.get("content-disposition", "")
        filename = disposition.split("filename=", 1)[1].strip('"') if "filename=" in disposition else None
        return Download(response.content, response.headers.get("content-type", "application/octet-stream"), filename)
