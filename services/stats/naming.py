"""Chinese names beside every id stats publishes, from the shared reference data (never a bare id)."""

from __future__ import annotations

from typing import Any

from services.common.reference import reference
from services.stats.domain import NONE, UNASSIGNED

PSEUDO_NAMES = {
    "unit": {UNASSIGNED: "未分派"},
    "category": {NONE: "未分类"},
    "county": {NONE: "未注明县区"},
}
RATE_NAMES = {"reply_rate": "答复率", "on_time_rate": "按期答复率", "satisfaction_rate": "满意率"}


def key_name(dim: str, key: str | None) -> str | None:
    """The name of a rollup key: a unit's or category's Chinese name; a county is named by itself."""
    if key is None:
        return None
    if key in PSEUDO_NAMES.get(dim, {}):
        return PSEUDO_NAMES[dim][key]
    if dim == "unit":
        return reference().unit_name(key)
    if dim == "category":
        return reference().category_name(key)
    return key


def named_row(dim: str, key: str, rates: dict[str, Any]) -> dict[str, Any]:
    row: dict[str, Any] = {"id": key, "name": key_name(dim, key)}
    if dim == "unit":
        row["county"] = reference().county_of(key)
    row.update(rates)
    return row
