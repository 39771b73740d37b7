"""Working-day deadlines across weekends, national holidays and adjusted workdays (Asia/Shanghai)."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta, timezone

import pytest

from services.common.workdays import SHANGHAI, WorkCalendar, default_calendar

CST = timezone(timedelta(hours=8))
cal = default_calendar()


def end_of(day: date) -> datetime:
    return datetime.combine(day + timedelta(days=1), datetime.min.time(), tzinfo=SHANGHAI).astimezone(UTC)


def test_plain_week():
    # Monday 2026-09-07 10:00 Shanghai + 3 working days -> end of Thursday
    assert cal.add_working_days(datetime(2026, 9, 7, 10, tzinfo=CST), 3) == end_of(date(2026, 9, 10))


def test_weekend_is_skipped():
    # Thursday 2026-09-10 + 3 -> Fri, Mon, Tue
    assert cal.add_working_days(datetime(2026, 9, 10, 10, tzinfo=CST), 3) == end_of(date(2026, 9, 15))


def test_national_day_holiday_and_adjusted_workday():
    # 2026: Sun 9-20 is an adjusted workday; 9-25..27 Mid-autumn; 10-1..7 National Day; Sat 10-10 works.
    assert cal.is_working_day(date(2026, 9, 20))
    assert not cal.is_working_day(date(2026, 10, 5))
    assert cal.is_working_day(date(2026, 10, 10))
    # Wed 2026-09-30 + 3 working days -> Thu 10-8, Fri 10-9, Sat 10-10 (adjusted workday)
    assert cal.add_working_days(datetime(2026, 9, 30, 9, tzinfo=CST), 3) == end_of(date(2026, 10, 10))


def test_late_evening_utc_counts_in_shanghai_date():
    # 2026-09-06T17:00Z is Monday 01:00 in Shanghai: counting starts from Monday, not Sunday
    assert cal.add_working_days(datetime(2026, 9, 6, 17, tzinfo=UTC), 1) == end_of(date(2026, 9, 8))


def test_override_file_covers_a_year_the_package_lacks():
    assert not cal.is_working_day(date(2027, 1, 1))  # from the override file
    assert cal.knows_year(2027)


def test_unknown_year_falls_back_to_weekdays():
    assert cal.is_working_day(date(2031, 6, 2)) and not cal.is_working_day(date(2031, 6, 1))
    assert not cal.knows_year(2031)


def test_override_file_is_validated(tmp_path):
    bad = tmp_path / "o.yaml"
    bad.write_text("holidays:\n  - {name: x}\n", encoding="utf-8")
    with pytest.raises(ValueError, match="date"):
        WorkCalendar.from_file(bad)


def test_working_days_between_and_office_hours():
    monday = datetime(2026, 9, 7, 9, tzinfo=CST)
    assert cal.working_days_between(monday, monday + timedelta(days=7)) == 5
    assert cal.working_hours_between(monday, monday + timedelta(hours=30)) == pytest.approx(8 + 6)
    with pytest.raises(ValueError):
        cal.add_working_days(datetime(2026, 9, 7), 1)
