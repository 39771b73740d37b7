"""Categories and units, from the router's reference files when they exist, else a small built-in list.

The router owns the taxonomy (services/router/reference/); intake only needs names, codes and default
working days for Open311 services, supervisor reassignment and credentials. This adapter reads those files
without importing router code, so either service can change its internals.
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

REFERENCE_DIR = Path(__file__).resolve().parents[1] / "router" / "reference"


@dataclass(frozen=True)
class Category:
    code: str
    name: str
    description: str = ""
    working_days: int = 5


@dataclass(frozen=True)
class Unit:
    id: str
    name: str
    county: str | None = None


BUILTIN_CATEGORIES = (
    Category("urban_management", "城市管理", "市容环境、路灯、占道经营、违章搭建"),
    Category("transport", "交通出行", "道路、公交、停车、交通秩序"),
    Category("housing", "住房建设", "物业、房产、拆迁、施工"),
    Category("environment", "生态环境", "噪音、污染、垃圾"),
    Category("education", "教育", "入学、学校、培训机构"),
    Category("health", "医疗卫生", "医院、疫苗、医保结算"),
    Category("social_security", "社会保障", "社保、低保、养老"),
    Category("labour", "劳动就业", "欠薪、劳动合同"),
    Category("public_security", "公共安全", "治安、户籍、消防"),
    Category("market", "市场监管", "食品安全、价格、消费维权"),
    Category("agriculture", "农业农村", "农村道路、饮水、补贴"),
    Category("other", "其他", "其他事项"),
)
BUILTIN_UNITS = (
    Unit("city_urban_management", "市城市管理局"),
    Unit("city_transport", "市交通运输局"),
    Unit("city_housing", "市住房和城乡建设局"),
    Unit("city_ecology", "市生态环境局"),
    Unit("city_education", "市教育局"),
    Unit("city_health", "市卫生健康委员会"),
    Unit("city_hrss", "市人力资源和社会保障局"),
    Unit("city_public_security", "市公安局"),
    Unit("city_market", "市市场监督管理局"),
    Unit("city_agriculture", "市农业农村局"),
    Unit("zhanggong_gov", "章贡区人民政府", "章贡区"),
    Unit("nankang_gov", "南康区人民政府", "南康区"),
)


def _load_rows(directory: Path, stem: str) -> list[dict[str, Any]] | None:
    """Rows from ``stem``.yaml/.yml/.json/.csv; a top-level mapping's first list value is the rows."""
    for suffix in (".yaml", ".yml", ".json", ".csv"):
        path = directory / f"{stem}{suffix}"
        if not path.exists():
            continue
        text = path.read_text(encoding="utf-8")
        if suffix == ".csv":
            return list(csv.DictReader(text.splitlines()))
        raw = json.loads(text) if suffix == ".json" else yaml.safe_load(text)
        if isinstance(raw, dict):
            lists = [v for v in raw.values() if isinstance(v, list)]
            if lists:
                return lists[0]
            return [{"code": k, **v} if isinstance(v, dict) else {"code": k, "name": v} for k, v in raw.items()]
        return raw if isinstance(raw, list) else None
    return None


def _first(row: dict[str, Any], *keys: str) -> Any:
    return next((row[k] for k in keys if row.get(k) not in (None, "")), None)


class Directory:
    """Categories (Open311 services) and units (departments), read once at start."""

    def __init__(self, categories: tuple[Category, ...], units: tuple[Unit, ...], source: str) -> None:
        self.categories = {c.code: c for c in categories}
        self.units = {u.id: u for u in units}
        self.source = source

    @classmethod
    def load(cls, directory: Path = REFERENCE_DIR) -> Directory:
        try:
            categories = cls._categories(_load_rows(directory, "taxonomy") or _load_rows(directory, "categories"))
            units = cls._units(_load_rows(directory, "units"))
        except (OSError, ValueError, TypeError, KeyError, yaml.YAMLError):
            categories, units = None, None
        if categories and units:
            return cls(categories, units, str(directory))
        return cls(categories or BUILTIN_CATEGORIES, units or BUILTIN_UNITS, "builtin")

    @staticmethod
    def _categories(rows: list[dict[str, Any]] | None) -> tuple[Category, ...] | None:
        if not rows:
            return None
        out = []
        for row in rows:
            code = _first(row, "code", "id", "category", "key")
            if code is None:
                continue
            days = _first(row, "working_days", "deadline_working_days", "default_working_days")
            out.append(Category(str(code), str(_first(row, "name", "name_zh", "title") or code),
                                str(_first(row, "description", "desc") or ""), int(days) if days else 5))
        return tuple(out) or None

    @staticmethod
    def _units(rows: list[dict[str, Any]] | None) -> tuple[Unit, ...] | None:
        if not rows:
            return None
        out = []
        for row in rows:
            unit_id = _first(row, "id", "unit_id", "code")
            if unit_id is None:
                continue
            county = _first(row, "county")
            out.append(Unit(str(unit_id), str(_first(row, "name", "name_zh") or unit_id),
                            str(county) if county else None))
        return tuple(out) or None

    def category(self, code: str) -> Category | None:
        return self.categories.get(code)

    def unit(self, unit_id: str) -> Unit | None:
        return self.units.get(unit_id)
