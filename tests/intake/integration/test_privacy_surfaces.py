"""Must show (issue #16): cases posted with every kind of personal data, through every channel (web, an
anonymous post from the same phone, Open311 with a phone as people write it and an e-mail, WeChat), then
the public topic read with a plain aiokafka consumer and the public APIs: none of it appears, nothing
derived from the phone (no poster_ref) links the anonymous post to its poster; the private contacts topic
still carries each contact."""

from __future__ import annotations

import json
import time
import uuid

import pytest
from aiokafka import AIOKafkaConsumer
from aiokafka.structs import TopicPartition

from services.intake import domain
from tests.intake.conftest import Intake, open_intake, random_phone, read_topic
from tests.intake.integration.test_wechat import APP_ID, TOKEN, signed, text_message

pytestmark = pytest.mark.integration
TEXT = ("红旗大道路灯坏了。电话 138 0000 5678、138-0000-5678、8613800005678、+86 139 0000 1234、"
        "１３８００００５６７８，"
        "座机0797-8123456；身份证11010519491231002X；邮箱wangjh1988@qq.com；卡号6222 0212 3456 7890 123；"
        "车牌赣B12345；联系人王建华，建华晚上在家。")
PERSONAL = ["138 0000 5678", "13800005678", "138-0000-5678", "8613800005678", "139 0000 1234", "13900001234",
            "１３８００００５６７８", "0797-8123456", "8123456", "11010519491231002X", "wangjh1988@qq.com",
            "6222 0212 3456 7890 123", "6222021234567890123", "赣B12345", "王建华", "建华"]


async def plain_consumer_read(bootstrap: str, topic: str) -> list[tuple[str | None, str | None]]:
    """Everything on a topic, as any city system would read it: aiokafka, no project code."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False)
    await consumer.start()
    try:
        partitions = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or [])]
        if not partitions:
            await consumer._client.force_metadata_update()
            partitions = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or [])]
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        ends = await consumer.end_offsets(partitions)
        out: list[tuple[str | None, str | None]] = []
        while any([await consumer.position(tp) < ends[tp] for tp in partitions]):
            for records in (await consumer.getmany(timeout_ms=500)).values():
                out += [(r.key.decode() if r.key else None, r.value.decode() if r.value else None) for r in records]
        return out
    finally:
        await consumer.stop()


async def test_no_personal_data_on_public_surfaces_and_no_link_between_posts(kafka_bootstrap, mongo_url,
                                                                             intake_topics) -> None:
    async with open_intake(kafka_bootstrap, mongo_url, intake_topics, uuid.uuid4().hex[:10], wechat_enabled=True,
                           wechat_token=TOKEN, wechat_app_id=APP_ID, wechat_app_secret="s") as intake:
        await _story(intake)


async def _story(intake: Intake) -> None:
    phone, openid, email = random_phone(), f"o-{uuid.uuid4().hex[:16]}", f"c{uuid.uuid4().hex[:8]}@example.cn"
    named = (await intake.post(contact_phone=phone, name="王建华", title="王建华反映路灯",
                               body=TEXT))["tracking_number"]
    anonymous = (await intake.post(contact_phone=phone, name=None, anonymous=True, title="匿名反映路灯",
                                   body=TEXT))["tracking_number"]
    key = intake.credentials["open311_api_keys"][0]
    r = await intake.client.post("/open311/v2/requests.json", data={
        "api_key": key, "service_code": "urban_management", "description": TEXT, "address_string": "章贡区红旗大道",
        "phone": "+86 136-0000-0003", "email": email, "first_name": "建华", "last_name": "王"})
    assert r.status_code == 201, r.text
    open311 = r.json()[0]["service_request_id"]
    r = await intake.client.post("/v1/wechat/callback", params=signed(), headers={"content-type": "text/xml"},
                                 content=text_message(openid, TEXT, time.time_ns() % 10**15).encode())
    wechat = r.text.split("编号 ")[1].split("。")[0]
    trackings = [named, anonymous, open311, wechat]
    ids = {tn: (await intake.case_doc(tn))["_id"] for tn in trackings}
    secrets_of_phone = [phone, domain.poster_ref(intake.settings.secret, phone),
                        domain.poster_ref(intake.settings.secret, "13600000003"), email, openid, "13600000003"]

    # the public topic, with a plain consumer, once every submission is there
    await read_topic(intake.bootstrap, intake.names.case_events,
                     until=lambda ms: set(ids.values()) <= {m["key"] for m in ms})
    public = [value for key_, value in await plain_consumer_read(intake.bootstrap, intake.names.case_events)
              if key_ in ids.values()]
    assert len(public) >= 4
    events = [json.loads(v) for v in public]
    assert all("poster_ref" not in e["data"] for e in events)  # nothing links the anonymous post to its poster
    submitted = {e["subject"] for e in events if e["type"] == "gov.wenzheng.case.submitted"}
    assert submitted == set(ids.values())

    surfaces = {"topic": "\n".join(public)}
    for tn in trackings:
        surfaces[f"view {tn}"] = (await intake.client.get(f"/v1/posts/{tn}")).text
        surfaces[f"open311 json {tn}"] = (await intake.client.get(f"/open311/v2/requests/{tn}.json",
                                                                  params={"extensions": "true"})).text
        surfaces[f"open311 xml {tn}"] = (await intake.client.get(f"/open311/v2/requests/{tn}.xml")).text
    surfaces["open311 list"] = (await intake.client.get("/open311/v2/requests.json",
                                                        params={"service_request_id": ",".join(trackings)})).text
    surfaces["board"] = (await intake.client.get("/v1/public/cases", params={"page_size": 50})).text
    for where, text in surfaces.items():
        for value in [*PERSONAL, *secrets_of_phone]:
            assert value not in text, (where, value)

    # the private topic still carries every contact (and the router's key)
    contacts = {k: json.loads(v)["data"] for k, v in await plain_consumer_read(intake.bootstrap,
                                                                              intake.names.case_contacts)
                if k in ids.values() and v}
    assert contacts[ids[named]]["phone"] == phone and contacts[ids[named]]["name"] == "王建华"
    assert contacts[ids[anonymous]]["phone"] == phone and contacts[ids[anonymous]]["anonymous"] is True
    assert contacts[ids[named]]["poster_ref"] == contacts[ids[anonymous]]["poster_ref"]  # privately, linkable
    assert contacts[ids[open311]]["phone"] == "13600000003" and contacts[ids[open311]]["email"] == email
    assert contacts[ids[wechat]]["wechat_openid"] == openid and contacts[ids[wechat]]["preferred_channel"] == "wechat"
