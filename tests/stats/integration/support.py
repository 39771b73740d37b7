"""Helpers shared by the stats tests: run a simulated stream through the projector, read rates back."""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import date, datetime
from typing import Any

import httpx

from harness.simulate import Simulation
from services.common.clock import FixedClock
from services.common.mongo import new_client
from services.stats.api import create_app
from services.stats.config import StatsSettings
from services.stats.domain import Summary, fact_from_event
from services.stats.handlers import Projector
from services.stats.store import StatsStore

TODAY = date(2026, 11, 27)  # after every simulated deadline


def facts_of(sim: Simulation) -> list[dict[str, Any]]:
    return [f for _topic, event in sim.events if (f := fact_from_event(event)) is not None]


async def apply_in_batches(projector: Projector, facts: list[dict[str, Any]], batch: int = 1000) -> None:
    for start in range(0, len(facts), batch):
        await projector.apply(facts[start:start + batch])


async def measured(projector: Projector) -> dict[str, dict[str, Any]]:
    """The rates the projector's view serves, in the shape of Simulation.truth (all time, by "all" and by unit)."""
    await projector.view.catch_up()
    months = projector.view.months()
    out = {}
    overall = projector.view.summaries("all", months, []).get("all", Summary())
    by_unit = projector.view.summaries("unit", months, [])
    for name, summary in [("all", overall), *((f"unit:{k}", s) for k, s in by_unit.items())]:
        r = summary.rates(TODAY)
        if r["received"] == 0 and name != "all":
            continue
        out[name] = {
            "received": r["received"], "replied": r["replied"], "on_time": r["on_time_rate"]["numerator"],
            "on_time_denominator": r["on_time_rate"]["denominator"], "rated": r["rated"],
            "satisfied": r["satisfied"], "overdue_open": r["overdue_open"],
            "median_reply_working_hours": r["median_reply_working_hours"], "returns": r["returns"],
            "second_handling": r["second_handling"],
        }
    return out


def truth_units_with_cases(truth: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {k: v for k, v in truth.items() if k == "all" or v["received"] > 0}


@contextlib.asynccontextmanager
async def serving_stats(mongo_url: str, fill: Callable[[Projector], Awaitable[None]], *, now: datetime,
                        min_sample: int) -> AsyncIterator[httpx.AsyncClient]:
    """The stats API on a fresh database that ``fill`` filled through the real projector (consumer off)."""
    from services.common.config import common_settings

    run_id = uuid.uuid4().hex[:10]
    previous = os.environ.get("WENZHENG_MONGO_URL")
    os.environ["WENZHENG_MONGO_URL"] = mongo_url
    common_settings.cache_clear()
    name = f"wenzheng_stats_{run_id}"
    client = new_client(mongo_url)
    try:
        await fill(Projector(StatsStore(client[name]), "fill", fold_seconds=0))
        settings = StatsSettings(database=name, consumer_enabled=False, min_sample=min_sample,
                                 instance_id=f"api-{run_id}")
        app = create_app(settings, clock=FixedClock(now))
        async with app.router.lifespan_context(app):
            async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://stats") as http:
                yield http
    finally:
        await client.drop_database(name)
        await client.close()
        if previous is None:
            os.environ.pop("WENZHENG_MONGO_URL", None)
        else:
            os.environ["WENZHENG_MONGO_URL"] = previous
        common_settings.cache_clear()
