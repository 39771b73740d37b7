"""Helpers shared by the stats tests: run a simulated stream through the projector, read rates back."""

from __future__ import annotations

from datetime import date
from typing import Any

from services.stats.domain import Summary, fact_from_event
from services.stats.handlers import Projector
from services.stats.simulate import Simulation

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
