"""People, sign-in, authorisation and the audit trail, through the HTTP API against the real Kafka and
MongoDB-wire server: every command × role, lock-out, disable-takes-effect, CSRF, audit rows, contact reveal,
and what reaches the public topic."""

from __future__ import annotations

import asyncio
import csv
import io
import json
import os
import subprocess
import sys
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from harness.people import TEST_PASSWORD, create_person, sign_in
from services.common.mongo import new_client
from services.common.workdays import SHANGHAI
from services.intake.accounts_store import AccountsStore
from services.intake.people import AccountsService
from services.intake.ratelimit import SlidingWindowLimiter
from tests.intake.conftest import Intake, random_phone, read_topic

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[3]
UNIT, OTHER = "city_ecology", "city_education"


def error_of(response: httpx.Response) -> dict[str, Any]:
    body = response.json()
    assert set(body) == {"error"} and {"code", "message", "field"} <= set(body["error"]), body
    return body["error"]


# --------------------------------------------------------------------------------------------------
# Sign-in
# --------------------------------------------------------------------------------------------------


async def new_login(intake: Intake, roles=("unit_staff",), unit: str | None = UNIT, **extra) -> tuple[str, str]:
    username = f"t{os.urandom(5).hex()}"
    person_id = await create_person(intake.accounts, username, list(roles), unit, **extra)
    return username, person_id


async def test_login_answers_the_person_and_a_short_lived_token(intake: Intake) -> None:
    username, person_id = await new_login(intake, phone="13900001111", email="a@example.cn")
    r = await intake.client.post("/v1/auth/login", json={"username": username.upper(), "password": TEST_PASSWORD})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["token_type"] == "bearer" and body["expires_at"]
    person = body["person"]
    assert set(person) == {"id", "username", "display_name", "roles", "unit", "disabled", "must_change_password",
                           "notify", "created_at", "last_sign_in_at"}
    assert person["id"] == person_id and person["unit"] == {"id": UNIT, "name": "赣州市生态环境局"}
    assert person["notify"] == {"channels": ["sms"], "quiet_hours": None} and person["last_sign_in_at"]
    me = await intake.client.get("/v1/auth/me", headers={"Authorization": f"Bearer {body['token']}"})
    assert me.json() == {**person, "last_sign_in_at": me.json()["last_sign_in_at"]}
    assert "13900001111" not in me.text  # staff phones only for admins
    admin_view = await intake.client.get(f"/v1/admin/accounts/{person_id}", headers=intake.admin)
    assert admin_view.json()["phone"] == "13900001111"
    providers = (await intake.client.get("/v1/auth/providers")).json()
    assert providers == {"password": True, "oidc": {"enabled": False, "label": "统一身份认证登录"}}


async def test_wrong_password_and_unknown_user_answer_alike(intake: Intake) -> None:
    username, _ = await new_login(intake)
    wrong = await intake.client.post("/v1/auth/login", json={"username": username, "password": "not-the-password"})
    unknown = await intake.client.post("/v1/auth/login", json={"username": "nobody-" + username,
                                                               "password": "not-the-password"})
    assert wrong.status_code == unknown.status_code == 401
    assert error_of(wrong) == error_of(unknown) == {"code": "invalid_credentials", "field": "password",
                                                    "message": "wrong user name or password"}
    missing = await intake.client.post("/v1/auth/login", json={"username": username})
    assert missing.status_code == 422 and error_of(missing)["field"] == "password"


@pytest.mark.parametrize("known", [True, False])
async def test_five_failures_lock_the_name_with_retry_after(intake: Intake, known: bool) -> None:
    username = (await new_login(intake))[0] if known else f"ghost{os.urandom(4).hex()}"
    for _ in range(5):
        r = await intake.client.post("/v1/auth/login", json={"username": username, "password": "wrong-password!"})
        assert r.status_code == 401
    locked = await intake.client.post("/v1/auth/login", json={"username": username, "password": TEST_PASSWORD})
    assert locked.status_code == 423 and error_of(locked)["code"] == "account_locked"
    assert 800 <= int(locked.headers["Retry-After"]) <= 900
    intake.clock.advance(timedelta(minutes=16))
    try:
        after = await intake.client.post("/v1/auth/login", json={"username": username, "password": TEST_PASSWORD})
        assert after.status_code == (200 if known else 401)
    finally:
        intake.clock.offset -= timedelta(minutes=16)


async def test_failures_recorded_at_the_same_moment_for_a_new_name_all_land(mongo_url, run_id) -> None:
    """The first failed sign-in of a name creates its failure record: concurrent ones race to insert it, and the
    loser must not fail (it would turn a wrong password into a 500)."""
    client = new_client(mongo_url)
    store = AccountsStore(client[f"wenzheng_intake_race_{run_id}"])
    try:
        for name in range(20):
            await asyncio.gather(*(store.record_failure(f"race.{name}", datetime.now(UTC), []) for _ in range(8)))
            assert len(await store.failures_of(f"race.{name}")) == 1
    finally:
        await client.drop_database(f"wenzheng_intake_race_{run_id}")
        await client.close()


async def test_too_many_attempts_from_one_address_are_rate_limited(intake: Intake) -> None:
    accounts = intake.accounts
    saved, accounts.ip_limiter = accounts.ip_limiter, SlidingWindowLimiter(3, 60)
    try:
        answers = [await intake.client.post("/v1/auth/login", json={"username": f"x{os.urandom(4).hex()}",
                                                                   "password": "y"}) for _ in range(4)]
    finally:
        accounts.ip_limiter = saved
    assert [a.status_code for a in answers] == [401, 401, 401, 429]
    assert error_of(answers[-1])["code"] == "rate_limited" and int(answers[-1].headers["Retry-After"]) >= 1


async def test_behind_a_trusted_proxy_the_limit_counts_the_forwarded_address(intake: Intake) -> None:
    accounts = intake.accounts
    saved, accounts.ip_limiter = accounts.ip_limiter, SlidingWindowLimiter(2, 60)
    intake.settings.trusted_proxies = ["10.0.0.1"]  # the harness client's address: say it is the portal
    try:
        tried: dict[str, str] = {}

        async def attempt(forwarded: str) -> int:
            username = f"x{os.urandom(4).hex()}"
            r = await intake.client.post("/v1/auth/login", json={"username": username, "password": "y"},
                                         headers={"X-Forwarded-For": forwarded})
            if r.status_code == 401:
                tried[username] = forwarded.split(",")[0]
            return r.status_code
        assert [await attempt("203.0.113.5") for _ in range(3)] == [401, 401, 429]
        assert await attempt("203.0.113.6") == 401  # another citizen behind the same portal is not blocked
        assert await attempt("203.0.113.6, 10.0.0.1") == 401  # the proxy's own hop is skipped
    finally:
        accounts.ip_limiter = saved
        intake.settings.trusted_proxies = []
    rows = (await intake.client.get("/v1/admin/audit", params={"action": "sign_in_failed", "page_size": 500},
                                    headers=intake.admin)).json()["items"]
    seen = {row["detail"].removeprefix("user name "): row["ip"] for row in rows
            if row["detail"] and row["detail"].removeprefix("user name ") in tried}
    assert seen == tried  # the audit trail names the citizen's address, not the portal's


async def test_forged_expired_and_logged_out_tokens_are_refused(intake: Intake) -> None:
    forged = await intake.client.get("/v1/cases", headers={"Authorization": "Bearer forged-token"})
    assert forged.status_code == 401 and error_of(forged)["code"] == "invalid_token"
    assert error_of(await intake.client.get("/v1/cases"))["code"] == "unauthorized"
    username, _ = await new_login(intake)
    headers = await sign_in(intake.client, username)
    intake.clock.advance(timedelta(days=31))
    try:
        expired = await intake.client.get("/v1/auth/me", headers=headers)
    finally:
        intake.clock.offset -= timedelta(days=31)
    assert expired.status_code == 401 and error_of(expired)["code"] == "invalid_token"
    headers = await sign_in(intake.client, username)
    assert (await intake.client.post("/v1/auth/logout", headers=headers)).status_code == 204
    assert (await intake.client.get("/v1/auth/me", headers=headers)).status_code == 401


async def test_a_disabled_account_stops_within_the_cache_time_everywhere(intake: Intake) -> None:
    username, person_id = await new_login(intake)
    headers = await sign_in(intake.client, username)
    assert (await intake.client.get("/v1/auth/me", headers=headers)).status_code == 200
    # another replica disables the person: this one trusts its cache for at most 30 s
    await intake.accounts.store.people.update_one({"_id": person_id}, {"$set": {"disabled": True}})
    assert (await intake.client.get("/v1/auth/me", headers=headers)).status_code == 200
    intake.clock.advance(timedelta(seconds=31))
    try:
        refused = await intake.client.get("/v1/cases", headers=headers)
    finally:
        intake.clock.offset -= timedelta(seconds=31)
    assert refused.status_code == 401 and error_of(refused)["code"] == "invalid_token"
    login = await intake.client.post("/v1/auth/login", json={"username": username, "password": TEST_PASSWORD})
    assert login.status_code == 403 and error_of(login)["code"] == "account_disabled"


async def test_a_signed_in_request_does_not_ask_the_database_and_a_logout_reaches_other_replicas(
        intake: Intake) -> None:
    username, _ = await new_login(intake)
    headers = await sign_in(intake.client, username)
    store = intake.accounts.store
    reads = 0
    original = store.session

    async def counting(digest: str):
        nonlocal reads
        reads += 1
        return await original(digest)
    store.session = counting
    try:
        for _ in range(20):
            assert (await intake.client.get("/v1/cases", headers=headers)).status_code == 200
    finally:
        del store.session
    assert reads <= 1  # the first one, at most; then the session is trusted from memory for 30 s
    # another replica (its own service and cache, the same database) signs the person out
    other = AccountsService(AccountsStore(store.db), intake.settings, intake.clock, intake.runtime.reference)
    token = headers["Authorization"].removeprefix("Bearer ")
    await other.logout(await other.authenticate(token))
    assert (await intake.client.get("/v1/auth/me", headers=headers)).status_code == 200  # still cached here
    intake.clock.advance(timedelta(seconds=31))
    try:
        assert (await intake.client.get("/v1/auth/me", headers=headers)).status_code == 401
    finally:
        intake.clock.offset -= timedelta(seconds=31)


async def test_disabling_through_the_admin_api_takes_effect_at_once(intake: Intake) -> None:
    username, person_id = await new_login(intake)
    headers = await sign_in(intake.client, username)
    r = await intake.client.patch(f"/v1/admin/accounts/{person_id}", json={"disabled": True}, headers=intake.admin)
    assert r.status_code == 200 and r.json()["disabled"] is True
    assert (await intake.client.get("/v1/auth/me", headers=headers)).status_code == 401
    r = await intake.client.patch(f"/v1/admin/accounts/{person_id}", json={"disabled": False}, headers=intake.admin)
    assert (await intake.client.post("/v1/auth/login", json={"username": username,
                                                             "password": TEST_PASSWORD})).status_code == 200


async def test_a_cookie_session_needs_the_csrf_header_on_every_post(intake: Intake) -> None:
    _, case_id = await intake.assigned(UNIT)
    username, _ = await new_login(intake)
    transport = httpx.ASGITransport(app=intake.app, client=("10.0.0.9", 5555))
    async with httpx.AsyncClient(transport=transport, base_url="http://intake") as browser:
        r = await browser.post("/v1/auth/login", params={"cookie": "true"},
                               json={"username": username, "password": TEST_PASSWORD})
        assert r.status_code == 200
        set_cookie = r.headers.get_list("set-cookie")
        session = next(c for c in set_cookie if c.startswith("wenzheng_session="))
        assert "HttpOnly" in session and "SameSite=lax" in session and "Secure" not in session  # not production
        csrf = r.json()["csrf_token"]
        assert (await browser.get(f"/v1/cases/{case_id}")).status_code == 200  # reading needs no CSRF header
        missing = await browser.post(f"/v1/cases/{case_id}/sign")
        assert missing.status_code == 403 and error_of(missing) == {
            "code": "csrf_failed", "field": "X-CSRF-Token",
            "message": "a cookie-authenticated request needs the X-CSRF-Token header"}
        wrong = await browser.post(f"/v1/cases/{case_id}/sign", headers={"X-CSRF-Token": "guess"})
        assert wrong.status_code == 403
        # a forged CSRF cookie equal to the header is not enough: it must be this session's
        forged = await browser.post(f"/v1/cases/{case_id}/sign", headers={"X-CSRF-Token": "guess",
                                                                          "Cookie": f"{session.split(';')[0]}; "
                                                                                    "wenzheng_csrf=guess"})
        assert forged.status_code == 403
        ok = await browser.post(f"/v1/cases/{case_id}/sign", headers={"X-CSRF-Token": csrf})
        assert ok.status_code == 200 and ok.json()["status"] == "signed"


async def test_a_reset_password_must_be_changed_before_any_case_work(intake: Intake) -> None:
    username, person_id = await new_login(intake)
    r = await intake.client.post(f"/v1/admin/accounts/{person_id}/reset-password", headers=intake.admin)
    temporary = r.json()["temporary_password"]
    headers = await sign_in(intake.client, username, temporary)
    assert (await intake.client.get("/v1/auth/me", headers=headers)).json()["must_change_password"] is True
    blocked = await intake.client.get("/v1/cases", headers=headers)
    assert blocked.status_code == 403 and error_of(blocked)["code"] == "password_change_required"
    weak = await intake.client.post("/v1/auth/password", headers=headers,
                                    json={"current_password": temporary, "new_password": "password123"})
    assert weak.status_code == 422 and error_of(weak)["code"] == "weak_password"
    assert error_of(weak)["field"] == "new_password"
    wrong = await intake.client.post("/v1/auth/password", headers=headers,
                                     json={"current_password": "not-it-at-all", "new_password": "a-new-river-lamp-9"})
    assert wrong.status_code == 401 and error_of(wrong) | {"message": ""} == {
        "code": "invalid_credentials", "field": "current_password", "message": ""}
    done = await intake.client.post("/v1/auth/password", headers=headers,
                                    json={"current_password": temporary, "new_password": "a-new-river-lamp-9"})
    assert done.status_code == 204
    assert (await intake.client.get("/v1/cases", headers=headers)).status_code == 200


# --------------------------------------------------------------------------------------------------
# Every command × role
# --------------------------------------------------------------------------------------------------


@dataclass
class Cast:
    people: dict[str, dict[str, str]]  # role label -> bearer headers
    ids: dict[str, str]


ROLES = ("staff", "other_unit_staff", "lead", "supervisor", "admin")


@pytest.fixture(scope="module")
async def cast(intake: Intake) -> Cast:
    people, ids = {}, {}
    for label, roles, unit in (("staff", ["unit_staff"], UNIT), ("other_unit_staff", ["unit_staff"], OTHER),
                               ("lead", ["unit_lead"], UNIT), ("supervisor", ["supervisor"], None),
                               ("admin", ["admin"], None)):
        ids[label], people[label] = await intake.person(roles, unit, display_name=f"测试员{label}")
    return Cast(people, ids)


async def _ok(r: httpx.Response) -> None:
    assert r.status_code in (200, 202), r.text


async def case_in(intake: Intake, cast: Cast, state: str) -> str:
    """A case of UNIT in ``state``, brought there by the cast."""
    _, case_id = await intake.assigned(UNIT)
    post = intake.client.post
    staff = cast.people["staff"]
    if state in ("signed", "pending_extension", "pending_reply", "replied"):
        await _ok(await post(f"/v1/cases/{case_id}/sign", headers=staff))
    if state == "pending_extension":
        await _ok(await post(f"/v1/cases/{case_id}/extension", headers=staff,
                             json={"reason": "需要现场勘查", "extra_working_days": 3}))
    if state == "replied":
        await _ok(await post(f"/v1/cases/{case_id}/reply", headers=staff, json={"text": "已处理。"}))
    if state == "pending_reply":
        settings = f"/v1/admin/units/{UNIT}/settings"
        # the unit turns approval on just for this reply
        assert (await intake.client.put(settings, json={"reply_approval_required": True},
                                        headers=intake.admin)).status_code == 200
        try:
            r = await post(f"/v1/cases/{case_id}/reply", headers=staff, json={"text": "拟答复：已处理。"})
            assert r.status_code == 202 and r.json()["pending_reply"]["text"] == "拟答复：已处理。", r.text
        finally:
            await intake.client.put(settings, json={"reply_approval_required": False}, headers=intake.admin)
    return case_id


# command -> (path, body, the state it needs, the roles that may, the status it leads to)
COMMANDS: dict[str, tuple[str, dict[str, Any] | None, str, set[str], str | None]] = {
    "sign": ("sign", None, "assigned", {"staff", "lead"}, "signed"),
    "return": ("return", {"reason": "不属于本单位职责"}, "assigned", {"staff", "lead"}, "returned"),
    "reply": ("reply", {"text": "已安排维修。"}, "signed", {"staff", "lead"}, "replied"),
    "request_extension": ("extension", {"reason": "需要协调", "extra_working_days": 2}, "signed", {"staff", "lead"},
                          "signed"),
    "approve_reply": ("reply/approve", None, "pending_reply", {"lead"}, "replied"),
    "reject_reply": ("reply/reject", {"reason": "请补充处理结果"}, "pending_reply", {"lead"}, "signed"),
    "approve_extension": ("extension/approve", None, "pending_extension", {"supervisor"}, "extended"),
    "deny_extension": ("extension/deny", {"reason": "理由不足"}, "pending_extension", {"supervisor"}, "signed"),
    "reassign": ("reassign", {"category": "urban_management", "department_id": OTHER, "reason": "职责调整"},
                 "assigned", {"supervisor"}, "assigned"),
    "reopen": ("reopen", {"reason": "群众不满意"}, "replied", {"supervisor"}, "reopened"),
    "close": ("close", {"reason": "已办结"}, "assigned", {"supervisor"}, "closed"),
    "flag": ("flag", {"note": "典型"}, "assigned", {"supervisor"}, "assigned"),
    "reveal_contact": ("contact", None, "assigned", {"staff", "lead", "supervisor"}, None),
    "notice": ("notices", {"method": "phone", "note": "请尽快办理", "reply_by": "2099-12-31"}, "signed",
               {"supervisor"}, "signed"),
    "callback": ("callback", {"reached": True, "rating": "satisfied", "note": "电话回访"}, "replied",
                 {"supervisor"}, None),  # rated for the citizen, then closed automatically
}


@pytest.mark.parametrize("action", sorted(COMMANDS))
async def test_every_command_for_every_role(intake: Intake, cast: Cast, action: str) -> None:
    path, body, state, allowed, leads_to = COMMANDS[action]
    refused_case = await case_in(intake, cast, state)
    for role in ROLES:
        if role in allowed:
            continue
        view = await intake.client.get(f"/v1/cases/{refused_case}", headers=cast.people[role])
        if role in ("other_unit_staff", "admin"):
            assert view.status_code == 403, (role, view.text)  # may not even read it
        else:
            assert action not in view.json()["allowed_actions"], (role, view.json()["allowed_actions"])
        r = await intake.client.post(f"/v1/cases/{refused_case}/{path}", json=body, headers=cast.people[role])
        assert r.status_code == 403, (action, role, r.status_code, r.text)
        assert error_of(r)["code"] == "forbidden"
    for role in sorted(allowed):
        case_id = await case_in(intake, cast, state)
        view = (await intake.client.get(f"/v1/cases/{case_id}", headers=cast.people[role])).json()
        assert action in view["allowed_actions"], (role, view["allowed_actions"])
        r = await intake.client.post(f"/v1/cases/{case_id}/{path}", json=body, headers=cast.people[role])
        assert r.status_code == 200, (action, role, r.text)
        if leads_to:
            assert r.json()["status"] == leads_to
            last = r.json()["timeline"][-1]
            assert last["actor"]["id"] == cast.ids[role] and last["actor"]["display_name"] == f"测试员{role}"
        rows = (await intake.client.get("/v1/admin/audit", params={"case_id": case_id, "person_id": cast.ids[role]},
                                        headers=intake.admin)).json()["items"]
        assert action in [row["action"] for row in rows], rows


async def test_allowed_actions_are_what_this_person_may_do_now(intake: Intake, cast: Cast) -> None:
    case_id = await case_in(intake, cast, "signed")
    seen = {role: sorted((await intake.client.get(f"/v1/cases/{case_id}",
                                                  headers=cast.people[role])).json().get("allowed_actions", []))
            for role in ("staff", "lead", "supervisor")}
    assert seen == {"staff": ["reply", "request_extension", "return", "reveal_contact"],
                    "lead": ["reply", "request_extension", "return", "reveal_contact"],
                    "supervisor": ["close", "flag", "notice", "reassign", "reveal_contact"]}


# --------------------------------------------------------------------------------------------------
# Reply approval, templates, contact reveal, the audit trail and the public topic
# --------------------------------------------------------------------------------------------------


async def test_a_pending_reply_is_not_public_until_the_lead_approves(intake: Intake, cast: Cast) -> None:
    case_id = await case_in(intake, cast, "pending_reply")
    doc = await intake.runtime.store.get(case_id)
    public = (await intake.client.get(f"/v1/posts/{doc['tracking_number']}")).json()
    assert public["replies"] == [] and "拟答复" not in json.dumps(public, ensure_ascii=False)
    assert all(t["type"] != "reply_submitted" for t in public["timeline"])
    staff_view = (await intake.client.get(f"/v1/cases/{case_id}", headers=cast.people["staff"])).json()
    assert staff_view["pending_reply"]["author_id"] == cast.ids["staff"]
    assert staff_view["timeline"][-1]["type"] == "reply_submitted"
    again = await intake.client.post(f"/v1/cases/{case_id}/reply", headers=cast.people["lead"], json={"text": "x"})
    assert again.status_code == 409 and error_of(again)["code"] == "reply_pending"
    approved = await intake.client.post(f"/v1/cases/{case_id}/reply/approve", headers=cast.people["lead"])
    assert approved.status_code == 200 and approved.json()["replies"][0]["text"] == "拟答复：已处理。"
    events = [json.loads(m["value"]) for m in await read_topic(
        intake.bootstrap, intake.names.case_events,
        until=lambda ms: any(case_id in m["value"] and "case.replied" in m["value"] for m in ms))
        if m["key"] == case_id]
    replied = next(e for e in events if e["type"].endswith("case.replied"))
    assert replied["data"]["actor_id"] == cast.ids["lead"]


async def test_reply_templates_per_unit(intake: Intake, cast: Cast) -> None:
    made = await intake.client.post("/v1/admin/reply-templates", headers=intake.admin,
                                    json={"unit_id": UNIT, "title": "已修复", "text": "您反映的问题已处理完毕。"})
    assert made.status_code == 201
    template = made.json()
    assert template["unit"] == {"id": UNIT, "name": "赣州市生态环境局"}
    mine = (await intake.client.get("/v1/reply-templates", headers=cast.people["staff"])).json()["items"]
    assert template in mine
    theirs = await intake.client.get("/v1/reply-templates", params={"unit_id": UNIT},
                                     headers=cast.people["other_unit_staff"])
    assert theirs.status_code == 403
    other = await intake.client.post("/v1/admin/reply-templates", headers=intake.admin,
                                     json={"unit_id": OTHER, "title": "他单位", "text": "无关"})
    case_id = await case_in(intake, cast, "signed")
    wrong = await intake.client.post(f"/v1/cases/{case_id}/reply", headers=cast.people["staff"],
                                     json={"text": "答复", "template_id": other.json()["id"]})
    assert wrong.status_code == 422 and error_of(wrong)["field"] == "template_id"
    r = await intake.client.post(f"/v1/cases/{case_id}/reply", headers=cast.people["staff"],
                                 json={"text": template["text"], "template_id": template["id"]})
    assert r.status_code == 200
    rows = (await intake.client.get("/v1/admin/audit", params={"case_id": case_id, "action": "reply"},
                                    headers=intake.admin)).json()["items"]
    assert template["id"] in rows[0]["detail"]
    edited = await intake.client.put(f"/v1/admin/reply-templates/{template['id']}", headers=intake.admin,
                                     json={"title": "已处理"})
    assert edited.json()["title"] == "已处理"
    assert (await intake.client.delete(f"/v1/admin/reply-templates/{template['id']}",
                                       headers=intake.admin)).status_code == 204
    assert (await intake.client.delete(f"/v1/admin/reply-templates/{template['id']}",
                                       headers=intake.admin)).status_code == 404
    assert (await intake.client.post("/v1/admin/reply-templates", headers=cast.people["supervisor"],
                                     json={"unit_id": UNIT, "title": "x", "text": "y"})).status_code == 403


async def test_contact_reveal_for_the_unit_holding_the_case_audited(intake: Intake, cast: Cast) -> None:
    phone = random_phone()
    _, case_id = await intake.assigned(UNIT, phone=phone, name="李四")
    r = await intake.client.post(f"/v1/cases/{case_id}/contact", headers=cast.people["staff"])
    assert r.status_code == 200 and r.json() == {"phone": phone, "name": "李四"}
    assert r.headers["Cache-Control"] == "no-store"
    for role in ("other_unit_staff", "admin"):
        assert (await intake.client.post(f"/v1/cases/{case_id}/contact",
                                         headers=cast.people[role])).status_code == 403
    _, anonymous = await intake.assigned(UNIT, anonymous=True, name="王五")
    r = await intake.client.post(f"/v1/cases/{anonymous}/contact", headers=cast.people["supervisor"])
    assert r.json()["name"] is None and r.json()["phone"]
    rows = (await intake.client.get("/v1/admin/audit", params={"action": "reveal_contact", "case_id": case_id},
                                    headers=intake.admin)).json()["items"]
    assert [(row["person_id"], row["role"]) for row in rows] == [(cast.ids["staff"], "unit_staff")]
    assert phone not in json.dumps(rows) and "李四" not in json.dumps(rows, ensure_ascii=False)


async def test_audit_rows_filter_and_export_as_csv(intake: Intake, cast: Cast) -> None:
    case_id = await case_in(intake, cast, "replied")
    rows = (await intake.client.get("/v1/admin/audit", params={"case_id": case_id},
                                    headers=intake.admin)).json()["items"]
    assert [row["action"] for row in rows] == ["reply", "sign"]  # newest first
    assert {row["unit_id"] for row in rows} == {UNIT} and {row["role"] for row in rows} == {"unit_staff"}
    by_unit = (await intake.client.get("/v1/admin/audit", params={"unit_id": UNIT, "action": "sign",
                                                                  "page_size": 500},
                                       headers=intake.admin)).json()
    assert by_unit["total"] >= 1 and {row["action"] for row in by_unit["items"]} == {"sign"}
    exported = await intake.client.get("/v1/admin/audit", params={"case_id": case_id, "format": "csv"},
                                       headers=intake.admin)
    assert exported.headers["content-type"].startswith("text/csv")
    text = exported.content.decode("utf-8")
    assert text.startswith("\ufeff")
    table = list(csv.reader(io.StringIO(text.lstrip("\ufeff"))))
    assert table[0][:6] == ["时间（北京时间）", "人员编号", "姓名", "角色", "单位", "操作"]
    assert [row[5] for row in table[1:]] == ["答复", "签收"] and table[1][4] == "赣州市生态环境局"
    assert table[1][3] == "承办人员"
    sign_ins = (await intake.client.get("/v1/admin/audit", params={"person_id": cast.ids["lead"],
                                                                   "action": "sign_in"},
                                        headers=intake.admin)).json()["items"]
    assert sign_ins and sign_ins[0]["detail"] == "password"
    today = intake.clock.now().astimezone(SHANGHAI).date().isoformat()  # the filter's dates are Shanghai's
    assert (await intake.client.get("/v1/admin/audit", params={"since": today, "until": today, "case_id": case_id},
                                    headers=intake.admin)).json()["total"] == 2
    assert (await intake.client.get("/v1/admin/audit", headers=cast.people["supervisor"])).status_code == 403
    bad = await intake.client.get("/v1/admin/audit", params={"since": "yesterday"}, headers=intake.admin)
    assert bad.status_code == 422 and error_of(bad)["field"] == "since"


async def test_failed_sign_ins_and_account_changes_are_audited(intake: Intake) -> None:
    username, person_id = await new_login(intake)
    await intake.client.post("/v1/auth/login", json={"username": username, "password": "nope-nope-nope"})
    await intake.client.patch(f"/v1/admin/accounts/{person_id}", json={"display_name": "新名字"},
                              headers=intake.admin)
    failed = (await intake.client.get("/v1/admin/audit", params={"person_id": person_id, "action": "sign_in_failed"},
                                      headers=intake.admin)).json()["items"]
    assert len(failed) == 1 and failed[0]["ip"] == "10.0.0.1"
    changes = (await intake.client.get("/v1/admin/audit", params={"action": "account_updated"},
                                       headers=intake.admin)).json()["items"]
    assert any(person_id in (row["detail"] or "") for row in changes)


async def test_the_public_topic_has_staff_ids_but_no_staff_names_or_phones(intake: Intake, cast: Cast) -> None:
    phone = random_phone()
    _, case_id = await intake.assigned(UNIT, phone=phone)
    for path, who, body in (("sign", "staff", None), ("flag", "supervisor", {"note": "典型"}),
                            ("reply", "lead", {"text": "已答复。"})):
        await _ok(await intake.client.post(f"/v1/cases/{case_id}/{path}", headers=cast.people[who], json=body))
    await intake.client.post(f"/v1/cases/{case_id}/contact", headers=cast.people["staff"])
    messages = await read_topic(intake.bootstrap, intake.names.case_events,
                                until=lambda ms: sum(m["key"] == case_id for m in ms) >= 5)
    mine = [json.loads(m["value"]) for m in messages if m["key"] == case_id]
    by_type = {e["type"].removeprefix("gov.wenzheng.case."): e["data"] for e in mine}
    assert by_type["signed"]["actor_id"] == cast.ids["staff"]
    assert by_type["flagged"]["actor_id"] == cast.ids["supervisor"]
    assert by_type["replied"]["actor_id"] == cast.ids["lead"]
    assert "actor_id" not in by_type["submitted"] and "actor_id" not in by_type["assigned"]
    everything = "\n".join(m["value"] for m in messages)
    assert phone not in everything and phone[-8:] not in everything
    for label in ROLES:
        assert f"测试员{label}" not in everything


async def test_staff_contacts_go_to_the_private_compacted_topic(intake: Intake) -> None:
    _, person_id = await new_login(intake, phone="13700002222",
                                          notify={"channels": ["sms"], "quiet_hours": {"start": "22:00",
                                                                                      "end": "07:30"}})
    messages = await read_topic(intake.bootstrap, intake.names.staff_contacts,
                                until=lambda ms: any(m["key"] == person_id for m in ms))
    record = json.loads(next(m["value"] for m in messages if m["key"] == person_id))["data"]
    assert record == {"person_id": person_id, "unit_id": UNIT, "roles": ["unit_staff"], "phone": "13700002222",
                      "channels": ["sms"], "quiet_hours": {"start": "22:00", "end": "07:30"}, "active": True,
                      "updated_at": record["updated_at"]}
    await intake.client.patch(f"/v1/admin/accounts/{person_id}", json={"disabled": True}, headers=intake.admin)
    messages = await read_topic(intake.bootstrap, intake.names.staff_contacts,
                                until=lambda ms: sum(m["key"] == person_id for m in ms) >= 2)
    latest = [json.loads(m["value"])["data"] for m in messages if m["key"] == person_id][-1]
    assert latest["active"] is False
    public = await read_topic(intake.bootstrap, intake.names.case_events)
    assert "13700002222" not in "".join(m["value"] for m in public)


# --------------------------------------------------------------------------------------------------
# Admin: accounts and machine tokens; bad input
# --------------------------------------------------------------------------------------------------


async def test_admin_accounts_bad_input_is_a_clear_4xx(intake: Intake, cast: Cast) -> None:
    def account(**overrides: Any) -> dict[str, Any]:
        return {"username": f"n{os.urandom(4).hex()}", "display_name": "新人", "roles": ["unit_staff"],
                "unit_id": UNIT, **overrides}
    post = intake.client.post
    created = await post("/v1/admin/accounts", json=account(), headers=intake.admin)
    assert created.status_code == 201 and created.json()["temporary_password"]
    assert created.json()["must_change_password"] is True
    dup = await post("/v1/admin/accounts", json=account(username=created.json()["username"]), headers=intake.admin)
    assert dup.status_code == 409 and error_of(dup)["field"] == "username"
    cases: list[tuple[dict[str, Any], int, str]] = [
        (account(unit_id=None), 422, "roles"),
        (account(roles=["supervisor"]), 422, "roles"),
        (account(unit_id="no_such_unit"), 422, "unit_id"),
        (account(roles=["king"]), 422, "roles[0]"),
        (account(password="password123"), 422, "password"),
        (account(username="Has Space"), 422, "username"),
        (account(phone="12345"), 422, "phone"),
    ]
    for body, status, field in cases:
        r = await post("/v1/admin/accounts", json=body, headers=intake.admin)
        assert r.status_code == status and error_of(r)["field"] == field, (body, r.text)
    assert (await post("/v1/admin/accounts", json=account(), headers=cast.people["supervisor"])).status_code == 403
    assert (await intake.client.patch("/v1/admin/accounts/p-ffffffffffffffff", json={"disabled": True},
                                      headers=intake.admin)).status_code == 404
    assert (await intake.client.patch("/v1/admin/accounts/nonsense", json={"disabled": True},
                                      headers=intake.admin)).status_code == 422
    listed = (await intake.client.get("/v1/admin/accounts", params={"unit_id": UNIT, "role": "unit_lead"},
                                      headers=intake.admin)).json()
    assert cast.ids["lead"] in [p["id"] for p in listed["items"]]
    assert {r for p in listed["items"] for r in p["roles"]} >= {"unit_lead"}
    units = await intake.client.get("/v1/admin/units/no_such/settings", headers=intake.admin)
    assert units.status_code == 404


async def test_machine_tokens_are_named_and_revocable(intake: Intake) -> None:
    made = await intake.client.post("/v1/admin/machine-tokens", headers=intake.admin,
                                    json={"name": "市12345热线", "kind": "open311"})
    assert made.status_code == 201
    token = made.json()
    listed = (await intake.client.get("/v1/admin/machine-tokens", headers=intake.admin)).json()["items"]
    assert {"id": token["id"], "name": "市12345热线", "kind": "open311", "active": True}.items() <= listed[-1].items()
    assert "token" not in listed[-1]

    async def open311(key: str) -> int:
        r = await intake.client.post("/open311/v2/requests.json", data={
            "api_key": key, "service_code": "urban_management", "description": "路灯不亮", "phone": random_phone(),
            "address_string": "章贡区和谐路 12 号"})
        return r.status_code
    assert await open311(token["token"]) == 201
    assert (await intake.client.delete(f"/v1/admin/machine-tokens/{token['id']}",
                                       headers=intake.admin)).status_code == 204
    assert await open311(token["token"]) == 403
    assert (await intake.client.delete(f"/v1/admin/machine-tokens/{token['id']}",
                                       headers=intake.admin)).status_code == 404


# --------------------------------------------------------------------------------------------------
# Commands: the first admin and the local demo accounts
# --------------------------------------------------------------------------------------------------


def run_intake(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "services.intake", *args], cwd=ROOT, capture_output=True,
                          text=True, env={**os.environ, **env}, timeout=120)


async def test_create_admin_and_demo_accounts_commands(intake: Intake, tmp_path: Path, mongo_url: str) -> None:
    env = {"WENZHENG_MONGO_URL": mongo_url, "WENZHENG_INTAKE_DATABASE": intake.settings.database,
           "WENZHENG_INTAKE_PASSWORD_TIME_COST": "1", "WENZHENG_INTAKE_PASSWORD_MEMORY_KIB": "1024",
           "WENZHENG_INTAKE_PASSWORD_PARALLELISM": "1"}
    password_file = tmp_path / "pw"
    password_file.write_text("the-first-admin-lamp-77\n")
    first = run_intake(["create-admin", "--username", "root-admin", "--password-file", str(password_file)], env)
    assert first.returncode == 0, first.stderr
    assert (await intake.client.post("/v1/auth/login", json={"username": "root-admin",
                                                             "password": "the-first-admin-lamp-77"})).status_code == 200
    again = run_intake(["create-admin", "--username", "root-admin", "--password-file", str(password_file)], env)
    assert again.returncode == 1 and "taken" in again.stdout

    out = tmp_path / "local" / "credentials.json"
    made = run_intake(["demo-accounts", "--out", str(out)], env)
    assert made.returncode == 0, made.stderr
    assert (out.stat().st_mode & 0o077) == 0
    content = json.loads(out.read_text(encoding="utf-8"))
    accounts = content["accounts"]
    assert {"supervisor", "admin", "lead.zhanggong-gov", "staff.zhanggong-gov"} <= set(accounts)
    assert content["open311_api_keys"]
    rerun = run_intake(["demo-accounts", "--out", str(out)], env)
    assert rerun.returncode == 0 and json.loads(out.read_text(encoding="utf-8")) == content  # idempotent
    lead = accounts["lead.zhanggong-gov"]
    signed = await intake.client.post("/v1/auth/login", json={"username": "lead.zhanggong-gov",
                                                              "password": lead["password"]})
    assert signed.status_code == 200 and signed.json()["person"]["roles"] == ["unit_lead"]

