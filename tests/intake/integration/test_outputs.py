"""What people read from intake (issue #15): names from the shared reference data, the responsible unit, the
SMS conversation both ways, Shanghai dates, invalid closes, the reference endpoint and secret comparisons.

Real Kafka and MongoDB-wire server (the intake harness); one test serves intake on a real socket."""

from __future__ import annotations

import asyncio
import contextlib
import json
import re

import uvicorn

from harness.ports import free_port
from services.common.events import parse_event
from services.common.people import people_deadline
from services.common.reference import reference
from tests.intake.conftest import Intake, eventually, random_phone, read_topic

CJK = re.compile(r"[\u4e00-\u9fff]")


async def _view(intake: Intake, case_id: str) -> dict:
    return (await intake.client.get(f"/v1/cases/{case_id}", headers=intake.supervisor)).json()


async def test_after_triage_return_and_reassignment_code_and_name_match_and_the_unit_is_current(
        intake: Intake) -> None:
    accepted = await intake.post()
    tn = accepted["tracking_number"]
    case_id = (await intake.case_doc(tn))["_id"]
    # the router wrote the code as the name (as it did): the case shows the contract's Chinese name
    await intake.decide(tn, department_id="zhanggong_gov", category="labor_social_security",
                        category_name="labor_social_security")
    await intake.wait_status(tn, "assigned")
    view = await _view(intake, case_id)
    assert view["category"] == {"code": "labor_social_security", "name": "劳动和社会保障"}
    assert view["department"] == {"id": "zhanggong_gov", "name": "章贡区人民政府"}

    r = await intake.client.post(f"/v1/cases/{case_id}/return", headers=intake.dept("zhanggong_gov"),
                                 json={"reason": "不属于本单位职责"})
    assert r.status_code == 200, r.text
    assert r.json()["department"] is None and r.json()["deadline"] is None
    public = (await intake.client.get(f"/v1/posts/{tn}")).json()
    assert public["department"] is None and public["status"] == "returned"
    # the unit that returned it no longer sees it as its own
    own = (await intake.client.get("/v1/cases", headers=intake.dept("zhanggong_gov"),
                                   params={"page_size": 200})).json()["items"]
    assert tn not in [c["tracking_number"] for c in own]

    doc = await intake.case_doc(tn)
    await intake.decide(tn, outcome="triage", category="health", category_name="urban_management",
                        routing_round=doc["routing_round"], source_version=doc["routing_source_version"])
    await intake.wait_status(tn, "triage")
    view = await _view(intake, case_id)
    assert view["category"] == {"code": "health", "name": "卫生健康"} and view["department"] is None
    assert view["tried_units"] == [{"id": "zhanggong_gov", "name": "章贡区人民政府"}]

    r = await intake.client.post(f"/v1/cases/{case_id}/reassign", headers=intake.supervisor,
                                 json={"category": "utilities_telecom", "department_id": "ent_water",
                                       "reason": "人工分派"})
    assert r.status_code == 200, r.text
    case = r.json()
    assert case["category"] == {"code": "utilities_telecom", "name": "水电气与通信"}
    assert case["department"] == {"id": "ent_water", "name": "赣州市水务集团"}
    # the unit's own deadline from the contract, not a flat 5 days
    assert case["working_days"] == reference().working_days("utilities_telecom", "complaint", "ent_water") == 2


async def test_the_reference_endpoint_serves_the_pickers(intake: Intake) -> None:
    r = await intake.client.get("/v1/reference")
    assert r.status_code == 200
    data = r.json()
    units = {u["id"]: u for u in data["units"]}
    assert set(units["zhanggong_gov"]) >= {"id", "name", "county", "kind", "categories", "serves"}
    assert units["zhanggong_gov"]["county"] == "章贡区"  # the county is read from the contract, never None
    assert "寻乌县" not in units["ent_water"]["serves"]
    categories = {c["code"]: c for c in data["categories"]}
    assert categories["urban_management"]["name"] == "城市管理"
    assert categories["urban_management"]["working_days"] == {"inquiry": 3, "complaint": 5}
    counties = {c["name"]: c for c in data["counties"]}
    assert "水西镇" in counties["章贡区"]["townships"] and len(counties) >= 18
    assert {r["code"] for r in data["invalid_reasons"]} >= {"spam", "not_government"}


async def test_closing_as_invalid_records_the_reason_and_needs_one(intake: Intake) -> None:
    accepted = await intake.post(title="广告", body="加微信领红包")
    case_id = (await intake.case_doc(accepted["tracking_number"]))["_id"]
    url = f"/v1/cases/{case_id}/close"
    r = await intake.client.post(url, headers=intake.supervisor, json={"reason": "广告", "disposition": "invalid"})
    assert r.status_code == 409 and r.json()["error"]["field"] == "invalid_reason"
    r = await intake.client.post(url, headers=intake.supervisor,
                                 json={"reason": "广告", "disposition": "invalid", "invalid_reason": "nonsense"})
    assert r.status_code == 422 and r.json()["error"]["field"] == "invalid_reason"
    r = await intake.client.post(url, headers=intake.supervisor,
                                 json={"reason": "广告信息", "disposition": "invalid", "invalid_reason": "spam"})
    assert r.status_code == 200 and r.json()["status"] == "closed"
    messages = await read_topic(intake.bootstrap, intake.names.case_events,
                                until=lambda ms: any(case_id in m["value"] and "case.closed" in m["value"]
                                                     for m in ms))
    closed = [parse_event(m["value"]) for m in messages if case_id in m["value"] and "case.closed" in m["value"]]
    assert closed[0].data.disposition == "invalid" and closed[0].data.invalid_reason == "spam"


async def _replied_case(intake: Intake, phone: str) -> tuple[str, str]:
    tn, case_id = await intake.assigned("city_urban_management", phone=phone)
    dept = intake.dept("city_urban_management")
    await intake.client.post(f"/v1/cases/{case_id}/sign", headers=dept)
    r = await intake.client.post(f"/v1/cases/{case_id}/reply", headers=dept, json={"text": "已安排维修"})
    assert r.status_code == 200, r.text
    return tn, case_id


async def _sms(intake: Intake, phone: str, text: str) -> dict:
    r = await intake.client.post("/v1/sms/inbound", json={"from": phone, "text": text})
    assert r.status_code == 200, r.text
    return r.json()


async def test_the_sms_conversation_rates_queries_and_posts(intake: Intake) -> None:
    phone = random_phone()
    tn, _case_id = await _replied_case(intake, phone)
    compact = tn.replace("-", "")
    # someone else's phone cannot rate, and the text does not become a complaint either
    stranger = await _sms(intake, random_phone(), f"评价 {tn} 不满意")
    assert stranger["action"] == "rating" and "tracking_number" not in stranger
    assert (await intake.case_doc(tn))["status"] == "replied"
    # the poster rates with the number written without dashes, with a reason
    answer = await _sms(intake, phone, f"评价 {compact.lower()} 基本满意 修得还算及时")
    assert answer["action"] == "rating" and answer["rating"] == "basically_satisfied"
    assert (await intake.case_doc(tn))["status"] == "closed"
    assert CJK.search(answer["reply"]) and "基本满意" in answer["reply"]
    # 查询 with spaces instead of dashes
    query = await _sms(intake, phone, "查询 " + tn.replace("-", " "))
    assert query["action"] == "query" and query["tracking_number"] == tn and "已办结" in query["reply"]
    # both answers go out on the notifications topic, in Chinese, to the sender
    wanted = {answer["notification_id"], query["notification_id"]}
    messages = await read_topic(intake.bootstrap, intake.names.notifications,
                                until=lambda ms: all(any(n in m["value"] for m in ms) for n in wanted))
    sent = [parse_event(m["value"]).data for m in messages if any(n in m["value"] for n in wanted)]
    assert len(sent) == 2 and all(n.to == phone and CJK.search(n.text) for n in sent)
    # anything else is a post
    post = await _sms(intake, phone, "评价一下我们小区门口的路灯，天天不亮")
    assert post["action"] == "post" and post["tracking_number"] != tn


async def test_people_read_shanghai_dates_and_the_sms_agrees_with_the_extension_note(intake: Intake) -> None:
    phone = random_phone()
    tn, case_id = await intake.assigned("city_health", phone=phone)
    dept = intake.dept("city_health")
    await intake.client.post(f"/v1/cases/{case_id}/sign", headers=dept)
    await intake.client.post(f"/v1/cases/{case_id}/extension", headers=dept,
                             json={"reason": "需要现场勘查", "extra_working_days": 3})
    r = await intake.client.post(f"/v1/cases/{case_id}/extension/approve", headers=intake.supervisor)
    assert r.status_code == 200, r.text
    deadline = (await intake.case_doc(tn))["deadline"]
    day = people_deadline(deadline)
    assert re.fullmatch(r"\d{4}年\d{1,2}月\d{1,2}日", day)
    note = next(t["note"] for t in r.json()["timeline"] if t["type"] == "extended")
    assert note.endswith(day)
    answer = await _sms(intake, phone, f"查询{tn}")
    assert f"办理期限：{day}" in answer["reply"]
    assert r.json()["deadline"].endswith("+00:00")  # the wire stays UTC ISO 8601


async def _raw_requests(port: int, requests: list[bytes]) -> list[tuple[int, bytes]]:
    """Send the requests one after another on ONE keep-alive connection; the status and body of each answer."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    answers = []
    try:
        for request in requests:
            writer.write(request)
            await writer.drain()
            head = await reader.readuntil(b"\r\n\r\n")
            status = int(head.split(b" ", 2)[1])
            length = int(re.search(rb"content-length: *(\d+)", head, re.IGNORECASE).group(1))
            answers.append((status, await reader.readexactly(length)))
    finally:
        writer.close()
        with contextlib.suppress(Exception):
            await writer.wait_closed()
    return answers


def _post(path: str, body: dict) -> bytes:
    payload = json.dumps(body).encode()  # \u escapes: the token arrives as non-ASCII text, surrogates too
    return (f"POST {path} HTTP/1.1\r\nHost: intake\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(payload)}\r\n\r\n").encode() + payload


async def test_a_non_ascii_rating_token_is_403_and_the_connection_survives(intake: Intake) -> None:
    phone = random_phone()
    tn, _case_id = await _replied_case(intake, phone)
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(intake.app, host="127.0.0.1", port=port, lifespan="off",
                                           log_level="warning"))
    task = asyncio.create_task(server.serve())
    try:
        await eventually(lambda: asyncio.sleep(0, server.started), "uvicorn to start", timeout=20)
        rating = f"/v1/posts/{tn}/rating"
        answers = await _raw_requests(port, [
            _post(rating, {"rating": "satisfied", "rating_token": "令牌不对"}),
            _post(rating, {"rating": "satisfied", "rating_token": "ｔｏｋｅｎ🔑" * 4}),
            _post(rating, {"rating": "satisfied", "phone_last4": "0000" if phone[-4:] != "0000" else "1111"}),
            f"GET /v1/posts/{tn} HTTP/1.1\r\nHost: intake\r\n\r\n".encode(),
        ])
    finally:
        server.should_exit = True
        await task
    assert [status for status, _ in answers] == [403, 403, 403, 200]
    assert json.loads(answers[0][1])["error"]["field"] == "rating_token"
    assert json.loads(answers[3][1])["status"] == "replied"


async def test_a_non_ascii_bearer_token_is_refused_not_a_500(intake: Intake) -> None:
    # HTTP headers are Latin-1 on the wire: send the UTF-8 bytes of a Chinese token as they would arrive
    r = await intake.client.get("/v1/cases", headers={"Authorization": "Bearer 令牌".encode()})
    assert r.status_code == 401
