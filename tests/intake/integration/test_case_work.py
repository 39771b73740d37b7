"""Case work beyond the lifecycle, through the HTTP API against the real Kafka and MongoDB-wire server:
publishable text and moderation, the public board, staff filters and inbox counts, 督办 notices, 回访
callbacks, bulk commands and photo attachments."""

from __future__ import annotations

import json
import struct
from datetime import timedelta

import pytest

from services.common.reference import reference
from services.common.workdays import local_date
from tests.intake.conftest import Intake, decode, random_phone, read_topic

pytestmark = pytest.mark.integration


def jpeg_with_gps() -> bytes:
    exif = b"Exif\x00\x00MM\x00*\x00\x00\x00\x08GPSLatitude=25.83N;GPSLongitude=114.93E"
    app1 = b"\xff\xe1" + struct.pack(">H", len(exif) + 2) + exif
    jfif = b"\xff\xe0" + struct.pack(">H", 16) + b"JFIF\x00\x01\x01\x00\x00\x01\x00\x01\x00\x00"
    return b"\xff\xd8" + jfif + app1 + b"\xff\xda\x00\x08\x01\x01\x00\x00\x3f\x00" + b"\x12\x34" * 50 + b"\xff\xd9"


async def _signed(intake: Intake, unit: str, **post) -> tuple[str, str]:
    tn, case_id = await intake.assigned(unit, **post)
    r = await intake.client.post(f"/v1/cases/{case_id}/sign", headers=intake.dept(unit))
    assert r.status_code == 200, r.text
    return tn, case_id


async def _replied(intake: Intake, unit: str, **post) -> tuple[str, str]:
    tn, case_id = await _signed(intake, unit, **post)
    r = await intake.client.post(f"/v1/cases/{case_id}/reply", headers=intake.dept(unit), json={"text": "已处理完毕"})
    assert r.status_code == 200, r.text
    return tn, case_id


async def _board(intake: Intake, **params) -> dict:
    r = await intake.client.get("/v1/public/cases", params=params)
    assert r.status_code == 200, r.text
    return r.json()


async def test_certain_redaction_is_public_at_once_and_never_shows_the_original(intake: Intake) -> None:
    phone = random_phone()
    accepted = await intake.post(phone=phone, name="王建华", title="王建华：路灯不亮",
                                 body=f"和谐路路灯坏了，电话 {phone[:3]} {phone[3:7]} {phone[7:]}，"
                                      "身份证11010519491231002X")
    tn = accepted["tracking_number"]
    view = (await intake.client.get(f"/v1/posts/{tn}")).json()
    assert view["publishable"] is True and view["title"] == "[姓名]：路灯不亮"
    board = await _board(intake, q=tn)
    assert [item["tracking_number"] for item in board["items"]] == [tn]
    item = board["items"][0]
    assert item["excerpt"] == "和谐路路灯坏了，电话 [电话]，身份证[身份证号]"
    assert item["status_label"] == "已受理"
    text = json.dumps(board, ensure_ascii=False)
    assert phone[-4:] not in text and "王建华" not in text and "19491231" not in text
    # staff see what the citizen typed
    case_id = (await intake.case_doc(tn))["_id"]
    internal = (await intake.client.get(f"/v1/cases/{case_id}", headers=intake.supervisor)).json()
    assert internal["original_title"] == "王建华：路灯不亮" and internal["awaiting_moderation"] is False


async def test_an_uncertain_name_waits_for_moderation_before_the_board(intake: Intake) -> None:
    marker = f"测试{random_phone()[-6:]}"
    accepted = await intake.post(name=None, title=f"路灯不亮{marker}", body=f"我叫赵大宝，{marker}路段路灯坏了")
    tn = accepted["tracking_number"]
    assert (await intake.client.get(f"/v1/posts/{tn}")).json()["title"] is None
    assert (await _board(intake, q=marker))["items"] == []
    case_id = (await intake.case_doc(tn))["_id"]
    internal = (await intake.client.get(f"/v1/cases/{case_id}", headers=intake.supervisor)).json()
    assert internal["awaiting_moderation"] and internal["redaction"]["uncertain"]
    queue = (await intake.client.get("/v1/cases", headers=intake.supervisor,
                                     params={"awaiting_moderation": "true", "q": marker})).json()
    assert [i["tracking_number"] for i in queue["items"]] == [tn]
    assert internal["body"] == f"我叫[姓名]，{marker}路段路灯坏了"
    # a unit cannot moderate; a supervisor corrects, and a phone put back in is redacted again
    r = await intake.client.post(f"/v1/cases/{case_id}/moderate", headers=intake.dept("zhanggong_gov"), json={})
    assert r.status_code == 403
    r = await intake.client.post(f"/v1/cases/{case_id}/moderate", headers=intake.supervisor,
                                 json={"body": f"市民反映{marker}路段路灯坏了，电话13800005678"})
    assert r.status_code == 200, r.text
    assert r.json()["body"] == f"市民反映{marker}路段路灯坏了，电话[电话]"
    assert r.json()["timeline"][-1]["type"] == "moderated"
    board = await _board(intake, q=marker)
    assert [i["tracking_number"] for i in board["items"]] == [tn]
    events = decode(await read_topic(intake.bootstrap, intake.names.case_events,
                                     until=lambda ms: any(m["key"] == case_id and "moderated" in m["value"]
                                                          for m in ms)))
    moderated = [e for e in events if e["subject"] == case_id and e["type"] == "gov.wenzheng.case.moderated"]
    assert moderated[0]["data"]["corrected"] is True and "13800005678" not in json.dumps(events)


async def test_approve_as_is_and_board_filters(intake: Intake) -> None:
    marker = f"批准{random_phone()[-6:]}"
    accepted = await intake.post(name=None, body=f"联系人刘先生，{marker}门口积水")
    tn = accepted["tracking_number"]
    await intake.decide(tn, department_id="city_transport")
    await intake.wait_status(tn, "assigned")
    case_id = (await intake.case_doc(tn))["_id"]
    r = await intake.client.post(f"/v1/cases/{case_id}/moderate", headers=intake.supervisor, json={})
    assert r.status_code == 200 and r.json()["awaiting_moderation"] is False
    assert [i["tracking_number"] for i in (await _board(intake, q=marker, department_id="city_transport"))["items"]] \
        == [tn]
    item = (await _board(intake, q=marker))["items"][0]
    assert item["department"] == {"id": "city_transport", "name": reference().unit_name("city_transport")}
    assert item["category"] == {"code": "urban_management", "name": "城市管理"}
    assert (await _board(intake, q=marker, department_id="city_housing"))["items"] == []
    assert (await _board(intake, q=marker, status="closed"))["items"] == []
    assert (await intake.client.get("/v1/public/cases", params={"page_size": 51})).status_code == 422


async def test_inbox_counts_agree_with_the_bucket_lists(intake: Intake) -> None:
    unit = "nankang_gov"
    dept = intake.dept(unit)
    await intake.assigned(unit)  # to_sign
    await _signed(intake, unit)  # handling
    await _replied(intake, unit)  # awaiting_rating
    now = intake.clock.now()
    for deadline in (now + timedelta(hours=2), now - timedelta(days=1)):  # due soon, overdue
        accepted = await intake.post()
        await intake.decide(accepted["tracking_number"], department_id=unit, deadline=deadline)
        await intake.wait_status(accepted["tracking_number"], "assigned")
    counts = (await intake.client.get("/v1/inbox/counts", headers=dept)).json()
    assert min(counts[b] for b in ("to_sign", "handling", "due_soon", "overdue", "awaiting_rating")) >= 1, counts
    for bucket in ("to_sign", "handling", "due_soon", "overdue", "reopened", "awaiting_rating"):
        listed = (await intake.client.get("/v1/cases", headers=dept, params={"bucket": bucket})).json()
        assert listed["total"] == counts[bucket], bucket
        assert all(item["department"]["id"] == unit for item in listed["items"])
    city = (await intake.client.get("/v1/inbox/counts", headers=intake.supervisor)).json()
    assert city["to_sign"] >= counts["to_sign"]
    # a unit cannot look at another unit; a supervisor can choose one
    assert (await intake.client.get("/v1/cases", headers=dept, params={"department_id": "city_housing"})
            ).status_code == 403
    chosen = (await intake.client.get("/v1/inbox/counts", headers=intake.supervisor,
                                      params={"department_id": unit})).json()
    assert chosen == (await intake.client.get("/v1/inbox/counts", headers=dept)).json()


async def test_staff_filters(intake: Intake) -> None:
    unit = "nankang_gov"
    dept = intake.dept(unit)
    marker = f"筛选{random_phone()[-6:]}"
    tn, case_id = await _signed(intake, unit, body=f"{marker}：小区噪音扰民")
    by_keyword = (await intake.client.get("/v1/cases", headers=dept, params={"q": marker})).json()
    assert [i["tracking_number"] for i in by_keyword["items"]] == [tn]
    for spelled in (tn.lower(), tn.replace("-", ""), f" {tn} "):
        by_number = (await intake.client.get("/v1/cases", headers=dept, params={"q": spelled})).json()
        assert [i["tracking_number"] for i in by_number["items"]] == [tn], spelled
    other_unit = await intake.client.get("/v1/cases", headers=intake.dept("city_housing"), params={"q": tn})
    assert other_unit.json()["total"] == 0
    today = local_date(intake.clock.now()).isoformat()
    dated = (await intake.client.get("/v1/cases", headers=dept, params={"q": marker, "since": today,
                                                                         "until": today})).json()
    assert dated["total"] == 1
    assert (await intake.client.get("/v1/cases", headers=dept, params={"q": marker, "until": "2020-01-01"})
            ).json()["total"] == 0
    r = await intake.client.post(f"/v1/cases/{case_id}/extension", headers=dept,
                                 json={"reason": "需要协调", "extra_working_days": 3})
    assert r.status_code == 200
    pending = (await intake.client.get("/v1/cases", headers=intake.supervisor,
                                       params={"pending_extension": "true", "q": marker})).json()
    assert [i["tracking_number"] for i in pending["items"]] == [tn]
    assert (await intake.client.post(f"/v1/cases/{case_id}/flag", headers=intake.supervisor, json={})
            ).status_code == 200
    flagged = (await intake.client.get("/v1/cases", headers=intake.supervisor,
                                       params={"flagged": "true", "q": marker, "county": "章贡区"})).json()
    assert flagged["total"] == 1
    assert (await intake.client.get("/v1/cases", headers=dept, params={"bucket": "nope"})).status_code == 422


async def test_notice_issued_listed_and_answered(intake: Intake) -> None:
    unit = "city_ecology"
    _, case_id = await _signed(intake, unit)
    tomorrow = (local_date(intake.clock.now()) + timedelta(days=1)).isoformat()
    body = {"method": "on_site", "note": "请尽快到现场核查", "reply_by": tomorrow}
    assert (await intake.client.post(f"/v1/cases/{case_id}/notices", headers=intake.dept(unit), json=body)
            ).status_code == 403
    r = await intake.client.post(f"/v1/cases/{case_id}/notices", headers=intake.supervisor, json=body)
    assert r.status_code == 200, r.text
    notice = r.json()["notices"][0]
    assert notice["open"] and notice["method"] == "on_site" and notice["reply_by"] == tomorrow
    listed = (await intake.client.get("/v1/notices", headers=intake.dept(unit), params={"open": "true"})).json()
    assert case_id in [n["case_id"] for n in listed["items"]]
    assert (await intake.client.get("/v1/inbox/counts", headers=intake.dept(unit))).json()["open_notices"] >= 1
    other = await intake.client.post(f"/v1/cases/{case_id}/notices/{notice['notice_id']}/answer",
                                     headers=intake.dept("city_housing"), json={"text": "已处理"})
    assert other.status_code == 403
    r = await intake.client.post(f"/v1/cases/{case_id}/notices/{notice['notice_id']}/answer",
                                 headers=intake.dept(unit), json={"text": "已到现场核查，正在整改"})
    assert r.status_code == 200, r.text
    assert r.json()["notices"][0]["open"] is False
    again = await intake.client.post(f"/v1/cases/{case_id}/notices/{notice['notice_id']}/answer",
                                     headers=intake.dept(unit), json={"text": "再答一次"})
    assert again.status_code == 409 and again.json()["error"]["code"] == "notice_answered"
    listed = (await intake.client.get("/v1/notices", headers=intake.dept(unit), params={"open": "true"})).json()
    assert case_id not in [n["case_id"] for n in listed["items"]]
    past = await intake.client.post(f"/v1/cases/{case_id}/notices", headers=intake.supervisor,
                                    json={**body, "reply_by": "2020-01-01"})
    assert past.status_code == 409 and past.json()["error"]["field"] == "reply_by"
    bad = await intake.client.post(f"/v1/cases/{case_id}/notices", headers=intake.supervisor,
                                   json={**body, "method": "letter"})
    assert bad.status_code == 422 and bad.json()["error"]["field"] == "method"
    events = decode(await read_topic(intake.bootstrap, intake.names.case_events,
                                     until=lambda ms: any(m["key"] == case_id and "notice_answered" in m["value"]
                                                          for m in ms)))
    mine = [e["type"].removeprefix("gov.wenzheng.case.") for e in events if e["subject"] == case_id]
    assert mine[-2:] == ["notice_issued", "notice_answered"]


async def test_callback_rates_a_replied_case_for_the_citizen(intake: Intake) -> None:
    unit = "city_ecology"
    _, case_id = await _replied(intake, unit)
    not_reached = await intake.client.post(f"/v1/cases/{case_id}/callback", headers=intake.supervisor,
                                           json={"reached": False, "rating": "satisfied", "note": "无人接听"})
    assert not_reached.status_code == 422
    r = await intake.client.post(f"/v1/cases/{case_id}/callback", headers=intake.supervisor,
                                 json={"reached": False, "note": "无人接听"})
    assert r.status_code == 200 and r.json()["status"] == "replied"
    r = await intake.client.post(f"/v1/cases/{case_id}/callback", headers=intake.supervisor,
                                 json={"reached": True, "rating": "basically_satisfied", "note": "电话回访"})
    assert r.status_code == 200, r.text
    case = r.json()
    assert case["status"] == "closed" and case["rating"] == "basically_satisfied"
    assert [c["reached"] for c in case["callbacks"]] == [False, True]
    # a closed case cannot be rated again
    again = await intake.client.post(f"/v1/cases/{case_id}/callback", headers=intake.supervisor,
                                     json={"reached": True, "rating": "unsatisfied", "note": "再次回访"})
    assert again.status_code == 409
    events = decode(await read_topic(intake.bootstrap, intake.names.case_events,
                                     until=lambda ms: any(m["key"] == case_id and "closed" in m["value"]
                                                          for m in ms)))
    rated = [e for e in events if e["subject"] == case_id and e["type"] == "gov.wenzheng.case.rated"]
    assert rated[0]["data"]["given_by"] == "callback" and rated[0]["data"]["actor"] == "supervisor"


async def test_bulk_goes_through_each_case_on_its_own(intake: Intake) -> None:
    unit = "city_agriculture"
    mine = [(await intake.assigned(unit))[1] for _ in range(2)]
    _, other = await intake.assigned("city_housing")
    r = await intake.client.post("/v1/cases/bulk", headers=intake.dept(unit),
                                 json={"action": "sign", "case_ids": [*mine, other, "c-missing"]})
    assert r.status_code == 200, r.text
    results = {x["case_id"]: x for x in r.json()["results"]}
    assert all(results[c]["ok"] for c in mine)
    assert results[other]["error"]["code"] == "forbidden" and results["c-missing"]["error"]["code"] == "not_found"
    again = await intake.client.post("/v1/cases/bulk", headers=intake.dept(unit),
                                     json={"action": "sign", "case_ids": mine})
    assert {x["error"]["code"] for x in again.json()["results"]} == {"illegal_transition"}
    closed = await intake.client.post("/v1/cases/bulk", headers=intake.supervisor,
                                      json={"action": "close", "case_ids": mine, "reason": "批量销号"})
    assert closed.json()["ok"] == 2
    missing_reason = await intake.client.post("/v1/cases/bulk", headers=intake.supervisor,
                                              json={"action": "close", "case_ids": mine})
    assert missing_reason.status_code == 422 and missing_reason.json()["error"]["field"] == "reason"
    too_many = await intake.client.post("/v1/cases/bulk", headers=intake.supervisor,
                                        json={"action": "flag", "case_ids": [f"c-{i}" for i in range(101)]})
    assert too_many.status_code == 422


async def test_attachments_checked_stripped_and_served_once_public(intake: Intake) -> None:
    photo = jpeg_with_gps()
    r = await intake.client.post("/v1/attachments", files={"file": ("a.png", photo, "image/png")})
    assert r.status_code == 201, r.text
    attachment_id = r.json()["attachment_id"]
    assert r.json()["content_type"] == "image/jpeg"  # told by the bytes, not by the declared type
    fake = await intake.client.post("/v1/attachments", files={"file": ("a.jpg", b"GIF89a" + b"\x00" * 50,
                                                                       "image/jpeg")})
    assert fake.status_code == 415 and fake.json()["error"]["field"] == "file"
    big = await intake.client.post("/v1/attachments", files={"file": ("b.jpg", b"\xff\xd8\xff" + b"\x00" * (5 << 20),
                                                                      "image/jpeg")})
    assert big.status_code == 413 and big.json()["error"]["code"] == "too_large"
    # before the case is public only its unit and supervisors see it
    accepted = await intake.post(name=None, body="我叫钱多多，门口路面塌陷", attachment_ids=[attachment_id])
    tn = accepted["tracking_number"]
    await intake.decide(tn, department_id="city_housing")
    await intake.wait_status(tn, "assigned")
    case_id = (await intake.case_doc(tn))["_id"]
    assert (await intake.client.get(f"/v1/attachments/{attachment_id}")).status_code == 401  # staff only, yet
    assert (await intake.client.get(f"/v1/attachments/{attachment_id}", headers=intake.dept("city_ecology"))
            ).status_code == 404
    staff = await intake.client.get(f"/v1/attachments/{attachment_id}", headers=intake.dept("city_housing"))
    assert staff.status_code == 200 and staff.headers["content-type"] == "image/jpeg"
    assert b"GPSLatitude" not in staff.content and b"Exif" not in staff.content and b"JFIF" in staff.content
    reused = await intake.client.post("/v1/posts", json={**_plain_post(), "attachment_ids": [attachment_id]})
    assert reused.status_code == 409 and reused.json()["error"]["field"] == "attachment_ids"
    unknown = await intake.client.post("/v1/posts", json={**_plain_post(), "attachment_ids": ["a-" + "0" * 24]})
    assert unknown.status_code == 404  # well formed, nothing uploaded under it
    assert (await intake.client.post(f"/v1/cases/{case_id}/moderate", headers=intake.supervisor, json={})
            ).status_code == 200
    public = await intake.client.get(f"/v1/attachments/{attachment_id}")
    assert public.status_code == 200 and public.content == staff.content
    view = (await intake.client.get(f"/v1/posts/{tn}")).json()
    assert view["attachments"] == [{"id": attachment_id, "url": f"/v1/attachments/{attachment_id}"}]


def _plain_post() -> dict:
    return {"channel": "web", "title": "路面塌陷", "body": "门口路面塌陷", "contact_phone": random_phone()}


PERSONAL = {
    "phone": ["138 0000 5678", "138-0000-5678", "8613800005678", "+86 139 0000 1234", "１３８００００５６７８",
              "0797-8123456"],
    "id_card": ["11010519491231002X"],
    "email": ["wangjh1988@qq.com"],
    "bank_card": ["6222 0212 3456 7890 123"],
    "plate": ["赣B12345", "赣BD12345"],
    "name": ["王建华", "建华"],
}


async def test_no_personal_data_of_any_kind_on_public_surfaces(intake: Intake) -> None:
    """Each kind in the post's text; the public topic (a plain consumer), the tracking view, the public board
    and Open311 carry none of it; the private contacts topic still has the contact."""
    phone = random_phone()
    body = ("路灯坏了。电话 138 0000 5678、138-0000-5678、8613800005678、+86 139 0000 1234、１３８００００５６７８，"
            "座机0797-8123456；身份证11010519491231002X；邮箱wangjh1988@qq.com；卡号6222 0212 3456 7890 123；"
            "车牌赣B12345和赣BD12345；联系人王建华，建华晚上在家。")
    accepted = await intake.post(phone=phone, name="王建华", title="王建华反映路灯", body=body)
    tn = accepted["tracking_number"]
    await intake.decide(tn, department_id="zhanggong_gov")
    await intake.wait_status(tn, "assigned")
    case_id = (await intake.case_doc(tn))["_id"]
    dept = intake.dept("zhanggong_gov")
    assert (await intake.client.post(f"/v1/cases/{case_id}/sign", headers=dept)).status_code == 200
    r = await intake.client.post(f"/v1/cases/{case_id}/reply", headers=dept,
                                 json={"text": "王建华您好，已修复。如有问题请拨 0797-8123456 或回复 13800005678。"})
    assert r.status_code == 200
    surfaces = {
        "topic": "\n".join(m["value"] for m in await read_topic(
            intake.bootstrap, intake.names.case_events,
            until=lambda ms: any(m["key"] == case_id and "replied" in m["value"] for m in ms)) if m["key"] == case_id),
        "view": (await intake.client.get(f"/v1/posts/{tn}")).text,
        "board": (await intake.client.get("/v1/public/cases", params={"q": tn})).text,
        "open311": (await intake.client.get("/open311/v2/requests.json", params={"service_request_id": tn})).text,
    }
    assert "gov.wenzheng.case.replied" in surfaces["topic"] and tn in surfaces["board"]
    for where, text in surfaces.items():
        for kind, values in PERSONAL.items():
            for value in values:
                assert value not in text and value.replace(" ", "") not in text, (where, kind, value)
        assert phone not in text, where
    board = json.loads(surfaces["board"])["items"][0]
    assert "[电话]" in board["excerpt"] and board["replies"][0]["text"].startswith("[姓名]您好")
    contacts = await read_topic(intake.bootstrap, intake.names.case_contacts,
                                until=lambda ms: any(m["key"] == case_id for m in ms))
    assert any(m["key"] == case_id and phone in m["value"] for m in contacts)
