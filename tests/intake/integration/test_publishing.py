"""The outbox relay and the private/public split, read back from the real topics."""

from __future__ import annotations

import json
import uuid
from collections import Counter

import pytest

from services.common.config import TopicSettings
from services.common.events import parse_event
from services.common.kafka import new_producer
from services.common.mongo import new_client
from services.intake import metrics
from tests.intake.conftest import Intake, decode, eventually, open_intake, random_phone, read_topic

pytestmark = pytest.mark.integration


async def test_no_personal_data_on_the_public_topic(intake: Intake) -> None:
    phone = random_phone()
    accepted = await intake.post(phone=phone, name="李四", anonymous=True,
                                 body=f"我的电话{phone}，小区门口垃圾三天没人收。")
    tn = accepted["tracking_number"]
    await intake.decide(tn, department_id="city_ecology")
    await intake.wait_status(tn, "assigned")
    case_id = (await intake.case_doc(tn))["_id"]
    public = await read_topic(intake.bootstrap, intake.names.case_events,
                              until=lambda ms: sum(m["key"] == case_id for m in ms) >= 2)
    mine = [m for m in public if m["key"] == case_id]
    assert [json.loads(m["value"])["type"] for m in mine] == ["gov.wenzheng.case.submitted",
                                                              "gov.wenzheng.case.assigned"]
    for message in public:
        assert phone not in message["value"] and "李四" not in message["value"]
        parse_event(message["value"], expected_topic="case_events")
    submitted = json.loads(mine[0]["value"])["data"]
    assert submitted["body"] == "我的电话[电话]，小区门口垃圾三天没人收。"  # the redacted, publishable copy
    assert submitted.get("poster_ref") is None  # it would link this anonymous post to the phone's other posts
    private = await read_topic(intake.bootstrap, intake.names.case_contacts,
                               until=lambda ms: any(m["key"] == case_id for m in ms))
    contact = next(json.loads(m["value"]) for m in private if m["key"] == case_id)
    assert contact["data"]["phone"] == phone and contact["data"]["anonymous"] is True
    assert len(contact["data"]["poster_ref"]) == 32  # the router's key for duplicates: private only
    view = (await intake.client.get(f"/v1/posts/{tn}")).text
    assert phone not in view and "李四" not in view and phone[-4:] not in view


async def test_sms_query_answers_and_publishes_a_notification(intake: Intake) -> None:
    phone = random_phone()
    text = "楼下烧烤店油烟太大，每天晚上到凌晨两点"
    r = await intake.client.post("/v1/sms/inbound", data={"from": phone, "text": text})
    assert r.status_code == 200, r.text
    assert r.json()["action"] == "post"
    tn = r.json()["tracking_number"]
    doc = await intake.case_doc(tn)
    assert doc["channel"] == "sms" and doc["title"] == text[:30]
    r = await intake.client.post("/v1/sms/inbound", json={"from": phone, "text": f"查询 {tn.lower()}"})
    assert r.status_code == 200 and r.json()["action"] == "query"
    assert tn in r.json()["reply"] and "已受理" in r.json()["reply"]
    notification_id = r.json()["notification_id"]
    messages = await read_topic(intake.bootstrap, intake.names.notifications,
                                until=lambda ms: any(notification_id in m["value"] for m in ms))
    event = parse_event(next(m["value"] for m in messages if notification_id in m["value"]))
    assert event.data.kind == "status" and event.data.to == phone
    bad = await intake.client.post("/v1/sms/inbound", data={"from": "12345", "text": "hi"})
    assert bad.status_code == 422


async def test_a_malformed_decision_is_dead_lettered_and_consuming_goes_on(intake: Intake) -> None:
    producer = new_producer(intake.bootstrap)
    await producer.start()
    try:
        await producer.send_and_wait(intake.names.routing_decisions, b'{"not": "an event"}', key=b"junk")
    finally:
        await producer.stop()
    tn, _ = await intake.assigned("city_transport")  # a good decision after the junk is applied
    letters = await read_topic(intake.bootstrap, intake.names.dead_letter,
                               until=lambda ms: any("junk" in m["value"] for m in ms))
    letter = parse_event(next(m["value"] for m in letters if "junk" in m["value"]))
    assert letter.data.service == "intake" and letter.data.original_topic == intake.names.routing_decisions
    # a decision for a case that does not exist: dead-lettered with the reason
    doc = await intake.case_doc(tn)
    await intake.decide(tn, decision_id="d-ghost", department_id="city_transport", source_version=doc["version"])


async def test_outage_posts_accepted_then_published_exactly_once(kafka_bootstrap: str, mongo_url: str,
                                                                 test_topics: TopicSettings, run_id: str) -> None:
    async with open_intake(kafka_bootstrap, mongo_url, test_topics, f"outage_{run_id}",
                           relay_bootstrap="127.0.0.1:1", consumer_enabled=False) as dead:
        accepted = []
        for _ in range(12):
            accepted.append(await dead.post())
        assert len({a["tracking_number"] for a in accepted}) == 12
        await eventually(lambda: _relay_failed(dead), "the relay to fail against the dead broker")
        # 12 submitted + 12 contacts, all kept, and the staff-contact record of each person the harness made
        assert await dead.runtime.store.outbox_backlog() == 24 + len(dead.signed_in)
        dead.runtime.relay.use_bootstrap(kafka_bootstrap)

        async def drained() -> bool:
            return await dead.runtime.store.outbox_backlog() == 0
        await eventually(drained, "the relay to catch up")
        events = decode(await read_topic(kafka_bootstrap, test_topics.case_events, until=lambda ms: len(ms) >= 12))
        counts = Counter(e["id"] for e in events)
        assert len(counts) == 12 and set(counts.values()) == {1}
        contacts = decode(await read_topic(kafka_bootstrap, test_topics.case_contacts, until=lambda ms: len(ms) >= 12))
        assert len({c["id"] for c in contacts}) == 12 == len(contacts)
        metrics_text = (await dead.client.get("/metrics")).text
        assert "wenzheng_intake_outbox_backlog_events" in metrics_text
        assert 'wenzheng_intake_posts_total{channel="web"}' in metrics_text


async def _relay_failed(harness: Intake) -> bool:
    return harness.runtime.relay.last_error is not None and metrics.RELAY_ERRORS._value.get() > 0


async def test_the_sms_webhook_takes_texts_only_from_the_gateway(kafka_bootstrap, mongo_url, intake_topics) -> None:
    """With a gateway token configured, a text without it (or with a wrong one) is refused and stores nothing."""
    async with open_intake(kafka_bootstrap, mongo_url, intake_topics, uuid.uuid4().hex[:10],
                           sms_gateway_token="gateway-secret") as gated:
        text = {"from": random_phone(), "text": "小区门口路灯坏了半个月"}
        missing = await gated.client.post("/v1/sms/inbound", data=text)
        wrong = await gated.client.post("/v1/sms/inbound", data=text, headers={"X-Sms-Gateway-Token": "guess"})
        for refused in (missing, wrong):
            assert refused.status_code == 401
            assert refused.json()["error"]["field"] == "X-Sms-Gateway-Token"
        mongo = new_client(mongo_url)
        try:
            assert await mongo[gated.settings.database].cases.count_documents({}) == 0
        finally:
            await mongo.close()
        accepted = await gated.client.post("/v1/sms/inbound", data=text,
                                           headers={"X-Sms-Gateway-Token": "gateway-secret"})
        assert accepted.status_code == 200 and accepted.json()["action"] == "post"
