"""The portal's pure parts: what the pages say, the checks of the forms before anything is sent, the county
map's names, the session cookie and the CSRF token."""

from __future__ import annotations

from datetime import date

import pytest

from services.portal import domain
from services.portal.pages.staff import ACTIONS, check_action, list_filters
from services.portal.security import Session, SessionCodec, csrf_ok, safe_next

REFERENCE = {"counties": [{"name": "章贡区", "townships": ["水西镇", "解放街道"]},
                          {"name": "龙南市", "aliases": ["龙南", "龙南县"], "townships": ["龙南镇"]},
                          {"name": "瑞金市", "townships": ["象湖镇"]}]}
COUNTIES = domain.counties_of(REFERENCE)


def good_form(**changes) -> dict:
    form = {"kind": "complaint", "title": "路灯不亮", "body": "小区门口路灯坏了半个月。", "county": "章贡区",
            "township": "水西镇", "address": "东门", "phone": "139 1234 5678", "name": "", "anonymous": "no"}
    return form | changes


def test_times_read_in_shanghai_in_the_chinese_form():
    assert domain.local_time("2026-12-01T10:05:00+00:00") == "2026年12月1日 18:05"
    assert domain.local_time("2026-12-31T16:30:00Z") == "2027年1月1日 00:30"
    assert domain.local_time(None) == "" and domain.local_time("not a time") == ""
    assert domain.local_date("2026-12-08") == "2026年12月8日"


def test_the_bulletin_dates_itself_as_official_documents_do():
    assert domain.official_date(date(2026, 12, 1)) == "二〇二六年十二月一日"
    assert domain.official_date(date(2027, 1, 30)) == "二〇二七年一月三十日"
    assert domain.official_date(date(2026, 10, 21)) == "二〇二六年十月二十一日"
    assert domain.previous_month(date(2026, 1, 15)) == "2025-12" and domain.month_words("2026-03") == "2026年3月"


def test_a_good_post_form_becomes_intakes_post_body():
    check = domain.check_post_form(good_form(), COUNTIES)
    assert check.ok, check.errors
    body = domain.post_payload(check.values, ["a-1"])
    assert body == {"channel": "web", "title": "【投诉】路灯不亮", "body": "小区门口路灯坏了半个月。\n（地址：东门）",
                    "contact_phone": "13912345678", "anonymous": False,
                    "location": {"county": "章贡区", "township": "水西镇"}, "attachment_ids": ["a-1"]}


@pytest.mark.parametrize(("changes", "field", "words"), [
    ({"title": ""}, "title", "请填写标题"),
    ({"title": "长" * 101}, "title", "不能超过 100 个字"),
    ({"body": "  "}, "body", "请填写诉求内容"),
    ({"phone": "12345"}, "phone", "11 位手机号码"),
    ({"phone": ""}, "phone", "请填写手机号码"),
    ({"county": "不存在县"}, "county", "从列表中选择"),
    ({"township": "象湖镇"}, "township", "不属于章贡区"),
    ({"county": "", "township": "水西镇"}, "county", "先选择县"),
    ({"kind": "spam"}, "kind", "投诉、咨询或建议"),
    ({"name": "名" * 51}, "name", "50 个字"),
])
def test_each_mistake_gets_a_chinese_message_at_its_field(changes, field, words):
    check = domain.check_post_form(good_form(**changes), COUNTIES)
    assert not check.ok and words in check.errors[field]
    assert check.values["title"] == good_form(**changes)["title"].strip()  # what was typed is kept


def test_without_the_directory_any_county_is_accepted_as_typed():
    assert domain.check_post_form(good_form(county="某某县", township="某镇"), {}).ok


def test_uploads_are_recognised_by_their_first_bytes():
    assert domain.sniff_image(b"\xff\xd8\xff\xe0rest") == "image/jpeg"
    assert domain.sniff_image(b"\x89PNG\r\n\x1a\n....") == "image/png"
    assert domain.sniff_image(b"RIFF\x00\x00\x00\x00WEBPVP8 ") == "image/webp"
    assert domain.sniff_image(b"GIF89a") is None and domain.sniff_image(b"<svg") is None


def test_the_map_file_names_are_reached_through_the_reference_data():
    geo = ["章贡区", "龙南县", "瑞金市"]
    assert domain.map_names(geo, REFERENCE) == {"章贡区": "章贡区", "龙南市": "龙南县", "瑞金市": "瑞金市"}
    without_aliases = {"counties": [{"name": "龙南市"}]}
    assert domain.map_names(geo, without_aliases) == {"龙南市": "龙南县"}


def test_rates_print_with_their_fraction_and_interval():
    ratio = {"value": 0.9202, "numerator": 3691, "denominator": 4011, "wilson_low": 0.9116, "wilson_high": 0.928}
    assert domain.percent(ratio) == "92.02%" and domain.fraction(ratio) == "3691/4011"
    assert domain.interval(ratio) == "91.2%–92.8%"
    assert domain.percent({"value": None}) == "—" and domain.interval(None) == "—"


def test_error_codes_read_in_chinese_whatever_the_code():
    assert domain.error_words("invalid_credentials") == "用户名或密码不正确"
    assert domain.error_words("something_new", 409) == domain.ERROR_WORDS["illegal_transition"]
    assert domain.error_words("x", 503) == domain.ERROR_WORDS["backend_error"]


def test_case_action_forms_are_checked_before_they_are_sent():
    extension = ACTIONS["request_extension"]
    body, errors, typed = check_action(extension, {"reason": "需要现场核查", "extra_working_days": "3"})
    assert body == {"reason": "需要现场核查", "extra_working_days": 3} and not errors
    _, errors, typed = check_action(extension, {"reason": "", "extra_working_days": "99"})
    assert errors == {"reason": "请填写延期理由", "extra_working_days": "延长的工作日请填写 1 到 30 之间的整数"}
    assert typed["extra_working_days"] == "99"
    notice = {"method": "on_site", "note": "请尽快处理", "reply_by": "2026-12-08"}
    body, errors, _ = check_action(ACTIONS["notice"], notice)
    assert body == notice and not errors
    _, errors, _ = check_action(ACTIONS["notice"], {"method": "fax", "note": "请尽快处理", "reply_by": "12/08"})
    assert set(errors) == {"method", "reply_by"}
    body, errors, _ = check_action(ACTIONS["callback"], {"reached": "yes", "rating": "satisfied", "note": "电话回访"})
    assert body == {"reached": True, "rating": "satisfied", "note": "电话回访"} and not errors
    _, errors, _ = check_action(ACTIONS["callback"], {"note": "电话回访"})
    assert "reached" in errors
    _, errors, _ = check_action(ACTIONS["callback"], {"reached": "no", "rating": "satisfied", "note": "无人接听"})
    assert errors == {"rating": "没有联系上群众时，不能替群众评价"}
    assert check_action(ACTIONS["sign"], {}) == ({}, {}, {})


def test_inbox_filters_drop_what_is_not_a_date_or_a_bucket():
    values, errors = list_filters({"bucket": "nonsense", "q": " 路灯 ", "since": "2026-13-01", "until": "2026-12-01",
                                   "page": "x"})
    assert values == {"bucket": "", "q": "路灯", "since": "", "until": "2026-12-01", "page": 1}
    assert "年-月-日" in errors["since"]
    _, errors = list_filters({"since": "2026-12-05", "until": "2026-12-01"})
    assert errors == {"until": "结束日期不能早于开始日期"}


def test_the_session_cookie_is_signed_and_expires():
    codec = SessionCodec("secret", max_age_seconds=60)
    session = Session()
    session.sign_in("intake-token", {"id": "p-1", "display_name": "张三", "roles": ["unit_staff"]}, None)
    session.remember_rating_token("WZ-1", "rt")
    cookie = codec.encode(session)
    back = codec.decode(cookie)
    assert back.token == "intake-token" and back.roles == {"unit_staff"} and back.rating_tokens == {"WZ-1": "rt"}
    assert back.csrf == session.csrf and not back.changed
    assert codec.decode(cookie[:-2] + "xx").token is None, "a tampered cookie is a new, empty session"
    assert SessionCodec("other-secret", 60).decode(cookie).token is None
    assert SessionCodec("secret", max_age_seconds=-1).decode(cookie).token is None, "an old cookie has ended"


def test_csrf_tokens_and_redirects():
    session = Session()
    assert csrf_ok(session, session.csrf) and not csrf_ok(session, None) and not csrf_ok(session, "forged")
    old = session.csrf
    session.sign_in("t", {"roles": []}, None)
    assert session.csrf != old, "a new token at every sign-in"
    assert safe_next("/staff?q=1", "/") == "/staff?q=1"
    for bad in ("//evil.example/", "https://evil.example/", "\\\\evil", "", None):
        assert safe_next(bad, "/staff") == "/staff"


def test_only_the_last_few_rating_tokens_are_kept():
    session = Session()
    for i in range(8):
        session.remember_rating_token(f"WZ-{i}", f"t{i}")
    assert list(session.rating_tokens) == [f"WZ-{i}" for i in range(3, 8)]
