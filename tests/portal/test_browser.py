"""The portal in a real browser (Debian's Chromium through Playwright) against the real platform: citizens on
a 375-px phone, a unit's staff, the supervision office, the public dashboard, and a browser with JavaScript
off. Every page visited is screenshotted under var/screens/ and checked with axe-core."""

from __future__ import annotations

import re
import struct
import zlib
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

import httpx
import pytest

from harness.people import unit_staff_username
from tests.portal.conftest import api, shot, token_of, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.e2e]
PHONE = "13912345678"
SHANGHAI = ZoneInfo("Asia/Shanghai")
PHONE_VIEWPORT = {"width": 375, "height": 812}
DESKTOP = {"width": 1280, "height": 900}


def tiny_png() -> bytes:
    """A real 2x2 PNG (a photo of the broken lamp, as far as the tests are concerned)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    raw = b"".join(b"\x00" + b"\xff\x00\x00" * 2 for _ in range(2))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 2, 2, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))


def portal_url(platform) -> str:
    return platform.url("portal")


def public_view(platform, tracking: str) -> dict:
    return api(platform, "GET", f"/v1/posts/{tracking}").json()


def wait_assigned(platform, tracking: str) -> dict:
    return wait_for(lambda: (v := public_view(platform, tracking))["status"] in ("assigned", "triage") and v,
                    f"{tracking} routed")


def post_via_api(platform, title: str, body: str, county: str = "章贡区", township: str = "水西镇") -> dict:
    answer = api(platform, "POST", "/v1/posts", expect=201, json={
        "channel": "web", "title": title, "body": body, "contact_phone": PHONE,
        "location": {"county": county, "township": township}}).json()
    view = wait_assigned(platform, answer["tracking_number"])
    if view["status"] == "triage":  # the router was unsure: a supervisor would assign it; the test does the same
        pytest.skip("the router sent the test post to triage")
    return {**answer, **view}


def case_id_of(platform, token: str, tracking: str) -> str:
    items = api(platform, "GET", "/v1/cases", token=token, params={"q": tracking}).json()["items"]
    match = [c for c in items if c["tracking_number"] == tracking]
    if not match:  # an intake without keyword search: page through the person's cases
        for page in range(1, 20):
            items = api(platform, "GET", "/v1/cases", token=token, params={"page": page, "page_size": 200}).json()
            match = [c for c in items["items"] if c["tracking_number"] == tracking]
            if match or not items["items"]:
                break
    assert match, f"{tracking} not in the person's cases"
    return match[0]["case_id"]


def follow(page, target) -> None:
    """Click a link or a form's button and wait for the page it leads to (no race with the next check)."""
    with page.expect_navigation():
        target.click()


def sign_in(page, base: str, username: str, password: str) -> None:
    page.goto(base + "/staff/login")
    page.get_by_label("用户名").fill(username)
    page.get_by_label("密码").fill(password)
    follow(page, page.get_by_role("button", name="登录"))
    page.wait_for_load_state()


def staff_of(view: dict) -> str:
    return unit_staff_username(view["department"]["id"])


# --------------------------------------------------------------------------------------------------
# Citizens on a phone
# --------------------------------------------------------------------------------------------------


def test_citizen_posts_on_a_phone_and_follows_the_case_to_a_reply_and_a_rating(platform, people, browser):
    base = portal_url(platform)
    context = browser.new_context(viewport=PHONE_VIEWPORT, locale="zh-CN", timezone_id="Asia/Shanghai",
                                  base_url=base, is_mobile=True, has_touch=True)
    page = context.new_page()
    errors: list[str] = []
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.goto("/")
    assert page.title() == "首页 - 问政赣州"
    shot(page, "citizen-01-home-375")

    follow(page, page.get_by_role("link", name="我要留言").first)
    assert page.title().startswith("我要留言")
    # a first try with mistakes: errors in Chinese at the fields and a summary, what was typed is kept
    page.get_by_label("标题 *").fill("小区门口路灯不亮")
    page.get_by_label("手机号码 *").fill("12345")
    follow(page, page.get_by_role("button", name="提交留言"))
    assert page.locator("#error-summary").is_visible() and page.title().startswith("错误：我要留言")
    assert "请填写诉求内容" in page.locator("#error-summary").inner_text()
    assert "11 位手机号码" in page.locator("#phone-error").inner_text()
    assert page.get_by_label("标题 *").input_value() == "小区门口路灯不亮"
    shot(page, "citizen-02-post-errors-375")

    page.get_by_label("诉求内容 *").fill("我们小区门口的路灯坏了半个月了，晚上出行很不安全，希望城管部门尽快维修路灯。")
    page.get_by_label("县（市、区）").select_option("章贡区")
    townships = page.locator("#township optgroup").evaluate_all("gs => gs.map(g => g.label)")
    assert townships == ["章贡区"], "the township picker shows only the chosen county's townships"
    page.get_by_label("乡镇（街道）").select_option("水西镇")
    page.get_by_label("详细地址").fill("水西镇某某小区东门")
    page.get_by_label("手机号码 *").fill(PHONE)
    page.get_by_label("不匿名").check()
    assert page.locator("#photos-chosen").inner_text() == "未选择照片"
    page.set_input_files("#photos", files=[{"name": "lamp.png", "mimeType": "image/png", "buffer": tiny_png()}])
    # the browser's own file button says "Choose Files": ours stands in front of it, and says what was chosen
    assert page.get_by_text("选择照片", exact=True).is_visible()
    assert page.locator("#photos-chosen").inner_text() == "已选择 1 张：lamp.png"
    assert page.locator("#photos").bounding_box()["width"] <= 1
    shot(page, "citizen-03-post-filled-375")
    width = page.evaluate("document.documentElement.scrollWidth")
    assert width <= 375, f"the post form is {width}px wide on a 375-px phone"
    follow(page, page.get_by_role("button", name="提交留言"))

    assert page.title().startswith("提交成功")
    tracking = page.locator("#tracking-number").inner_text().strip()
    assert re.match(r"^[A-Z0-9-]{4,32}$", tracking)
    font_size = page.locator("#tracking-number").evaluate("e => parseFloat(getComputedStyle(e).fontSize)")
    assert font_size >= 30, "the tracking number is large"
    assert f"查询 {tracking}" in page.content()
    shot(page, "citizen-04-confirmation-375")
    assert PHONE not in page.content()

    view = wait_assigned(platform, tracking)
    if view["status"] == "triage":
        pytest.skip("the router sent the test post to triage")
    token = token_of(platform, people, staff_of(view))
    case_id = case_id_of(platform, token, tracking)
    stored = api(platform, "GET", f"/v1/cases/{case_id}", token=token).json()["attachments"]
    assert len(stored) == 1 and stored[0]["id"], "the photo went to intake with the post"
    page.goto(f"/track/{tracking}")
    assert page.title() == f"诉求 {tracking} - 问政赣州"
    assert "等待单位签收" in page.locator(".summary-list").inner_text()
    assert view["department"]["name"] in page.locator(".summary-list").inner_text()
    assert re.search(r"\d{4}年\d{1,2}月\d{1,2}日 \d{2}:\d{2}", page.locator(".summary-list").inner_text())
    shot(page, "citizen-05-track-assigned-375")

    # the unit signs and replies (through the API: this test follows the citizen)
    api(platform, "POST", f"/v1/cases/{case_id}/sign", token=token, json={})
    api(platform, "POST", f"/v1/cases/{case_id}/reply", token=token,
        json={"text": "您好，路灯已于今日修复，感谢您的监督。"})
    page.reload()
    assert "单位已回复" in page.locator(".summary-list").inner_text()
    assert "路灯已于今日修复" in page.locator(".reply").first.inner_text()
    # the same phone rates without proof (the confirmation left the rating token in its session)
    assert page.locator("#phone_last4").count() == 0
    page.get_by_label("满意", exact=True).check()
    shot(page, "citizen-06-reply-and-rating-form-375")
    follow(page, page.get_by_role("button", name="提交评价"))
    assert "感谢您的评价" in page.content()
    assert wait_for(lambda: public_view(platform, tracking)["status"] in ("rated", "closed"), "the rating")
    shot(page, "citizen-07-rated-375")
    assert page.evaluate("document.documentElement.scrollWidth") <= 375
    assert not [e for e in errors if "Content Security Policy" in e], errors

    # another phone (no rating token): the proof is the phone's last four digits, checked by intake
    other = browser.new_context(viewport=PHONE_VIEWPORT, base_url=base).new_page()
    other.goto(f"/track/{tracking}")
    assert other.locator("form[action$='/rating']").count() == 0, "a rated case offers no second rating"
    other.context.close()
    context.close()


def test_the_public_board_searches_and_pages(platform, browser):
    page = browser.new_context(viewport=PHONE_VIEWPORT, base_url=portal_url(platform)).new_page()
    response = page.goto("/board")
    if response.status == 404:
        pytest.xfail("intake has no public board yet (GET /v1/public/cases)")
    assert page.title() == "留言公开栏 - 问政赣州"
    page.get_by_label("关键词或编号").fill("路灯")
    follow(page, page.get_by_role("button", name="搜索"))
    page.wait_for_load_state()
    assert "路灯" in page.locator("#results").inner_text()
    assert PHONE not in page.content()
    shot(page, "public-01-board-375")
    page.context.close()


# --------------------------------------------------------------------------------------------------
# A unit's staff
# --------------------------------------------------------------------------------------------------


def test_unit_staff_sign_reply_with_a_template_and_return_a_case(platform, people, browser):
    base = portal_url(platform)
    first = post_via_api(platform, "拖欠工资", "我在一家建筑工地打工，老板拖欠我们三个月工资，请劳动部门帮忙讨薪。")
    username = staff_of(first)
    unit_id = first["department"]["id"]

    # the admin adds a reply template for that unit through the admin pages
    context = browser.new_context(viewport=DESKTOP, base_url=base)
    page = context.new_page()
    sign_in(page, base, "admin", people["admin"])
    page.goto(f"/admin/templates?unit_id={unit_id}")
    assert page.title() == "回复模板 - 问政赣州"
    page.get_by_label("模板名称").fill("已办结")
    page.get_by_label("模板内容").fill("您好，您反映的问题已经核实处理完毕，感谢您对我们工作的监督。")
    follow(page, page.get_by_role("button", name="保存模板"))
    assert "已办结" in page.locator("#template-list").inner_text()
    shot(page, "admin-01-reply-templates")
    page.goto("/admin")
    assert page.locator("#accounts").inner_text().count("单位经办人") > 10
    shot(page, "admin-02-accounts")
    page.goto("/admin/reference")
    assert "赣州市住房和城乡建设局" in page.content() or page.locator("#units tbody tr").count() > 10
    shot(page, "admin-03-reference")
    context.close()

    context = browser.new_context(viewport=DESKTOP, base_url=base)
    page = context.new_page()
    # a staff page without a session: sign in, then back to where the person was going
    response = page.goto(f"/staff?q={first['tracking_number']}")
    assert response.status == 401 and page.title() == "登录 - 问政赣州"
    page.get_by_label("用户名").fill(username)
    page.get_by_label("密码").fill(people[username])
    follow(page, page.get_by_role("button", name="登录"))
    assert page.url.endswith(f"/staff?q={first['tracking_number']}")
    counts = page.locator("#buckets").inner_text()
    assert "待签收" in counts and "已回复待评价" in counts
    shot(page, "staff-01-inbox")
    follow(page, page.get_by_role("link", name=first["title"]).first)
    assert page.title() == f"诉求 {first['tracking_number']} - 问政赣州"
    follow(page, page.get_by_role("button", name="签收这件诉求"))
    assert "已签收" in page.locator("[role=status]").first.inner_text()
    # revealing the contact (audited by intake) shows it on this answer only, on the unit's own case page
    follow(page, page.get_by_role("button", name="查看联系方式"))
    assert PHONE in page.locator("#contact").inner_text()
    shot(page, "staff-02a-contact-revealed")
    assert page.url.endswith("/reveal_contact")
    page.goto(page.url.rsplit("/", 1)[0])
    assert PHONE not in page.content()
    page.get_by_label("回复模板").select_option(label="已办结")
    assert "核实处理完毕" in page.get_by_label("回复内容（会公开）").input_value()
    shot(page, "staff-02-case-reply-with-template")
    follow(page, page.get_by_role("button", name="提交回复"))
    assert page.locator("[role=status]").first.inner_text().startswith("回复已提交")
    assert wait_for(lambda: public_view(platform, first["tracking_number"])["replies"], "the reply")
    assert "核实处理完毕" in public_view(platform, first["tracking_number"])["replies"][0]["text"]
    shot(page, "staff-03-case-replied")

    # a second case of the same unit goes back (退单) with a reason
    second = post_via_api(platform, "拖欠工资未结", "公司拖欠农民工工资两个月了，多次讨要无果，请劳动监察部门处理。")
    if second["department"]["id"] != unit_id:
        pytest.skip("the router sent the second post to another unit")
    token = token_of(platform, people, username)
    case_id = case_id_of(platform, token, second["tracking_number"])
    page.goto(f"/staff/cases/{case_id}")
    follow(page, page.get_by_role("button", name="退单"))  # no reason: the error is at the field
    assert page.locator("#return-reason-error").is_visible()
    assert "请填写退单理由" in page.locator("#error-summary").inner_text()
    shot(page, "staff-04-return-error")
    page.get_by_label("退单理由").fill("欠薪属于人社部门职责，不是本单位，建议改派劳动监察部门。")
    follow(page, page.get_by_role("button", name="退单"))
    assert "已退单" in page.content()
    assert wait_for(lambda: public_view(platform, second["tracking_number"])["status"] != "assigned"
                    or public_view(platform, second["tracking_number"])["department"]["id"] != unit_id, "the return")
    context.close()


# --------------------------------------------------------------------------------------------------
# The supervision office
# --------------------------------------------------------------------------------------------------


def test_supervisor_approves_an_extension_orders_second_handling_and_closes(platform, people, browser):
    base = portal_url(platform)
    a = post_via_api(platform, "噪音扰民", "附近工厂每天晚上十点以后还在生产，噪音很大，影响居民休息，请环保部门查处。")
    b = post_via_api(platform, "停水问题", "我们片区已经连续两天停水，没有任何通知，请水务公司尽快恢复供水。")
    staff_a, staff_b = token_of(platform, people, staff_of(a)), token_of(platform, people, staff_of(b))
    case_a = case_id_of(platform, staff_a, a["tracking_number"])
    case_b = case_id_of(platform, staff_b, b["tracking_number"])
    api(platform, "POST", f"/v1/cases/{case_a}/sign", token=staff_a, json={})
    api(platform, "POST", f"/v1/cases/{case_a}/extension", token=staff_a,
        json={"reason": "需要环保部门夜间现场监测", "extra_working_days": 3})
    api(platform, "POST", f"/v1/cases/{case_b}/sign", token=staff_b, json={})
    api(platform, "POST", f"/v1/cases/{case_b}/reply", token=staff_b, json={"text": "已通知水务公司排查。"})
    api(platform, "POST", f"/v1/posts/{b['tracking_number']}/rating",
        json={"rating": "unsatisfied", "reason": "到现在还是没有水", "phone_last4": PHONE[-4:]})

    context = browser.new_context(viewport=DESKTOP, base_url=base)
    page = context.new_page()
    sign_in(page, base, "supervisor", people["supervisor"])
    assert page.url.endswith("/supervisor")
    follow(page, page.get_by_role("link", name="延期申请待审批"))
    shot(page, "supervisor-01-extensions")
    page.goto(f"/staff/cases/{case_a}")
    assert "需要环保部门夜间现场监测" in page.content()
    old_deadline = public_view(platform, a["tracking_number"])["deadline"]
    follow(page, page.get_by_role("button", name="批准延期"))
    assert "已批准延期" in page.content()
    assert public_view(platform, a["tracking_number"])["deadline"] > old_deadline
    shot(page, "supervisor-02-extension-approved")

    page.goto("/supervisor?view=unsatisfied")
    shot(page, "supervisor-03-unsatisfied")
    page.goto(f"/staff/cases/{case_b}")
    page.get_by_label("二次办理的要求").fill("群众反映仍未恢复供水，请水务公司三日内彻底解决并回复。")
    follow(page, page.get_by_role("button", name="转二次办理"))
    assert "已转二次办理" in page.content()
    assert public_view(platform, b["tracking_number"])["status"] == "reopened"

    # a 督办 notice to the unit, shown at the top of that unit's inbox and answered there
    page.get_by_label("电话督办").check()
    page.get_by_label("督办要求").fill("请水务公司今天内联系群众并说明恢复供水时间。")
    page.get_by_label("限期答复日期").fill((datetime.now(SHANGHAI) + timedelta(days=3)).strftime("%Y-%m-%d"))
    follow(page, page.get_by_role("button", name="发出督办通知"))
    assert "督办通知已发出" in page.content()
    shot(page, "supervisor-04a-notice-issued")
    unit_page = browser.new_context(viewport=DESKTOP, base_url=base).new_page()
    sign_in(unit_page, base, staff_of(b), people[staff_of(b)])
    assert "请水务公司今天内联系群众" in unit_page.locator("#notices").inner_text()
    shot(unit_page, "staff-05-inbox-with-notice")
    unit_page.goto(f"/staff/cases/{case_b}")
    unit_page.get_by_label("答复督办").fill("已联系群众，今晚十点前恢复供水。")
    follow(unit_page, unit_page.get_by_role("button", name="提交督办答复"))
    assert "督办已答复" in unit_page.content()
    unit_page.context.close()

    page.goto(f"/staff/cases/{case_a}")
    page.get_by_label("办结说明").fill("经现场核查，工厂已停止夜间生产。")
    follow(page, page.get_by_role("button", name="办结销号"))
    assert "已办结销号" in page.content()
    assert public_view(platform, a["tracking_number"])["status"] == "closed"
    shot(page, "supervisor-04-closed")

    page.goto("/supervisor/overdue")
    assert page.title() == "超期情况 - 问政赣州"
    shot(page, "supervisor-05-overdue-board")
    page.goto("/supervisor?view=triage")
    shot(page, "supervisor-06-triage")
    context.close()


# --------------------------------------------------------------------------------------------------
# The public dashboard
# --------------------------------------------------------------------------------------------------


def test_the_dashboard_renders_its_charts_with_the_right_figures(platform, browser):
    stats = platform.url("stats")
    overview = wait_for(lambda: (o := httpx.get(stats + "/v1/stats/overview", timeout=10).json())["replied"] >= 2
                        and o, "stats to count the replies")
    page = browser.new_context(viewport=DESKTOP, base_url=portal_url(platform)).new_page()
    errors: list[str] = []
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.goto("/dashboard")
    assert page.title() == "数据公开 - 问政赣州"
    overview = httpx.get(stats + "/v1/stats/overview", timeout=10).json()
    reply = overview["reply_rate"]
    kpi = page.locator("#kpi-reply").inner_text()
    assert f"{reply['value'] * 100:.2f}%" in kpi and f"{reply['numerator']}/{reply['denominator']}" in kpi
    sat = overview["satisfaction_rate"]
    assert f"{sat['numerator']}/{sat['denominator']}" in page.locator("#kpi-satisfaction").inner_text()
    page.wait_for_function("() => window.wenzhengCharts && window.wenzhengCharts.length === 2")
    assert page.locator("#county-map").get_attribute("data-chart") == "map"
    # the map's series holds each county's satisfaction rate, under the map file's names (龙南市 -> 龙南县)
    series = page.evaluate("() => window.wenzhengCharts[0].getOption().series[0].data")
    counties = httpx.get(stats + "/v1/stats/counties", timeout=10).json()["items"]
    zhanggong = next(c for c in counties if c["id"] == "章贡区" or c.get("name") == "章贡区")
    point = next(p for p in series if p["name"] == "章贡区")
    expected = zhanggong["satisfaction_rate"]["value"]
    assert point["value"] == (None if expected is None else round(expected * 100, 2))
    assert "章贡区" in page.locator("#county-table").inner_text()
    trend = page.evaluate("() => window.wenzhengCharts[1].getOption().series[0].data")
    assert sum(trend) == overview["received"]
    assert not [e for e in errors if "Content Security Policy" in e], errors
    shot(page, "public-02-dashboard")

    this_month = datetime.now(SHANGHAI).strftime("%Y-%m")
    page.goto(f"/dashboard/bulletin?month={this_month}")
    assert page.title().endswith("网络问政办理情况通报 - 问政赣州")
    assert "关于" in page.locator(".doc-title").inner_text()
    ranked = httpx.get(stats + "/v1/reports/monthly", params={"month": this_month, "format": "json"}, timeout=10).json()
    assert str(ranked["totals"]["received"]) in page.locator("#bulletin").inner_text()
    assert ranked["issuer"] in page.locator(".doc-office").inner_text(), "the office that stats names (xlsx too)"
    assert re.search(r"二〇\S+年\S+月\S+日", page.locator(".doc-sign").inner_text())
    page.emulate_media(media="print")
    shot(page, "public-03-bulletin-print")
    page.emulate_media(media="screen")
    pdf = page.pdf(format="A4")
    assert pdf[:4] == b"%PDF"
    xlsx = httpx.get(portal_url(platform) + f"/dashboard/bulletin.xlsx?month={this_month}", timeout=30)
    assert xlsx.status_code == 200 and xlsx.content[:2] == b"PK", xlsx.status_code

    # a narrow screen: the dashboard still fits
    page.set_viewport_size(PHONE_VIEWPORT)
    page.goto("/dashboard")
    page.wait_for_function("() => window.wenzhengCharts && window.wenzhengCharts.length === 2")
    shot(page, "public-04-dashboard-375")
    page.context.close()


# --------------------------------------------------------------------------------------------------
# JavaScript off
# --------------------------------------------------------------------------------------------------


def test_with_javascript_off_a_citizen_still_posts_and_looks_the_case_up(platform, browser):
    context = browser.new_context(viewport=PHONE_VIEWPORT, base_url=portal_url(platform), java_script_enabled=False)
    page = context.new_page()
    page.goto("/post")
    # without JavaScript every township is listed, grouped by county
    assert page.locator("#township optgroup").count() >= 18
    page.get_by_label("标题 *").fill("公交线路建议")
    page.get_by_label("诉求内容 *").fill("建议增加到高铁站的公交班次，现在高峰期等车要半个多小时，很不方便。")
    page.get_by_label("县（市、区）").select_option("南康区")
    page.get_by_label("乡镇（街道）").select_option("唐江镇")
    page.get_by_label("手机号码 *").fill("13800001111")
    page.get_by_label("建议").check()
    follow(page, page.get_by_role("button", name="提交留言"))
    tracking = page.locator("#tracking-number").inner_text().strip()
    shot(page, "nojs-01-confirmation-375", axe=False)
    page.goto("/track")
    page.get_by_label("诉求编号").fill(tracking.lower())
    follow(page, page.get_by_role("button", name="查询"))
    assert page.url.endswith(f"/track/{tracking}")
    assert page.locator("h1").inner_text() == "【建议】公交线路建议"
    shot(page, "nojs-02-track-375", axe=False)
    response = page.goto("/track/NOSUCH-0000")
    assert response.status == 404 and "没有找到编号为 NOSUCH-0000 的诉求" in page.content()
    shot(page, "nojs-03-not-found-375", axe=False)
    context.close()


# --------------------------------------------------------------------------------------------------
# Security and bad input, seen as a browser sees them
# --------------------------------------------------------------------------------------------------


def test_forged_forms_bad_uploads_and_headers(platform, browser):
    base = portal_url(platform)
    home = httpx.get(base + "/", timeout=10)
    csp = home.headers["content-security-policy"]
    assert "frame-ancestors 'none'" in csp and "'unsafe-inline'" not in csp and "script-src 'self'" in csp
    assert home.headers["x-content-type-options"] == "nosniff" and home.headers["referrer-policy"]
    cookie = home.headers["set-cookie"].lower()
    assert "httponly" in cookie and "samesite=lax" in cookie
    # a forged form (no CSRF token): 403, a message in Chinese, and what was typed is kept
    forged = httpx.post(base + "/post", data={"title": "伪造的表单", "body": "内容", "phone": PHONE}, timeout=10)
    assert forged.status_code == 403 and "页面已过期或表单来源不明" in forged.text and "伪造的表单" in forged.text
    page = browser.new_context(viewport=PHONE_VIEWPORT, base_url=base).new_page()
    page.goto("/post")
    page.get_by_label("标题 *").fill("照片不对")
    page.get_by_label("诉求内容 *").fill("上传一个不是图片的文件")
    page.get_by_label("手机号码 *").fill(PHONE)
    page.set_input_files("#photos", files=[{"name": "note.png", "mimeType": "image/png", "buffer": b"not an image"}])
    with page.expect_response(lambda r: r.url.endswith("/post") and r.request.method == "POST") as answer:
        page.get_by_role("button", name="提交留言").click()
    assert answer.value.status == 415
    assert "不是 JPG、PNG 或 WebP 图片" in page.locator("#photos-error").inner_text()
    assert page.get_by_label("标题 *").input_value() == "照片不对"
    shot(page, "citizen-08-upload-refused-375")
    big = b"\xff\xd8\xff" + b"0" * (5 * 1024 * 1024 + 10)
    page.set_input_files("#photos", files=[{"name": "big.jpg", "mimeType": "image/jpeg", "buffer": big}])
    with page.expect_response(lambda r: r.url.endswith("/post") and r.request.method == "POST") as answer:
        page.get_by_role("button", name="提交留言").click()
    assert answer.value.status == 413 and "超过 5 MB" in page.locator("#photos-error").inner_text()
    page.context.close()
    metrics = httpx.get(base + "/metrics", timeout=10).text
    assert 'wenzheng_portal_page_duration_seconds_count{method="GET",route="/post"' in metrics
    assert "wenzheng_portal_sign_ins_total" in metrics
    assert PHONE not in (platform.dir / "portal-0.log").read_text(encoding="utf-8")
