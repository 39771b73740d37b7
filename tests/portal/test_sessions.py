"""The portal's session against a scripted intake (an httpx transport standing in for intake's HTTP API):
a token that intake stops accepting sends the person to sign in and back to the page, a forged form is
refused, and a back end that is down is a Chinese page with the right status, never a stack trace."""

from __future__ import annotations

import re

import httpx
import pytest

from services.portal.api import create_app
from services.portal.config import PortalSettings

PERSON = {"id": "p-1", "username": "staff.a", "display_name": "张三", "roles": ["unit_staff"],
          "unit": {"id": "unit_a", "name": "甲单位"}, "disabled": False, "must_change_password": False}


BOARD_CASE = {"tracking_number": "WZ2612-AAAA-BBBB", "title": "路灯不亮", "excerpt": "小区门口路灯坏了。",
              "category": {"code": "c1", "name": "城市管理"}, "department": {"id": "unit_a", "name": "甲单位"},
              "county": "章贡区", "status": "replied", "submitted_at": "2026-12-01T10:05:00Z",
              "attachments": [{"id": "a-1", "url": "/v1/attachments/a-1"}],
              "replies": [{"text": "已修复。", "at": "2026-12-02T02:00:00Z", "department": "甲单位"}]}


class ScriptedIntake:
    """Intake's answers for these tests: sign-in gives token-1; `valid` decides whether a token still works."""

    def __init__(self) -> None:
        self.valid = {"token-1"}
        self.calls: list[str] = []
        self.board_queries: list[dict] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.calls.append(f"{request.method} {request.url.path}")
        token = request.headers.get("authorization", "").removeprefix("Bearer ")
        if request.url.path == "/v1/auth/login":
            return httpx.Response(200, json={"token": "token-1", "token_type": "bearer",
                                             "expires_at": "2030-01-01T00:00:00Z", "person": PERSON})
        if request.url.path == "/v1/public/cases":
            self.board_queries.append(dict(request.url.params))
            return httpx.Response(200, json={"items": [BOARD_CASE], "page": 1, "page_size": 20, "total": 41})
        if request.url.path == "/v1/reference":
            return httpx.Response(200, json={"units": [{"id": "unit_a", "name": "甲单位", "categories": ["c1"]}],
                                             "categories": [{"code": "c1", "name": "城市管理"}],
                                             "counties": [{"name": "章贡区", "townships": ["水西镇"]}]})
        if request.url.path == "/v1/auth/providers":
            return httpx.Response(200, json={"password": True, "oidc": {"enabled": False}})
        if request.url.path.startswith("/v1/") and token not in self.valid:
            return httpx.Response(401, json={"error": {"code": "unauthorized", "message": "expired", "field": None}})
        if request.url.path == "/v1/cases":
            return httpx.Response(200, json={"items": [], "page": 1, "page_size": 20, "total": 0})
        return httpx.Response(404, json={"error": {"code": "not_found", "message": "no", "field": None}})


def down(request: httpx.Request) -> httpx.Response:
    raise httpx.ConnectError("connection refused", request=request)


@pytest.fixture
def intake() -> ScriptedIntake:
    return ScriptedIntake()


@pytest.fixture
async def portal(intake):
    app = create_app(PortalSettings(secret="test"),
                     intake_transport=httpx.MockTransport(intake), stats_transport=httpx.MockTransport(down))
    async with app.router.lifespan_context(app):
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://portal") as client:
            yield client


def csrf_of(html: str) -> str:
    return re.search(r'name="csrf_token" value="([^"]+)"', html).group(1)


async def sign_in(portal: httpx.AsyncClient, next_path: str = "") -> httpx.Response:
    page = await portal.get("/staff/login")
    return await portal.post("/staff/login", data={"csrf_token": csrf_of(page.text), "username": "staff.a",
                                                   "password": "pw", "next": next_path})


async def test_an_ended_intake_token_sends_the_person_to_sign_in_and_back(portal, intake):
    answer = await sign_in(portal)
    assert answer.status_code == 303 and answer.headers["location"] == "/staff"
    assert (await portal.get("/staff?q=WZ-1")).status_code == 200
    intake.valid.clear()  # intake ends the token (expired, disabled, signed out elsewhere)
    page = await portal.get("/staff?q=WZ-1")
    assert page.status_code == 401 and "登录已过期，请重新登录后继续" in page.text
    assert 'name="next" value="/staff?q=WZ-1"' in page.text
    intake.valid.add("token-1")
    back = await portal.post("/staff/login", data={"csrf_token": csrf_of(page.text), "username": "staff.a",
                                                   "password": "pw", "next": "/staff?q=WZ-1"})
    assert back.status_code == 303 and back.headers["location"] == "/staff?q=WZ-1"


async def test_a_staff_page_without_a_session_is_a_sign_in_form_with_401(portal):
    page = await portal.get("/staff/cases/c-1")
    assert page.status_code == 401 and "请先登录" in page.text and 'value="/staff/cases/c-1"' in page.text
    assert page.headers["content-security-policy"].endswith("frame-ancestors 'none'")


async def test_a_forged_staff_form_is_refused_in_chinese(portal, intake):
    await sign_in(portal)
    before = len(intake.calls)
    answer = await portal.post("/staff/cases/c-1/sign", data={"csrf_token": "forged"})
    assert answer.status_code == 403 and "页面已过期或表单来源不明" in answer.text
    assert not [c for c in intake.calls[before:] if "/sign" in c], "nothing reached intake"


async def test_sign_in_never_redirects_to_another_site(portal):
    answer = await sign_in(portal, next_path="//evil.example/x")
    assert answer.headers["location"] == "/staff"


async def test_a_back_end_that_is_down_is_a_chinese_page_not_a_stack_trace(portal):
    page = await portal.get("/dashboard")
    assert page.status_code == 503 and "系统暂时无法连接" in page.text and "Traceback" not in page.text
    ready = await portal.get("/readyz")
    assert ready.status_code == 503 and ready.json()["checks"] == {"intake": False, "stats": False}


async def test_the_public_board_shows_what_intake_publishes_and_keeps_the_filters(portal, intake):
    page = await portal.get("/board", params={"q": "路灯", "county": "章贡区", "status": "replied", "page": "2"})
    assert page.status_code == 200
    assert intake.board_queries[-1] == {"q": "路灯", "county": "章贡区", "status": "replied", "page": "2",
                                        "page_size": "20"}
    html = page.text
    assert "小区门口路灯坏了。" in html and "城市管理" in html and "甲单位回复" in html
    assert "2026年12月1日 18:05" in html
    assert 'src="/photos/a-1"' in html and 'rel="next"' in html and 'rel="prev"' in html
    assert 'value="路灯"' in html and '<option value="章贡区" selected>' in html
    bad = await portal.get("/board", params={"status": "nonsense"})
    assert bad.status_code == 422 and "请从列表中选择办理状态" in bad.text
