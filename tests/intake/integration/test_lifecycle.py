"""Each lifecycle path, through the HTTP API, with routing decisions on the real Kafka topic."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest

from tests.intake.conftest import Intake, a_post, random_phone

pytestmark = pytest.mark.integration


async def test_assigned_signed_replied_satisfied_closes(intake: Intake) -> None:
    phone = random_phone()
    accepted = await intake.post(phone=phone)
    assert accepted["status"] == "submitted"
    assert accepted["tracking_number"].startswith("WZ")
    tn = accepted["tracking_number"]
    await intake.decide(tn, department_id="zhanggong_gov")
    view = await intake.wait_status(tn, "assigned")
    assert view["department"] == {"id": "zhanggong_gov", "name": "章贡区人民政府"}
    assert view["deadline"]
    case_id = (await intake.case_doc(tn))["_id"]
    dept = intake.dept("zhanggong_gov")

    r = await intake.client.post(f"/v1/cases/{case_id}/sign", headers=dept)
    assert r.status_code == 200, r.text
    assert r.json()["status"] == "signed"
    r = await intake.client.post(f"/v1/cases/{case_id}/reply", headers=dept,
                                 json={"text": "已安排维修，今晚恢复照明。"})
    assert r.status_code == 200 and r.json()["status"] == "replied"

    r = await intake.client.post(f"/v1/posts/{tn}/rating",
                                 json={"rating": "satisfied", "rating_token": accepted["rating_token"]})
    assert r.status_code == 200, r.text
    view = r.json()
    assert view["status"] == "closed"
    assert [t["type"] for t in view["timeline"]] == ["submitted", "assigned", "signed", "replied", "rated", "closed"]
    assert view["replies"][0]["text"] == "已安排维修，今晚恢复照明。"
    assert phone not in r.text and "张三" not in r.text


async def test_unsatisfied_waits_then_second_handling(intake: Intake) -> None:
    phone = random_phone()
    tn, case_id = await intake.assigned("city_transport", phone=phone)
    dept = intake.dept("city_transport")
    assert (await intake.client.post(f"/v1/cases/{case_id}/sign", headers=dept)).status_code == 200
    r = await intake.client.post(f"/v1/cases/{case_id}/reply", headers=dept, json={"text": "已处理"})
    assert r.status_code == 200
    wrong = await intake.client.post(f"/v1/posts/{tn}/rating", json={"rating": "unsatisfied", "phone_last4": "0000"
                                                                      if phone[-4:] != "0000" else "1111"})
    assert wrong.status_code == 403
    r = await intake.client.post(f"/v1/posts/{tn}/rating",
                                 json={"rating": "unsatisfied", "reason": "还是不亮", "phone_last4": phone[-4:]})
    assert r.status_code == 200 and r.json()["status"] == "rated"
    # a department cannot order second handling; a supervisor can
    assert (await intake.client.post(f"/v1/cases/{case_id}/reopen", headers=dept,
                                     json={"reason": "群众不满意"})).status_code == 403
    r = await intake.client.post(f"/v1/cases/{case_id}/reopen", headers=intake.supervisor,
                                 json={"reason": "群众不满意"})
    assert r.status_code == 200, r.text
    case = r.json()
    assert case["status"] == "reopened" and case["handling_round"] == 2
    r = await intake.client.post(f"/v1/cases/{case_id}/reply", headers=dept, json={"text": "二次办理：已更换路灯"})
    assert r.status_code == 200 and r.json()["status"] == "replied"
    assert [x["handling_round"] for x in r.json()["replies"]] == [1, 2]


async def test_return_then_reassigned_by_the_router(intake: Intake) -> None:
    tn, case_id = await intake.assigned("city_housing")
    dept = intake.dept("city_housing")
    r = await intake.client.post(f"/v1/cases/{case_id}/return", headers=dept, json={"reason": "不属于本单位职责"})
    assert r.status_code == 200, r.text
    case = r.json()
    assert case["status"] == "returned" and case["routing_round"] == 2 and case["tried_departments"] == ["city_housing"]
    doc = await intake.case_doc(tn)
    # a late decision for the first round is ignored; the round-2 decision is applied
    await intake.decide(tn, department_id="city_ecology", source_version=1, routing_round=1)
    await intake.decide(tn, department_id="city_urban_management")
    view = await intake.wait_status(tn, "assigned")
    assert view["department"]["id"] == "city_urban_management"
    assert doc["routing_source_version"] == doc["version"]
    # the old unit no longer sees it
    assert (await intake.client.get(f"/v1/cases/{case_id}", headers=dept)).status_code == 403


async def test_return_window_closes_after_two_working_days(intake: Intake) -> None:
    _, case_id = await intake.assigned("city_market_regulation")
    intake.clock.advance(timedelta(days=10))
    try:
        r = await intake.client.post(f"/v1/cases/{case_id}/return", headers=intake.dept("city_market_regulation"),
                                     json={"reason": "不属于本单位职责"})
    finally:
        intake.clock.offset -= timedelta(days=10)
    assert r.status_code == 409
    assert r.json()["error"]["code"] == "return_window_closed"
    assert "2 working days" in r.json()["error"]["message"]


async def test_extension_approved_moves_the_deadline(intake: Intake) -> None:
    _, case_id = await intake.assigned("city_health")
    dept = intake.dept("city_health")
    await intake.client.post(f"/v1/cases/{case_id}/sign", headers=dept)
    before = (await intake.client.get(f"/v1/cases/{case_id}", headers=dept)).json()["deadline"]
    r = await intake.client.post(f"/v1/cases/{case_id}/extension", headers=dept,
                                 json={"reason": "需要现场勘查", "extra_working_days": 5})
    assert r.status_code == 200 and r.json()["pending_extension"]["extra_working_days"] == 5
    again = await intake.client.post(f"/v1/cases/{case_id}/extension", headers=dept,
                                     json={"reason": "再延期", "extra_working_days": 2})
    assert again.status_code == 409 and again.json()["error"]["code"] == "extension_pending", again.text
    r = await intake.client.post(f"/v1/cases/{case_id}/extension/approve", headers=intake.supervisor)
    assert r.status_code == 200, r.text
    case = r.json()
    assert case["status"] == "extended" and case["pending_extension"] is None
    assert case["deadline"] > before
    # deny without a pending request is refused with the reason
    r = await intake.client.post(f"/v1/cases/{case_id}/extension/deny", headers=intake.supervisor, json={})
    assert r.status_code == 409 and r.json()["error"]["code"] == "no_pending_extension"


async def test_triage_then_supervisor_reassigns(intake: Intake) -> None:
    accepted = await intake.post()
    tn = accepted["tracking_number"]
    await intake.decide(tn, outcome="triage")
    await intake.wait_status(tn, "triage")
    queue = (await intake.client.get("/v1/triage", headers=intake.supervisor, params={"page_size": 200})).json()
    assert tn in [c["tracking_number"] for c in queue["items"]]
    assert (await intake.client.get("/v1/triage", headers=intake.dept("city_health"))).status_code == 403
    case_id = (await intake.case_doc(tn))["_id"]
    bad = await intake.client.post(f"/v1/cases/{case_id}/reassign", headers=intake.supervisor,
                                   json={"category": "transport", "department_id": "nowhere", "reason": "人工分派"})
    assert bad.status_code == 422 and bad.json()["error"]["field"] == "department_id"
    r = await intake.client.post(f"/v1/cases/{case_id}/reassign", headers=intake.supervisor,
                                 json={"category": "transport", "department_id": "city_transport",
                                       "reason": "人工分派"})
    assert r.status_code == 200, r.text
    assert r.json()["status"] == "assigned" and r.json()["department"]["id"] == "city_transport"
    r = await intake.client.post(f"/v1/cases/{case_id}/flag", headers=intake.supervisor, json={"note": "典型"})
    assert r.json()["flagged"] is True
    r = await intake.client.post(f"/v1/cases/{case_id}/close", headers=intake.supervisor, json={"reason": "已办结"})
    assert r.json()["status"] == "closed"


async def test_duplicate_decision_links_and_closes(intake: Intake) -> None:
    first = await intake.post()
    second = await intake.post()
    first_id = (await intake.case_doc(first["tracking_number"]))["_id"]
    await intake.decide(second["tracking_number"], outcome="duplicate", linked_case_id=first_id)
    view = await intake.wait_status(second["tracking_number"], "closed")
    assert view["timeline"][-1]["type"] == "linked"


async def test_illegal_transitions_answer_409_with_allowed_actions(intake: Intake) -> None:
    tn, case_id = await intake.assigned("city_education")
    dept = intake.dept("city_education")
    r = await intake.client.post(f"/v1/cases/{case_id}/reply", headers=dept, json={"text": "答复"})
    assert r.status_code == 409
    error = r.json()["error"]
    assert error["code"] == "illegal_transition" and error["status"] == "assigned"
    assert "sign" in error["allowed_actions"] and "return" in error["allowed_actions"]
    r = await intake.client.post(f"/v1/posts/{tn}/rating", json={"rating": "satisfied", "phone_last4": "0000",
                                                                  "rating_token": "x"})
    assert r.status_code in (403, 409)
    doc = await intake.case_doc(tn)
    r = await intake.client.post(f"/v1/posts/{tn}/rating",
                                 json={"rating": "satisfied", "phone_last4": doc["phone_last4"]})
    assert r.status_code == 409 and r.json()["error"]["status"] == "assigned"


async def test_departments_only_see_their_own_cases(intake: Intake) -> None:
    _, case_id = await intake.assigned("city_agriculture")
    other = intake.dept("city_public_security")
    assert (await intake.client.get(f"/v1/cases/{case_id}", headers=other)).status_code == 403
    assert (await intake.client.post(f"/v1/cases/{case_id}/sign", headers=other)).status_code == 403
    assert (await intake.client.get(f"/v1/cases/{case_id}")).status_code == 401
    assert (await intake.client.get("/v1/cases", headers={"Authorization": "Bearer nope"})).status_code == 401
    mine = (await intake.client.get("/v1/cases", headers=intake.dept("city_agriculture"),
                                    params={"status": "assigned"})).json()
    assert [c["case_id"] for c in mine["items"]] == [case_id]
    theirs = (await intake.client.get("/v1/cases", headers=other)).json()
    assert case_id not in [c["case_id"] for c in theirs["items"]]
    # supervisors sign nothing: signing is the unit's act
    assert (await intake.client.post(f"/v1/cases/{case_id}/sign", headers=intake.supervisor)).status_code == 403
    internal = (await intake.client.get(f"/v1/cases/{case_id}", headers=intake.dept("city_agriculture"))).text
    assert "\"contact\":" not in internal and "phone_last4" not in internal


async def test_concurrent_commands_on_one_case_are_safe(intake: Intake) -> None:
    tn, case_id = await intake.assigned("city_hrss")
    dept = intake.dept("city_hrss")
    results = await asyncio.gather(
        intake.client.post(f"/v1/cases/{case_id}/sign", headers=dept),
        intake.client.post(f"/v1/cases/{case_id}/return", headers=dept, json={"reason": "不属于本单位"}),
        intake.client.post(f"/v1/cases/{case_id}/sign", headers=dept),
    )
    codes = sorted(r.status_code for r in results)
    # once the return lands the unit is no longer responsible: a later sign is refused (403) or conflicts (409)
    assert codes.count(200) >= 1 and all(c in (200, 403, 409) for c in codes)
    doc = await intake.case_doc(tn)
    versions = [t["version"] for t in doc["timeline"]]
    assert versions == list(range(1, doc["version"] + 1))


async def test_idempotent_resubmission_returns_the_first_result(intake: Intake) -> None:
    body = a_post()
    headers = {"Idempotency-Key": "retry-" + random_phone()}
    first = await intake.client.post("/v1/posts", json=body, headers=headers)
    again = await intake.client.post("/v1/posts", json=body, headers=headers)
    assert first.status_code == again.status_code == 201
    assert first.json() == again.json()
    count = await intake.runtime.store.cases.count_documents({"idempotency_key": headers["Idempotency-Key"]})
    assert count == 1
    different = await intake.client.post("/v1/posts", json={**body, "title": "另一件事"}, headers=headers)
    assert different.status_code == 409


async def test_validation_errors_name_the_field(intake: Intake) -> None:
    r = await intake.client.post("/v1/posts", json=a_post(contact_phone="12345"))
    assert r.status_code == 422 and r.json()["error"]["field"] == "contact_phone"
    r = await intake.client.post("/v1/posts", json=a_post(attachments=["ftp://x"] ))
    assert r.status_code == 422
    r = await intake.client.get("/v1/posts/WZ0000-AAAA-AAAA")
    assert r.status_code == 404
