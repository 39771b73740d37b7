"""The WeChat official account's webhook against the real intake (Kafka, MongoDB): signed sample messages
as WeChat sends them, plain and in safe (AES) mode, answered passively in the XML reply."""

from __future__ import annotations

import asyncio
import hashlib
import time
import uuid
from types import SimpleNamespace

import pytest
import xmltodict
from wechatpy.crypto import WeChatCrypto

from services.intake.config import IntakeSettings
from services.intake.wechat import STILL_WORKING, answer_message
from tests.intake.conftest import Intake, open_intake

TOKEN, APP_ID = "wz-test-token", "wx0123456789abcdef"
AES_KEY = "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG"  # 43 characters, as WeChat issues them


def signed(nonce: str = "n1") -> dict[str, str]:
    timestamp = str(int(time.time()))
    signature = hashlib.sha1("".join(sorted([TOKEN, timestamp, nonce])).encode()).hexdigest()
    return {"signature": signature, "timestamp": timestamp, "nonce": nonce}


def text_message(openid: str, content: str, msg_id: int) -> str:
    return (f"<xml><ToUserName><![CDATA[gh_ganzhou]]></ToUserName><FromUserName><![CDATA[{openid}]]></FromUserName>"
            f"<CreateTime>{int(time.time())}</CreateTime><MsgType><![CDATA[text]]></MsgType>"
            f"<Content><![CDATA[{content}]]></Content><MsgId>{msg_id}</MsgId></xml>")


@pytest.fixture(scope="module")
async def wechat_intake(kafka_bootstrap, mongo_url, intake_topics):
    async with open_intake(kafka_bootstrap, mongo_url, intake_topics, uuid.uuid4().hex[:10], wechat_enabled=True,
                           wechat_token=TOKEN, wechat_app_id=APP_ID, wechat_app_secret="secret",
                           wechat_encoding_aes_key=AES_KEY) as harness:
        yield harness


async def say(intake: Intake, openid: str, content: str, msg_id: int | None = None) -> dict[str, str]:
    r = await intake.client.post("/v1/wechat/callback", params=signed(),
                                 content=text_message(openid, content, msg_id or time.time_ns() % 10**15).encode(),
                                 headers={"content-type": "text/xml"})
    assert r.status_code == 200, r.text
    reply = xmltodict.parse(r.text)["xml"]
    assert reply["ToUserName"] == openid and reply["FromUserName"] == "gh_ganzhou" and reply["MsgType"] == "text"
    return reply


async def test_server_check_echoes_only_with_the_right_signature(wechat_intake: Intake) -> None:
    r = await wechat_intake.client.get("/v1/wechat/callback", params={**signed(), "echostr": "1234567890"})
    assert r.status_code == 200 and r.text == "1234567890"
    bad = {**signed(), "signature": "0" * 40, "echostr": "1234567890"}
    r = await wechat_intake.client.get("/v1/wechat/callback", params=bad)
    assert r.status_code == 403 and r.json()["error"]["field"] == "signature"
    r = await wechat_intake.client.post("/v1/wechat/callback", params={**signed(), "signature": "0" * 40},
                                        content=text_message("o-x", "你好", 1).encode())
    assert r.status_code == 403


async def test_a_text_becomes_a_post_once_and_is_queried_and_rated(wechat_intake: Intake) -> None:
    intake, openid = wechat_intake, f"o-{uuid.uuid4().hex[:12]}"
    msg_id = time.time_ns() % 10**15
    reply = await say(intake, openid, "章贡区红旗大道路灯坏了一个星期，晚上很黑", msg_id)
    assert "您的诉求已受理，编号" in reply["Content"]
    tracking = reply["Content"].split("编号 ")[1].split("。")[0]
    again = await say(intake, openid, "章贡区红旗大道路灯坏了一个星期，晚上很黑", msg_id)  # WeChat's retry
    assert again["Content"] == reply["Content"]
    doc = await intake.case_doc(tracking)
    assert doc["channel"] == "wechat" and doc["contact"]["wechat_openid"] == openid and doc["contact"]["phone"] is None

    status = await say(intake, openid, "查询 " + tracking.lower())
    assert tracking in status["Content"] and "当前状态" in status["Content"]
    await intake.decide(tracking, department_id="zhanggong_gov")
    await intake.wait_status(tracking, "assigned")
    dept = intake.dept("zhanggong_gov")
    assert (await intake.client.post(f"/v1/cases/{doc['_id']}/sign", headers=dept)).status_code == 200
    r = await intake.client.post(f"/v1/cases/{doc['_id']}/reply", headers=dept, json={"text": "已安排维修，今晚修复。"})
    assert r.status_code in (200, 202), r.text
    await intake.wait_status(tracking, "replied")
    stranger = await say(intake, f"o-{uuid.uuid4().hex[:12]}", f"评价 {tracking} 不满意")
    assert "未找到您提交" in stranger["Content"]
    rated = await say(intake, openid, f"评价 {tracking} 满意 修得很快")
    assert "感谢您的评价（满意）" in rated["Content"]
    assert (await intake.case_doc(tracking))["rating"] == "satisfied"


async def test_safe_mode_messages_are_decrypted_and_answered_encrypted(wechat_intake: Intake) -> None:
    crypto = WeChatCrypto(TOKEN, AES_KEY, APP_ID)
    params = signed("n2")
    encrypted = crypto.encrypt_message(text_message("o-aes", "查询 WZ0000-AAAA-BBBB", 77), "n2", params["timestamp"])
    envelope = xmltodict.parse(encrypted)["xml"]
    body = (f"<xml><ToUserName><![CDATA[gh_ganzhou]]></ToUserName>"
            f"<Encrypt><![CDATA[{envelope['Encrypt']}]]></Encrypt></xml>")
    r = await wechat_intake.client.post("/v1/wechat/callback", content=body.encode(), params={
        **params, "encrypt_type": "aes", "msg_signature": envelope["MsgSignature"]})
    assert r.status_code == 200, r.text
    answer = xmltodict.parse(r.text)["xml"]
    plain = xmltodict.parse(crypto.decrypt_message(r.text, answer["MsgSignature"], answer["TimeStamp"],
                                                   answer["Nonce"]))["xml"]
    assert "未找到编号为 WZ0000-AAAA-BBBB 的诉求" in plain["Content"]


async def test_events_and_other_messages(wechat_intake: Intake) -> None:
    subscribe = ("<xml><ToUserName><![CDATA[gh_ganzhou]]></ToUserName><FromUserName><![CDATA[o-new]]></FromUserName>"
                 "<CreateTime>1</CreateTime><MsgType><![CDATA[event]]></MsgType><Event><![CDATA[subscribe]]></Event></xml>")
    r = await wechat_intake.client.post("/v1/wechat/callback", params=signed(), content=subscribe.encode())
    assert "欢迎关注" in xmltodict.parse(r.text)["xml"]["Content"]
    image = subscribe.replace("<MsgType><![CDATA[event]]></MsgType><Event><![CDATA[subscribe]]></Event>",
                              "<MsgType><![CDATA[image]]></MsgType><PicUrl><![CDATA[http://x/y.jpg]]></PicUrl>"
                              "<MediaId><![CDATA[m]]></MediaId><MsgId>5</MsgId>")
    r = await wechat_intake.client.post("/v1/wechat/callback", params=signed(), content=image.encode())
    assert "仅支持文字" in xmltodict.parse(r.text)["xml"]["Content"]


async def test_the_channel_is_off_unless_configured(wechat_intake: Intake, intake: Intake) -> None:
    r = await intake.client.get("/v1/wechat/callback", params={**signed(), "echostr": "x"})
    assert r.status_code == 404 and r.json()["error"]["code"] == "not_found"


def check_wechat_settings(settings: IntakeSettings, environment: str) -> None:
    settings.check_production(environment, settings.missing_wechat_secrets())


def test_production_refuses_to_start_without_the_credentials() -> None:
    with pytest.raises(SystemExit, match="WENZHENG_INTAKE_WECHAT_APP_SECRET"):
        check_wechat_settings(IntakeSettings(wechat_enabled=True, wechat_app_id=APP_ID, wechat_token=TOKEN),
                              "production")
    check_wechat_settings(IntakeSettings(wechat_enabled=False), "production")  # off: nothing needed
    check_wechat_settings(IntakeSettings(wechat_enabled=True, wechat_app_id=APP_ID, wechat_token=TOKEN,
                                         wechat_app_secret="s"), "production")


async def test_a_slow_answer_still_replies_in_time_and_the_work_finishes() -> None:
    finished = asyncio.Event()

    class SlowService:  # a fake of our own use case: the conversation takes longer than WeChat waits
        async def converse(self, sender, text, *, message_id=None):
            await asyncio.sleep(0.5)
            finished.set()
            return {"action": "post", "reply": "late"}

    message = SimpleNamespace(type="text", source="o-slow", content="路灯坏了", id=9)
    assert await answer_message(SlowService(), message, within_seconds=0.05) == STILL_WORKING
    await asyncio.wait_for(finished.wait(), 5)
