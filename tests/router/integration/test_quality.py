"""Routing quality figures: the worker counts its decisions and the returns and reassignments that correct
them (by the case's Shanghai month, category and unit), adds them to its own documents, and the report
gives the corrected share per category and unit, with Chinese names, and the categories confused."""

from __future__ import annotations

import pytest

from services.common.events import make_event
from services.router.handlers import flush_quality_counts
from services.router.quality import QualityTally, quality_report
from tests.router.unit.test_batches import LAMP, WATER, Table, assigned, made, posted, returned

pytestmark = pytest.mark.integration


async def test_corrected_share_per_category_and_unit(worker, store):
    table = Table()
    lamp, water = made(await table.run(worker, [*posted("Q1", LAMP, None), *posted("Q2", WATER, None)]))
    assert lamp.category == "urban_management" and lamp.department_id
    await table.run(worker, [assigned("Q1", lamp, 2), assigned("Q2", water, 2)])
    await table.run(worker, [returned("Q1", lamp.department_id, 3, 1)])  # the unit was wrong
    moved = water.model_copy(update={"category": "urban_construction", "category_name": "城乡建设",
                                     "department_id": "city_housing"})
    plain = assigned("Q2", moved, 3)
    reassignment = make_event(plain.data.model_copy(update={"reassigned": True, "actor": "supervisor"}),
                              source="/tests")
    await table.run(worker, [reassignment])
    await flush_quality_counts(worker.quality, store, "w1")
    await flush_quality_counts(QualityTally(), store, "w2")  # nothing to add: no write

    names = worker.engine.assigner
    report = quality_report(await store.quality_documents({"2026-09"}), lambda c: names.categories[c].name,
                            lambda u: names.units[u].name if u in names.units else u)
    [month] = report["months"]
    assert month["month"] == "2026-09"  # T0 is 2026-09-28 10:00 in Shanghai
    categories = {row["id"]: row for row in month["categories"]}
    # Q1 was routed twice (the return re-routes it), once corrected; Q2 once, reassigned
    assert categories["urban_management"]["decisions"] == 2 and categories["urban_management"]["returns"] == 1
    assert categories["urban_management"]["corrected_share"] == 0.5
    assert categories["urban_management"]["name"] == "城市管理"
    water_category = categories[water.category]
    assert water_category["reassignments"] == 1
    assert month["confusion"] == [{"from": water.category, "from_name": names.categories[water.category].name,
                                   "to": "urban_construction", "to_name": "城乡建设", "posts": 1}]
    units = {row["id"]: row for row in month["units"]}
    assert units[lamp.department_id]["returns"] == 1 and units[lamp.department_id]["name"] != lamp.department_id
    assert await store.quality_documents({"2026-10"}) == []
