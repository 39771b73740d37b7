"""The one reference-data contract of the platform: categories, units, their service areas and deadlines, places.

Every service (router, intake, notifier, stats) reads units and categories through this module and nothing else:
:func:`reference` loads and validates the files once per process. The files live in
``services/common/data/reference/`` and are edited by people, so every problem is reported with
the file, the line, the row (with its id or name) and the field, e.g.
``units.yaml line 42, units[27] (id 'city_health'), field 'kind': Input should be 'county_gov', ...``.
Cross-file rules (a unit's categories exist in the taxonomy, its jurisdiction is a known division, ...) are
checked by :func:`load_reference` and reported the same way.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import cached_property, lru_cache
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationError,
    field_validator,
    model_validator,
)

REFERENCE_DIR = Path(__file__).with_name("data") / "reference"
TAXONOMY_FILE = "taxonomy.yaml"
UNITS_FILE = "units.yaml"
GAZETTEER_FILE = "gazetteer.yaml"
CITY = "city"
CITY_NAME = "赣州市"
POLICY_WORKING_DAYS = (3, 5)  # the city's rule: every post is answered within 3 to 5 working days

Slug = Annotated[str, StringConstraints(pattern=r"^[a-z][a-z0-9_]*$", max_length=64)]
Name = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=64)]
Kind = Literal["inquiry", "complaint"]
UnitKind = Literal["county_gov", "zone", "city_dept", "county_dept", "enterprise", "stationed"]
DivisionKind = Literal["district", "county", "city", "zone"]
Loc = tuple[str | int, ...]
ModelT = TypeVar("ModelT", bound=BaseModel)


class ReferenceDataError(ValueError):
    """Bad reference data; the message names the file, line, row and field."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _unique_terms(terms: list[str]) -> list[str]:
    stripped = [t.strip() for t in terms]
    if any(not t for t in stripped):
        raise ValueError("empty term")
    duplicates = sorted({t for t in stripped if stripped.count(t) > 1})
    if duplicates:
        raise ValueError(f"listed more than once: {', '.join(duplicates)}")
    return stripped


# ---------------------------------------------------------------------------------------------------------
# taxonomy.yaml
# ---------------------------------------------------------------------------------------------------------


class KindDays(_Strict):
    """Working days to reply by kind of post."""

    inquiry: int = Field(ge=POLICY_WORKING_DAYS[0], le=POLICY_WORKING_DAYS[1])
    complaint: int = Field(ge=POLICY_WORKING_DAYS[0], le=POLICY_WORKING_DAYS[1])

    def for_kind(self, kind: Kind) -> int:
        return self.inquiry if kind == "inquiry" else self.complaint


class Category(_Strict):
    id: Slug
    name: Name
    description: str = Field(min_length=1)
    scope: Literal["county", "city"]
    city_unit: Slug
    kind_days: KindDays
    keywords: list[str] = Field(min_length=1)

    _terms = field_validator("keywords")(_unique_terms)


class Taxonomy(_Strict):
    version: str = Field(min_length=1)
    categories: list[Category] = Field(min_length=1)

    @property
    def ids(self) -> list[str]:
        return [c.id for c in self.categories]

    @model_validator(mode="after")
    def _keyword_signals_one_category(self) -> Taxonomy:
        owner: dict[str, str] = {}
        for category in self.categories:
            for keyword in category.keywords:
                if owner.setdefault(keyword, category.id) != category.id:
                    raise ValueError(f"keyword {keyword!r} is listed under both {owner[keyword]!r} and "
                                     f"{category.id!r}; a keyword must signal one category")
        return self

    def category(self, category_id: str) -> Category:
        for category in self.categories:
            if category.id == category_id:
                return category
        raise KeyError(category_id)

    def keywords_by_category(self) -> dict[str, list[str]]:
        return {c.id: list(c.keywords) for c in self.categories}


# ---------------------------------------------------------------------------------------------------------
# units.yaml
# ---------------------------------------------------------------------------------------------------------


class Unit(_Strict):
    id: Slug
    name: Name
    kind: UnitKind
    jurisdiction: Name  # "city" or a division name from the gazetteer
    categories: list[Slug] = Field(min_length=1)
    sla_days: int | None = Field(None, ge=1, le=60)
    keywords: list[str] = Field(default_factory=list)
    active: bool = True
    # the divisions and/or townships the unit serves; empty: all of its jurisdiction (a city-wide utility that
    # supplies only part of the city lists what it serves)
    serves: list[Name] = Field(default_factory=list)

    _terms = field_validator("keywords", "serves")(_unique_terms)

    @property
    def city_wide(self) -> bool:
        return self.jurisdiction == CITY

    @property
    def county(self) -> str | None:
        """The county-level division the unit belongs to; None for a city-level unit."""
        return None if self.city_wide else self.jurisdiction

    def serves_place(self, county: str | None, township: str | None = None) -> bool:
        """Whether the unit answers for this place. An unknown place is not excluded (nothing to check)."""
        if not self.serves or county is None:
            return True
        return county in self.serves or (township is not None and township in self.serves)


class UnitRegistry(_Strict):
    version: str = Field(min_length=1)
    category_sets: dict[str, list[Slug]] = Field(default_factory=dict)  # YAML anchors shared by many rows
    # units allowed a deadline outside the 3-5 working-day policy, each with the reason (e.g. a utility's 2 days)
    deadline_exceptions: dict[Slug, Name] = Field(default_factory=dict)
    units: list[Unit] = Field(min_length=1)

    def unit(self, unit_id: str) -> Unit:
        for unit in self.units:
            if unit.id == unit_id:
                return unit
        raise KeyError(unit_id)


# ---------------------------------------------------------------------------------------------------------
# gazetteer.yaml
# ---------------------------------------------------------------------------------------------------------


class Division(_Strict):
    """A county-level division (区/县/县级市) or a development zone with its own administrative committee."""

    name: Name
    kind: DivisionKind
    aliases: list[str] = Field(default_factory=list)
    townships: list[str] = Field(default_factory=list)
    parent: Name | None = None  # for zones: the division it was carved from

    _aliases = field_validator("aliases", "townships")(_unique_terms)


class Gazetteer(_Strict):
    version: str = Field(min_length=1)
    divisions: list[Division] = Field(min_length=1)

    def division(self, name: str) -> Division:
        for division in self.divisions:
            if division.name == name:
                return division
        raise KeyError(name)


# ---------------------------------------------------------------------------------------------------------
# loading and error reporting
# ---------------------------------------------------------------------------------------------------------


def _read_yaml(path: Path) -> tuple[Any, yaml.Node | None]:
    """The parsed data and its node tree (for line numbers in error messages)."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ReferenceDataError(f"{path}: cannot read: {exc}") from exc
    try:
        return yaml.safe_load(text), yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as exc:
        raise ReferenceDataError(f"{path.name}: not valid YAML: {exc}") from exc


def _node_at(node: yaml.Node | None, loc: Loc) -> yaml.Node | None:
    """The deepest node along ``loc`` (mapping keys and sequence indexes)."""
    for part in loc:
        if isinstance(node, yaml.MappingNode):
            child = next((value for key, value in node.value if key.value == part), None)
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int) and part < len(node.value):
            child = node.value[part]
        else:
            child = None
        if child is None:
            break
        node = child
    return node


def _row_label(data: Any, loc: Loc) -> str:
    """``units[27] (id 'city_health')`` for the row a location points into."""
    if len(loc) < 2 or not isinstance(loc[1], int):
        return ""
    section, index = loc[0], loc[1]
    try:
        row = data[section][index]
    except (KeyError, IndexError, TypeError):
        return f"{section}[{index}]"
    key = next((k for k in ("id", "name") if isinstance(row, dict) and k in row), None)
    return f"{section}[{index}] ({key} {row[key]!r})" if key else f"{section}[{index}]"


def _describe(path: Path, data: Any, root: yaml.Node | None, loc: Loc, message: str) -> str:
    node = _node_at(root, loc)
    where = [path.name]
    if node is not None:
        where.append(f"line {node.start_mark.line + 1}")
    row = _row_label(data, loc)
    if row:
        where.append(row)
    field_path = [str(p) for p in (loc[2:] if row else loc)]
    if field_path:
        where.append(f"field {'.'.join(field_path)!r}")
    return f"{', '.join(where)}: {message}"


def _validate(model: type[ModelT], path: Path) -> tuple[ModelT, Any, yaml.Node | None]:
    data, root = _read_yaml(path)
    try:
        return model.model_validate(data), data, root
    except ValidationError as exc:
        problems = [_describe(path, data, root, tuple(e["loc"]), e["msg"]) for e in exc.errors()]
        raise ReferenceDataError("\n".join(problems)) from None


def _check(path: Path, data: Any, root: yaml.Node | None, problems: Iterable[tuple[Loc, str]]) -> None:
    messages = [_describe(path, data, root, loc, message) for loc, message in problems]
    if messages:
        raise ReferenceDataError("\n".join(messages))


def _duplicates(section: str, field: str, values: Sequence[str]) -> list[tuple[Loc, str]]:
    seen: set[str] = set()
    problems = []
    for index, value in enumerate(values):
        if value in seen:
            problems.append(((section, index, field), f"duplicate {field} {value!r}"))
        seen.add(value)
    return problems


def load_taxonomy(path: Path = REFERENCE_DIR / TAXONOMY_FILE) -> Taxonomy:
    taxonomy, data, root = _validate(Taxonomy, path)
    _check(path, data, root, _duplicates("categories", "id", taxonomy.ids))
    return taxonomy


def load_units(path: Path = REFERENCE_DIR / UNITS_FILE) -> UnitRegistry:
    registry, data, root = _validate(UnitRegistry, path)
    _check(path, data, root, _duplicates("units", "id", [u.id for u in registry.units]))
    return registry


def _gazetteer_problems(gazetteer: Gazetteer) -> list[tuple[Loc, str]]:
    """A name or alias must mean one division; townships may repeat (the router treats them as ambiguous)."""
    problems = _duplicates("divisions", "name", [d.name for d in gazetteer.divisions])
    owner: dict[str, str] = {}
    names = {d.name for d in gazetteer.divisions}
    for index, division in enumerate(gazetteer.divisions):
        for alias in division.aliases:
            other = owner.get(alias) or (alias if alias in names else None)
            if other and other != division.name:
                problems.append((("divisions", index, "aliases"), f"alias {alias!r} also names {other}"))
            owner[alias] = division.name
        if division.parent is not None and division.parent not in names:
            problems.append((("divisions", index, "parent"), f"unknown division {division.parent!r}"))
    return problems


def load_gazetteer(path: Path = REFERENCE_DIR / GAZETTEER_FILE) -> Gazetteer:
    gazetteer, data, root = _validate(Gazetteer, path)
    _check(path, data, root, _gazetteer_problems(gazetteer))
    return gazetteer


@dataclass(frozen=True)
class ReferenceData:
    taxonomy: Taxonomy
    units: UnitRegistry
    gazetteer: Gazetteer

    @property
    def version(self) -> str:
        parts = {"taxonomy": self.taxonomy, "units": self.units, "gazetteer": self.gazetteer}
        return "+".join(f"{name}@{data.version}" for name, data in parts.items())

    @cached_property
    def _units_by_id(self) -> dict[str, Unit]:
        return {u.id: u for u in self.units.units}

    @cached_property
    def _categories_by_id(self) -> dict[str, Category]:
        return {c.id: c for c in self.taxonomy.categories}

    def unit(self, unit_id: str | None) -> Unit | None:
        return self._units_by_id.get(unit_id) if unit_id else None

    def category(self, code: str | None) -> Category | None:
        return self._categories_by_id.get(code) if code else None

    def unit_name(self, unit_id: str | None) -> str | None:
        """The Chinese name of a unit; an id the data does not know (yet) is shown as it is."""
        if not unit_id:
            return None
        unit = self.unit(unit_id)
        return unit.name if unit else unit_id

    def category_name(self, code: str | None) -> str | None:
        if not code:
            return None
        category = self.category(code)
        return category.name if category else code

    def working_days(self, category: str, kind: Kind = "complaint", unit_id: str | None = None) -> int:
        """Working days to reply: the unit's own deadline where it has one, else the category's for the kind."""
        unit = self.unit(unit_id)
        if unit is not None and unit.sla_days is not None:
            return unit.sla_days
        found = self.category(category)
        return found.kind_days.for_kind(kind) if found else POLICY_WORKING_DAYS[1]

    def county_of(self, unit_id: str | None) -> str | None:
        unit = self.unit(unit_id)
        return unit.county if unit else None

    def served_places(self, unit: Unit) -> list[str]:
        """What a unit serves, spelled out: its listed places, else its division, else every division."""
        if unit.serves:
            return list(unit.serves)
        if not unit.city_wide:
            return [unit.jurisdiction]
        return [d.name for d in self.gazetteer.divisions]

    def as_public_dict(self) -> dict[str, Any]:
        """Units, categories and places for pickers (``GET /v1/reference``)."""
        return {
            "version": self.version,
            "units": [{"id": u.id, "name": u.name, "county": u.county, "kind": u.kind, "categories": list(u.categories),
                       "serves": self.served_places(u), "active": u.active} for u in self.units.units],
            "categories": [{"code": c.id, "name": c.name, "description": c.description,
                            "working_days": {"inquiry": c.kind_days.inquiry, "complaint": c.kind_days.complaint}}
                           for c in self.taxonomy.categories],
            "counties": [{"name": d.name, "kind": d.kind, "parent": d.parent, "townships": list(d.townships)}
                         for d in self.gazetteer.divisions],
        }


def _unit_problems(reference: ReferenceData) -> list[tuple[Loc, str]]:
    categories = set(reference.taxonomy.ids)
    jurisdictions = {CITY} | {d.name for d in reference.gazetteer.divisions}
    places = {d.name for d in reference.gazetteer.divisions} | {
        t for d in reference.gazetteer.divisions for t in d.townships}
    problems: list[tuple[Loc, str]] = []
    for name, members in reference.units.category_sets.items():
        problems += [(("category_sets", name), f"unknown category {c!r}")
                     for c in members if c not in categories]
    for index, unit in enumerate(reference.units.units):
        problems += [(("units", index, "categories"), f"unknown category {c!r}")
                     for c in unit.categories if c not in categories]
        if unit.jurisdiction not in jurisdictions:
            problems.append((("units", index, "jurisdiction"),
                             f"{unit.jurisdiction!r} is neither 'city' nor a division in {GAZETTEER_FILE}"))
        problems += [(("units", index, "serves"), f"{place!r} is neither a division nor a township in "
                      f"{GAZETTEER_FILE}") for place in unit.serves if place not in places]
        low, high = POLICY_WORKING_DAYS
        if unit.sla_days is not None and not low <= unit.sla_days <= high \
                and unit.id not in reference.units.deadline_exceptions:
            problems.append((("units", index, "sla_days"),
                             f"{unit.sla_days} working days is outside the {low}-{high} day policy; list "
                             f"{unit.id!r} under deadline_exceptions with the reason if it is meant"))
    unit_ids = {u.id for u in reference.units.units}
    problems += [(("deadline_exceptions", unit_id), f"unknown unit {unit_id!r}")
                 for unit_id in reference.units.deadline_exceptions if unit_id not in unit_ids]
    return problems


def _category_problems(reference: ReferenceData) -> list[tuple[Loc, str]]:
    units = {u.id: u for u in reference.units.units}
    problems: list[tuple[Loc, str]] = []
    for index, category in enumerate(reference.taxonomy.categories):
        unit = units.get(category.city_unit)
        if unit is None:
            problems.append((("categories", index, "city_unit"), f"unknown unit {category.city_unit!r}"))
        elif not (unit.active and unit.city_wide and category.id in unit.categories):
            problems.append((("categories", index, "city_unit"),
                             f"{unit.id!r} must be an active city-wide unit answering {category.id!r}"))
    return problems


@lru_cache(maxsize=1)
def reference() -> ReferenceData:
    """The platform's reference data, loaded and validated once per process."""
    return load_reference()


def load_reference(directory: Path = REFERENCE_DIR) -> ReferenceData:
    """All three files, each validated, then checked against each other."""
    taxonomy_path, units_path = directory / TAXONOMY_FILE, directory / UNITS_FILE
    reference = ReferenceData(load_taxonomy(taxonomy_path), load_units(units_path),
                              load_gazetteer(directory / GAZETTEER_FILE))
    _check(units_path, *_read_yaml(units_path), _unit_problems(reference))
    _check(taxonomy_path, *_read_yaml(taxonomy_path), _category_problems(reference))
    return reference
