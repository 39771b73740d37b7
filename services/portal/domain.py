"""What the pages say, as pure functions: status and event words, Chinese times and dates, the Chinese
message for each error code, checks of the citizen's form before anything is sent, and the county map's
names. No I/O here."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import Any
from zoneinfo import ZoneInfo

SHANGHAI = ZoneInfo("Asia/Shanghai")

STATUS_WORDS = {
    "submitted": "已受理，正在分派",
    "assigned": "已交办，等待单位签收",
    "triage": "正在人工分派",
    "signed": "单位已签收，正在办理",
    "returned": "单位退回，正在重新分派",
    "extended": "已延期，正在办理",
    "replied": "单位已回复，等待评价",
    "rated": "已评价",
    "reopened": "二次办理中",
    "closed": "已办结",
}
STATUS_SHORT = {
    "submitted": "已受理", "assigned": "待签收", "triage": "待分派", "signed": "办理中", "returned": "已退回",
    "extended": "已延期", "replied": "已回复", "rated": "已评价", "reopened": "二次办理", "closed": "已办结",
}
EVENT_WORDS = {
    "submitted": "提交诉求", "assigned": "交办到单位", "triaged": "转人工分派", "linked": "与已有诉求合并",
    "signed": "单位签收", "returned": "单位退回", "extension_requested": "申请延期", "extended": "延期获批",
    "extension_denied": "延期未获批", "replied": "单位回复", "reply_pending": "回复待领导审核",
    "reply_approved": "领导审核通过回复", "reply_rejected": "领导退回回复", "rated": "群众评价",
    "reopened": "转二次办理", "closed": "办结销号", "flagged": "列为典型案例", "reassigned": "改派",
    "noticed": "发出督办", "notice_issued": "发出督办", "notice_answered": "单位答复督办",
    "callback": "回访", "callback_recorded": "回访", "contact_revealed": "查看联系方式",
}
RATING_WORDS = {"satisfied": "满意", "basically_satisfied": "基本满意", "unsatisfied": "不满意"}
ACTION_WORDS = {
    "sign": "签收", "reply": "回复", "approve_reply": "审核通过回复", "reject_reply": "退回回复",
    "return": "退单", "request_extension": "申请延期", "reveal_contact": "查看联系方式",
    "answer_notice": "答复督办", "approve_extension": "批准延期", "deny_extension": "不批准延期",
    "reassign": "改派", "reopen": "转二次办理", "close": "办结销号", "flag": "列为典型案例", "notice": "发出督办",
    "callback": "记录回访",
}
BUCKETS = (("to_sign", "待签收"), ("handling", "办理中"), ("due_soon", "即将超期"), ("overdue", "已超期"),
           ("reopened", "二次办理"), ("awaiting_rating", "已回复待评价"))
NOTICE_METHODS = {"phone": "电话督办", "on_site": "现场督办", "meeting": "会议督办"}
ROLE_WORDS = {"unit_staff": "单位经办人", "unit_lead": "单位负责人", "supervisor": "督办人员", "admin": "系统管理员"}
KIND_WORDS = {"complaint": "投诉", "inquiry": "咨询", "suggestion": "建议"}  # services.common.events.PostKind

# Chinese text for each stable error code of the contract (docs/people-api.md); the field decides where it goes
ERROR_WORDS = {
    "invalid_credentials": "用户名或密码不正确",
    "account_locked": "账号已被暂时锁定，请稍后再试",
    "rate_limited": "操作太频繁，请稍后再试",
    "weak_password": "新密码太简单：至少 10 位，并包含字母和数字",
    "unauthorized": "登录已失效，请重新登录",
    "forbidden": "您没有权限进行这项操作",
    "not_found": "没有找到这条记录",
    "conflict": "这件诉求刚刚有了变化，请刷新后再试",
    "illegal_transition": "诉求当前的状态不允许这项操作",
    "invalid_transition": "诉求当前的状态不允许这项操作",
    "validation_error": "填写的内容不符合要求",
    "too_large": "文件太大",
    "unsupported_media_type": "只能上传 JPG、PNG 或 WebP 图片",
    "backend_unreachable": "系统暂时无法连接，请稍后再试",
    "backend_timeout": "系统响应超时，请稍后再试",
    "backend_error": "系统暂时出现问题，请稍后再试",
    "already_rated": "这件诉求已经评价过了",
    "not_replied": "单位回复后才能评价",
    "csrf": "页面已过期或表单来源不明，请刷新页面后重新提交",
}


def error_words(code: str, status: int = 400) -> str:
    if code in ERROR_WORDS:
        return ERROR_WORDS[code]
    if status == 401:
        return ERROR_WORDS["unauthorized"]
    if status == 403:
        return ERROR_WORDS["forbidden"]
    if status == 404:
        return ERROR_WORDS["not_found"]
    if status == 409:
        return ERROR_WORDS["illegal_transition"]
    if status == 429:
        return ERROR_WORDS["rate_limited"]
    if status >= 500:
        return ERROR_WORDS["backend_error"]
    return ERROR_WORDS["validation_error"]


# --------------------------------------------------------------------------------------------------
# Times: the wire is UTC ISO 8601, people read Asia/Shanghai
# --------------------------------------------------------------------------------------------------


def parse_time(value: str | datetime | None) -> datetime | None:
    if value is None or value == "":
        return None
    if isinstance(value, datetime):
        moment = value
    else:
        try:
            moment = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
        except ValueError:
            return None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def local_time(value: str | datetime | None) -> str:
    """``2026年12月1日 18:05`` in Asia/Shanghai; empty for no time."""
    moment = parse_time(value)
    if moment is None:
        return ""
    m = moment.astimezone(SHANGHAI)
    return f"{m.year}年{m.month}月{m.day}日 {m.hour:02d}:{m.minute:02d}"


def local_date(value: str | datetime | date | None) -> str:
    if value is None or value == "":
        return ""
    if isinstance(value, date) and not isinstance(value, datetime):
        d = value
    else:
        moment = parse_time(value)  # type: ignore[arg-type]
        if moment is None:
            try:
                d = date.fromisoformat(str(value)[:10])
            except ValueError:
                return str(value)
        else:
            d = moment.astimezone(SHANGHAI).date()
    return f"{d.year}年{d.month}月{d.day}日"


_DIGITS = "〇一二三四五六七八九"


def _chinese_number(n: int) -> str:
    if n < 10:
        return _DIGITS[n]
    tens, ones = divmod(n, 10)
    return ("" if tens == 1 else _DIGITS[tens]) + "十" + (_DIGITS[ones] if ones else "")


def official_date(d: date) -> str:
    """The date as official documents write it: 二〇二六年十二月一日."""
    year = "".join(_DIGITS[int(c)] for c in str(d.year))
    return f"{year}年{_chinese_number(d.month)}月{_chinese_number(d.day)}日"


def month_words(month: str) -> str:
    year, mon = month.split("-")
    return f"{int(year)}年{int(mon)}月"


def previous_month(today: date) -> str:
    year, mon = (today.year, today.month - 1) if today.month > 1 else (today.year - 1, 12)
    return f"{year:04d}-{mon:02d}"


def current_month(today: date) -> str:
    return f"{today.year:04d}-{today.month:02d}"


def today_shanghai(now: datetime | None = None) -> date:
    return (now or datetime.now(UTC)).astimezone(SHANGHAI).date()


# --------------------------------------------------------------------------------------------------
# Rates as the dashboard prints them
# --------------------------------------------------------------------------------------------------


def percent(ratio: dict[str, Any] | None) -> str:
    if not ratio or ratio.get("value") is None:
        return "—"
    return f"{ratio['value'] * 100:.2f}%"


def interval(ratio: dict[str, Any] | None) -> str:
    if not ratio or ratio.get("wilson_low") is None:
        return "—"
    return f"{ratio['wilson_low'] * 100:.1f}%–{ratio['wilson_high'] * 100:.1f}%"


def fraction(ratio: dict[str, Any] | None) -> str:
    if not ratio:
        return "—"
    return f"{ratio.get('numerator', 0)}/{ratio.get('denominator', 0)}"


# --------------------------------------------------------------------------------------------------
# The citizen's post form, checked before anything leaves the portal
# --------------------------------------------------------------------------------------------------

PHONE = re.compile(r"^1[3-9]\d{9}$")
TRACKING = re.compile(r"^[A-Za-z0-9-]{4,32}$")
TITLE_MAX, BODY_MAX, NAME_MAX, ADDRESS_MAX = 100, 5000, 50, 200
CHANNEL = "web"


@dataclass
class FormCheck:
    values: dict[str, Any]
    errors: dict[str, str] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.errors


def _clean(value: Any) -> str:
    return str(value or "").replace("\x00", "").strip()


def check_post_form(form: dict[str, Any], counties: dict[str, list[str]]) -> FormCheck:
    """The fields of /post, with a Chinese message per wrong field (GOV.UK style: say what to do)."""
    values = {k: _clean(form.get(k)) for k in ("kind", "title", "body", "county", "township", "address", "phone",
                                                "name", "anonymous")}
    check = FormCheck(values)
    e = check.errors
    if values["kind"] not in KIND_WORDS:
        e["kind"] = "请选择诉求类型：投诉、咨询或建议"
    if not values["title"]:
        e["title"] = "请填写标题，用一句话说明问题"
    elif len(values["title"]) > TITLE_MAX:
        e["title"] = f"标题不能超过 {TITLE_MAX} 个字，现在是 {len(values['title'])} 个字"
    if not values["body"]:
        e["body"] = "请填写诉求内容：发生了什么、在哪里、希望怎么解决"
    elif len(values["body"]) > BODY_MAX:
        e["body"] = f"诉求内容不能超过 {BODY_MAX} 个字，现在是 {len(values['body'])} 个字"
    if values["county"] and counties and values["county"] not in counties:
        e["county"] = "请从列表中选择县（市、区）"
    if values["township"]:
        if not values["county"]:
            e["county"] = "选择乡镇（街道）前，请先选择县（市、区）"
        elif counties.get(values["county"]) and values["township"] not in counties[values["county"]]:
            e["township"] = f"所选乡镇（街道）不属于{values['county']}，请重新选择"
    if len(values["address"]) > ADDRESS_MAX:
        e["address"] = f"详细地址不能超过 {ADDRESS_MAX} 个字"
    phone = re.sub(r"[\s-]", "", values["phone"])
    values["phone"] = phone
    if not phone:
        e["phone"] = "请填写手机号码，办理单位需要时会联系您"
    elif not PHONE.match(phone):
        e["phone"] = "请填写 11 位手机号码，例如 13912345678"
    if len(values["name"]) > NAME_MAX:
        e["name"] = f"姓名不能超过 {NAME_MAX} 个字"
    if values["anonymous"] not in ("", "yes", "no"):
        e["anonymous"] = "请选择是否匿名"
    return check


def post_payload(values: dict[str, Any], attachment_ids: list[str]) -> dict[str, Any]:
    """The body of intake's POST /v1/posts from a checked form."""
    body = values["body"]
    if values["address"]:
        body = f"{body}\n（地址：{values['address']}）"
    payload: dict[str, Any] = {
        "channel": CHANNEL,
        "title": values["title"],
        "body": body,
        "contact_phone": values["phone"],
        "anonymous": values["anonymous"] == "yes",
    }
    if values["kind"]:
        payload["title"] = f"【{KIND_WORDS[values['kind']]}】{values['title']}"[:TITLE_MAX]
    if values["name"]:
        payload["name"] = values["name"]
    if values["county"]:
        location: dict[str, Any] = {"county": values["county"]}
        if values["township"]:
            location["township"] = values["township"]
        payload["location"] = location
    if attachment_ids:
        payload["attachment_ids"] = attachment_ids
    return payload


def normalise_tracking(value: str) -> str:
    return re.sub(r"\s+", "", value or "").upper()


# --------------------------------------------------------------------------------------------------
# Uploads: checked by their first bytes, not by what the browser claims
# --------------------------------------------------------------------------------------------------

IMAGE_SIGNATURES = ((b"\xff\xd8\xff", "image/jpeg"), (b"\x89PNG\r\n\x1a\n", "image/png"))


def sniff_image(head: bytes) -> str | None:
    for signature, media_type in IMAGE_SIGNATURES:
        if head.startswith(signature):
            return media_type
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "image/webp"
    return None


# --------------------------------------------------------------------------------------------------
# Reference data for pickers, and the county map's names
# --------------------------------------------------------------------------------------------------


def counties_of(reference: dict[str, Any]) -> dict[str, list[str]]:
    """county name -> its townships, from GET /v1/reference (counties with townships)."""
    result: dict[str, list[str]] = {}
    for county in reference.get("counties", []) or []:
        if isinstance(county, str):
            result[county] = []
            continue
        townships = county.get("townships") or []
        result[county["name"]] = [t if isinstance(t, str) else t.get("name", "") for t in townships]
    return result


def map_names(geo_names: list[str], reference: dict[str, Any]) -> dict[str, str]:
    """Reference county name -> the name the map file uses. The npm map still says 龙南县 (now 龙南市): a
    county matches a map feature by its name, one of its aliases, or the same place name with another suffix."""
    def stem(name: str) -> str:
        return re.sub(r"(县|市|区)$", "", name)

    mapping: dict[str, str] = {}
    geo_set = set(geo_names)
    for county in reference.get("counties", []) or []:
        name = county if isinstance(county, str) else county.get("name", "")
        aliases = [] if isinstance(county, str) else list(county.get("aliases") or [])
        for candidate in (name, *aliases):
            if candidate in geo_set:
                mapping[name] = candidate
                break
        else:
            same = [g for g in geo_names if stem(g) == stem(name)]
            if same:
                mapping[name] = same[0]
    return mapping


def names_by_id(items: list[dict[str, Any]] | None, key: str = "id") -> dict[str, str]:
    return {item[key]: item.get("name") or item[key] for item in items or [] if key in item}
