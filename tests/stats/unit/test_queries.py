"""The query use cases (handlers.StatsQueries) over a rollup view fed in memory and a fake of our own store,
as cosmicpython's FakeRepository: no database, no HTTP."""

from __future__ import annotations

from datetime import UTC, date, datetime
from typing import Any

import pytest

from services.common.clock import FixedClock
from services.stats.config import StatsSettings
from services.stats.domain import (
    InvalidQuery,
    LedgerFilters,
    contributions,
    fold,
    merge_counters,
    resolve_period,
)
from services.stats.handlers import StatsQueries, ledger_label
from services.stats.view import RollupView
from tests.stats.scripts import scenario

NOW = datetime(2026, 11, 27, 4, tzinfo=UTC)


class FakeStore:
    """What the queries need of StatsStore: the ledger browser (it records what it was asked)."""

    def __init__(self, rows: list[dict[str, Any]]) -> None:
        self.rows = rows
        self.asked: list[tuple[dict[str, Any], int, int, float | None]] = []

    async def browse(self, flt: dict[str, Any], skip: int, limit: int,
                     seconds: float | None = None) -> list[dict[str, Any]]:
        self.asked.append((flt, skip, limit, seconds))
        return self.rows[skip:skip + limit]


def fed_view(store: FakeStore) -> RollupView:
    """A view holding the scenario's cases, as one log entry of one owner."""
    view = RollupView(store)  # type: ignore[arg-type]
    rollups: dict[str, dict[str, int]] = {}
    for script in scenario().values():
        merge_counters(rollups, contributions(fold(script.facts())))
    assert view.apply("fake", 1, rollups)
    return view


@pytest.fixture
def queries() -> StatsQueries:
    cases = [{"_id": f"c{i}", "s": fold(script.facts())} for i, script in enumerate(scenario().values())]
    store = FakeStore(cases)
    return StatsQueries(StatsSettings(min_sample=1, page_size_max=2, ledger_query_seconds=7.0), store,  # type: ignore[arg-type]
                        fed_view(store), FixedClock(NOW))


def test_a_period_is_whole_months_and_days_clipped_to_the_data_and_today() -> None:
    today = date(2026, 11, 27)
    assert resolve_period("2026-11", None, None, ["2026-11"], today).months == ["2026-11"]
    everything = resolve_period(None, None, None, ["2026-10", "2026-11"], today)
    assert everything.months == ["2026-10", "2026-11"] and everything.described["all_time"] is True
    part = resolve_period(None, "2026-09-15", "2026-12-31", ["2026-10", "2026-11"], today)
    assert part.months == ["2026-10"] and part.days[0] == "2026-11-01" and part.days[-1] == "2026-11-27"
    assert part.described == {"from": "2026-09-15", "to": "2026-12-31"}  # as asked
    empty = resolve_period(None, "2026-11-10", "2026-11-01", ["2026-11"], today)
    assert empty.months == [] and empty.days == [] and empty.described["empty"] is True
    for month, start, end, field in [("2026-13", None, None, "month"), (None, "2026-02-30", None, "from"),
                                     (None, None, "nope", "to")]:
        with pytest.raises(InvalidQuery) as raised:
            resolve_period(month, start, end, [], today)
        assert raised.value.field == field and raised.value.status == 422


def test_rankings_come_from_the_view_with_names_and_never_rank_the_unassigned(queries: StatsQueries) -> None:
    ranking = queries.departments("2026-11", None, None, "reply_rate", None)
    ids = [row["id"] for row in ranking["ranking"]]
    assert ids and "_unassigned" not in ids and all(row["name"] for row in ranking["ranking"])
    assert ranking["min_sample"] == 1 and ranking["period"]["month"] == "2026-11"
    with pytest.raises(InvalidQuery) as raised:
        queries.departments("2026-11", None, None, "speed", None)
    assert raised.value.field == "sort"
    with pytest.raises(InvalidQuery) as missing:
        queries.department("no_such_unit", "2026-11", None, None)
    assert missing.value.status == 404 and missing.value.field == "unit_id"


def test_the_bulletin_is_reused_until_the_rollups_change(queries: StatsQueries) -> None:
    first = queries.monthly_report("2026-11", "satisfaction_rate")
    assert queries.monthly_report("2026-11", "satisfaction_rate") is first
    assert first["issuer"] == queries.settings.bulletin_issuer and first["period_label"]
    received = first["totals"]["received"]
    one_more = {"all|all|2026-11": {"received": 1}}
    assert queries.view.apply("fake", 2, one_more)
    again = queries.monthly_report("2026-11", "satisfaction_rate")
    assert again is not first and again["totals"]["received"] == received + 1


async def test_the_ledger_is_read_through_the_store_in_bounded_pages(queries: StatsQueries) -> None:
    store: FakeStore = queries.store  # type: ignore[assignment]
    page = await queries.ledger_page(LedgerFilters(unit="city_hrss", month="2026-11", overdue=False), 2, 50)
    assert page["page_size"] == 2 and len(page["items"]) == 2  # capped by page_size_max
    flt, skip, limit, seconds = store.asked[-1]
    assert (skip, limit, seconds) == (2, 2, 7.0)
    assert flt["s.unit"] == "city_hrss" and flt["s.received_day"] == {"$gte": "2026-11-01", "$lte": "2026-11-30"}
    assert all(row["unit_name"] or row["unit"] is None for row in page["items"])
    with pytest.raises(InvalidQuery):
        LedgerFilters(month="2026-00")
    assert ledger_label(LedgerFilters(unit="city_hrss", month="2026-11")).startswith("2026年11月，")


def test_a_timeseries_names_its_granularity(queries: StatsQueries) -> None:
    daily = queries.timeseries("daily", "2026-11-01", "2026-11-05")
    assert [p["period"] for p in daily["points"]][:2] == ["2026-11-01", "2026-11-02"] and len(daily["points"]) == 5
    assert sum(p["received"] for p in queries.timeseries("monthly", None, None)["points"]) >= 1
    with pytest.raises(InvalidQuery):
        queries.timeseries("hourly", None, None)
