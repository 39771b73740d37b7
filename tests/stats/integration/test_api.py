"""The HTTP API against the real database (the consumer is off; the ledger is filled by the projector)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from harness.simulate import simulate
from services.stats.handlers import Projector
from tests.stats.integration.support import apply_in_batches, facts_of, serving_stats

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
async def api(mongo_url: str):
    sim = simulate(80, seed=17, units=4)

    async def fill(projector: Projector) -> None:
        await apply_in_batches(projector, facts_of(sim), 1000)

    async with serving_stats(mongo_url, fill, now=datetime(2026, 11, 27, tzinfo=UTC), min_sample=5) as http:
        yield http, sim


async def test_overview_departments_and_report(api) -> None:
    http, sim = api
    truth = sim.truth(datetime(2026, 11, 27).date())
    overview = (await http.get("/v1/stats/overview")).json()
    assert overview["received"] == truth["all"]["received"] == 80
    assert overview["reply_rate"]["numerator"] == truth["all"]["replied"]
    month = (await http.get("/v1/stats/overview", params={"month": "2025-03"})).json()
    days = (await http.get("/v1/stats/overview", params={"from": "2025-03-01", "to": "2025-03-31"})).json()
    assert month["received"] == days["received"] > 0
    part = (await http.get("/v1/stats/overview", params={"from": "2025-03-10", "to": "2025-04-20"})).json()
    assert 0 < part["received"] < 80
    ranking = (await http.get("/v1/stats/departments", params={"sort": "reply_rate"})).json()
    lows = [r["reply_rate"]["wilson_low"] for r in ranking["ranking"]]
    assert lows == sorted(lows, reverse=True)
    unit = ranking["ranking"][0]["id"]
    assert (await http.get(f"/v1/stats/departments/{unit}")).json()["received"] == truth[f"unit:{unit}"]["received"]
    assert (await http.get("/v1/stats/categories")).status_code == 200
    assert (await http.get("/v1/stats/counties")).status_code == 200
    series = (await http.get("/v1/stats/timeseries", params={"granularity": "monthly"})).json()
    assert sum(p["received"] for p in series["points"]) == 80
    daily = (await http.get("/v1/stats/timeseries", params={"granularity": "daily", "from": "2025-03-01",
                                                            "to": "2025-05-10"})).json()
    assert sum(p["received"] for p in daily["points"]) == 80
    report = (await http.get("/v1/reports/monthly", params={"month": "2025-03"})).json()
    assert report["totals"]["received"] == month["received"]
    assert all("tracking_number" in c for c in report["overdue_and_escalated"])
    csv_text = (await http.get("/v1/reports/monthly", params={"month": "2025-03", "format": "csv"})).text
    assert csv_text.startswith("\ufeff排名,承办单位,单位编码,收件数") and "合计" in csv_text
    page = await http.get("/v1/reports/monthly", params={"month": "2025-03"}, headers={"accept": "text/html"})
    assert page.headers["content-type"].startswith("text/html") and "<svg" in page.text
    cases = (await http.get("/v1/cases", params={"unit": unit, "page_size": 5})).json()
    assert 0 < len(cases["items"]) <= 5 and all(c["unit"] == unit for c in cases["items"])
    overdue = (await http.get("/v1/cases", params={"overdue": "true", "page_size": 200})).json()
    assert len(overdue["items"]) == truth["all"]["overdue_open"]
    metrics = (await http.get("/metrics")).text
    assert "wenzheng_stats_events_applied_total" in metrics
    assert (await http.get("/healthz")).status_code == 200


@pytest.mark.parametrize("path,params,field", [
    ("/v1/stats/overview", {"month": "2025-13"}, "month"),
    ("/v1/stats/overview", {"from": "nope"}, "from"),
    ("/v1/stats/overview", {"from": "2025-05-01T00:00"}, "from"),
    ("/v1/stats/departments", {"sort": "bogus"}, "sort"),
    ("/v1/stats/departments", {"min_sample": "0"}, "min_sample"),
    ("/v1/stats/timeseries", {"granularity": "hourly"}, "granularity"),
    ("/v1/reports/monthly", {"month": "2025-03", "format": "pdf"}, "format"),
    ("/v1/reports/monthly", {}, "month"),
    ("/v1/cases", {"page": "0"}, "page"),
])
async def test_bad_input_is_a_4xx_naming_the_field(api, path: str, params: dict, field: str) -> None:
    http, _sim = api
    response = await http.get(path, params=params)
    assert response.status_code == 422
    assert response.json()["error"]["field"] == field


async def test_a_period_ending_before_it_starts_is_empty(api) -> None:
    """Every request its schema allows is answered (schemathesis' positive-data check): 'to' before 'from'
    is a period with no cases, said so, not an error."""
    http, _sim = api
    response = await http.get("/v1/stats/overview", params={"from": "2025-05-01", "to": "2025-04-01"})
    assert response.status_code == 200
    body = response.json()
    assert body["period"] == {"from": "2025-05-01", "to": "2025-04-01", "empty": True}


async def test_unknown_unit_is_404(api) -> None:
    http, _sim = api
    response = await http.get("/v1/stats/departments/nobody")
    assert response.status_code == 404 and response.json()["error"]["code"] == "not_found"
