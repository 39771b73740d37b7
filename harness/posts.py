"""Realistic citizen posts for load and end-to-end runs (generated, not taken from any real data set)."""

from __future__ import annotations

import random

PLACES = [("章贡区", "水西镇"), ("章贡区", "解放街道"), ("南康区", "蓉江街道"), ("赣县区", "梅林镇"),
          ("瑞金市", "象湖镇"), ("于都县", "贡江镇"), ("兴国县", "潋江镇"), ("信丰县", "嘉定镇"),
          ("宁都县", "梅江镇"), ("龙南市", "龙南镇"), ("会昌县", "文武坝镇"), ("寻乌县", "长宁镇")]
PROBLEMS = [
    ("路灯不亮", "我们小区门口的路灯坏了半个月了，晚上出行很不安全，希望尽快维修。"),
    ("工资被拖欠", "我在一家建筑工地打工，老板拖欠我们三个月工资，多次讨要无果，请劳动部门帮忙。"),
    ("孩子入学咨询", "请问今年秋季小学一年级入学需要准备哪些材料？学位申请什么时候开始？"),
    ("噪音扰民", "附近工厂每天晚上十点以后还在生产，噪音很大，影响居民休息，请环保部门查处。"),
    ("停水问题", "我们片区已经连续两天停水，没有任何通知，居民生活受到很大影响，请水务公司尽快恢复供水。"),
    ("物业乱收费", "小区物业公司擅自提高物业费，也不公示收支情况，业主意见很大，请住建部门调查。"),
    ("公交线路建议", "建议增加到高铁站的公交班次，现在高峰期等车要半个多小时，很不方便。"),
    ("医保报销", "异地就医的医保报销流程是怎样的？需要先备案吗？在哪里办理？"),
    ("占道经营", "菜市场门口很多摊贩占道经营，堵塞交通，垃圾遍地，请城管部门整治。"),
    ("食品安全", "在一家餐馆吃饭后全家腹泻，怀疑食材不新鲜，请市场监管部门检查。"),
]
CHANNELS = ["web", "wechat", "app", "sms", "phone"]


def realistic_post(rng: random.Random, *, phone: str | None = None) -> dict:
    county, township = rng.choice(PLACES)
    title, body = rng.choice(PROBLEMS)
    detail = f"（{rng.randint(1, 40)}栋附近，第{rng.randint(1, 9)}次反映）"
    with_location = rng.random() < 0.5
    post = {
        "channel": rng.choice(CHANNELS),
        "title": title,
        "body": f"尊敬的领导：我是{county}{township}居民。{body}{detail}",
        "contact_phone": phone or f"1{rng.choice('3456789')}{rng.randint(0, 999_999_999):09d}",
        "anonymous": rng.random() < 0.2,
    }
    if with_location:
        post["location"] = {"county": county, "township": township}
    return post
