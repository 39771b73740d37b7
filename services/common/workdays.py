"""Working-day arithmetic in Asia/Shanghai: China's official holidays and adjusted workdays (调休).

The chinese-calendar package knows the published schedules; ``data/workday_overrides.yaml`` adds years it
does not know yet and corrections. A year neither knows falls back to Monday–Friday, and
:func:`calendar_coverage` says so, so operators can see it on the metrics page.

Deadline convention: a case assigned at any moment of day D with N working days is due at the end
(24:00 Shanghai) of the N-th working day after D. Replies up to that instant are on time.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from functools import lru_cache
from pathlib import Path
from zoneinfo import ZoneInfo

import chinese_calendar
import yaml

SHANGHAI = ZoneInfo("Asia/Shanghai")
OVERRIDES_FILE = Path(__file__).with_name("data") / "workday_overrides.yaml"
OFFICE_OPENS = time(9, 0)
OFFICE_CLOSES = time(17, 0)


class WorkCalendar:
    def __init__(self, holidays: set[date], workdays: set[date], version: str) -> None:
        self.extra_holidays = holidays
        self.extra_workdays = workdays
        self.version = version
        self._working: dict[date, bool] = {}  # chinese_calendar's lookup costs about a millisecond a day

    @classmethod
    def from_file(cls, path: Path = OVERRIDES_FILE) -> WorkCalendar:
        raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        try:
            holidays = {date.fromisoformat(str(row["date"])) for row in raw.get("holidays", [])}
            workdays = {date.fromisoformat(str(row["date"])) for row in raw.get("workdays", [])}
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"{path}: every holidays/workdays row needs a valid 'date': {exc}") from exc
        if holidays & workdays:
            raise ValueError(f"{path}: dates listed as both holiday and workday: {sorted(holidays & workdays)}")
        return cls(holidays, workdays, str(raw.get("version", "unversioned")))

    def is_working_day(self, day: date) -> bool:
        known = self._working.get(day)
        if known is None:
            known = self._working[day] = self._look_up(day)
        return known

    def _look_up(self, day: date) -> bool:
        if day in self.extra_holidays:
            return False
        if day in self.extra_workdays:
            return True
        try:
            return chinese_calendar.is_workday(day)
        except NotImplementedError:
            return day.weekday() < 5

    def knows_year(self, year: int) -> bool:
        try:
            chinese_calendar.is_workday(date(year, 6, 1))
            return True
        except NotImplementedError:
            return any(d.year == year for d in self.extra_holidays | self.extra_workdays)

    def next_working_day(self, day: date) -> date:
        day += timedelta(days=1)
        while not self.is_working_day(day):
            day += timedelta(days=1)
        return day

    def add_working_days(self, start: datetime, days: int) -> datetime:
        """The deadline: end of the ``days``-th working day after ``start``'s Shanghai date, in UTC."""
        if days < 0:
            raise ValueError("days must be >= 0")
        day = local_date(start)
        for _ in range(days):
            day = self.next_working_day(day)
        end = datetime.combine(day + timedelta(days=1), time(0), tzinfo=SHANGHAI)
        return end.astimezone(UTC)

    def working_days_between(self, start: datetime, end: datetime) -> int:
        """Working days after ``start``'s date up to and including ``end``'s date (0 if not later)."""
        day, last, count = local_date(start), local_date(end), 0
        while day < last:
            day += timedelta(days=1)
            count += self.is_working_day(day)
        return count

    def working_hours_between(self, start: datetime, end: datetime) -> float:
        """Office hours (09:00–17:00 Shanghai, working days only) between two instants."""
        if end <= start:
            return 0.0
        a, b = start.astimezone(SHANGHAI), end.astimezone(SHANGHAI)
        total = 0.0
        day = a.date()
        while day <= b.date():
            if self.is_working_day(day):
                opens = datetime.combine(day, OFFICE_OPENS, tzinfo=SHANGHAI)
                closes = datetime.combine(day, OFFICE_CLOSES, tzinfo=SHANGHAI)
                lo, hi = max(a, opens), min(b, closes)
                if hi > lo:
                    total += (hi - lo).total_seconds() / 3600
            day += timedelta(days=1)
        return total


def local_date(moment: datetime) -> date:
    if moment.tzinfo is None:
        raise ValueError("naive datetime: working-day arithmetic needs a timezone-aware instant")
    return moment.astimezone(SHANGHAI).date()


@lru_cache
def default_calendar() -> WorkCalendar:
    return WorkCalendar.from_file()


def add_working_days(start: datetime, days: int) -> datetime:
    return default_calendar().add_working_days(start, days)


def is_working_day(day: date) -> bool:
    return default_calendar().is_working_day(day)


def calendar_coverage(years: range) -> dict[int, bool]:
    """Which years have an official schedule (package or override file) rather than the weekday fallback."""
    cal = default_calendar()
    return {year: cal.knows_year(year) for year in years}


# Quiet hours (Asia/Shanghai wall-clock spans, e.g. a staff member's 22:00-07:30)


def parse_hhmm(text: str) -> time:
    hours, minutes = text.split(":")
    return time(int(hours), int(minutes))


def in_quiet_hours(moment: datetime, start: str, end: str) -> bool:
    """True when ``moment`` (any zone) falls in [start, end) Shanghai time; the span may cross midnight."""
    local = moment.astimezone(SHANGHAI).time()
    s, e = parse_hhmm(start), parse_hhmm(end)
    if s == e:
        return False
    return s <= local < e if s < e else (local >= s or local < e)


def quiet_hours_end(moment: datetime, start: str, end: str) -> datetime:
    """The first instant at or after ``moment`` outside the quiet hours."""
    if not in_quiet_hours(moment, start, end):
        return moment
    local = moment.astimezone(SHANGHAI)
    e = parse_hhmm(end)
    candidate = local.replace(hour=e.hour, minute=e.minute, second=0, microsecond=0)
    if candidate <= local:
        candidate += timedelta(days=1)
    return candidate
