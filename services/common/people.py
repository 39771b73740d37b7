"""How times read for people: Asia/Shanghai, written the Chinese way (``2026年12月10日``).

The wire keeps UTC ISO 8601; every SMS, notification, bulletin and human-readable field goes through these.
A deadline is an instant at 24:00 Shanghai time, so the day people are told is the day before that instant.
"""

from __future__ import annotations

from datetime import date, datetime, timedelta

from services.common.workdays import SHANGHAI

_TICK = timedelta(microseconds=1)


def shanghai(moment: datetime) -> datetime:
    return moment.astimezone(SHANGHAI)


def chinese_date(day: date) -> str:
    return f"{day.year}年{day.month}月{day.day}日"


def people_date(moment: datetime) -> str:
    """The Shanghai calendar day of an instant: ``2026年12月10日``."""
    return chinese_date(shanghai(moment).date())


def people_deadline(deadline: datetime) -> str:
    """The last day still in time for a deadline (deadlines fall at 24:00 Shanghai)."""
    return people_date(deadline - _TICK)


def people_time(moment: datetime) -> str:
    """Day and minute in Shanghai: ``2026年12月10日 14:05``."""
    local = shanghai(moment)
    return f"{chinese_date(local.date())} {local:%H:%M}"


def people_month(month: str) -> str:
    """``2026-11`` → ``2026年11月``."""
    year, number = month.split("-")
    return f"{int(year)}年{int(number)}月"


# names people read for the platform's codes (the wire keeps the codes)
STATUS_NAMES = {
    "submitted": "已受理", "assigned": "已交办", "triage": "待人工分派", "signed": "已签收", "returned": "已退回",
    "extended": "已延期", "replied": "已答复", "rated": "已评价", "reopened": "二次办理", "closed": "已办结",
}
RATING_NAMES = {"satisfied": "满意", "basically_satisfied": "基本满意", "unsatisfied": "不满意"}
