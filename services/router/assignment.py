"""Where a categorised post goes: its place, the unit that answers it, its kind and the working days to reply.

Pure functions over the reference data (no I/O after construction). The deadline itself is computed by the
caller from ``working_days`` with the shared working-day calendar.

Place: a structured location given with the post wins; otherwise the text is searched for the names and
aliases of the county-level divisions and for township names (longest match first, so 赣县区 beats 赣县).
A township implies its division; a township name shared by two divisions counts only when the text also
names one of them.

Unit: for a county-level category in a known division, the division's own bureau for the category, then the
division's government (or zone committee), then its parent division's; then the city-level units, those whose
keywords occur in the text first (停电 → the power company), the category's city unit last. City-wide
categories skip the county units. Units already tried (returned the case) and inactive units are skipped, so
re-routing after a return picks the best unit not yet tried.

Service areas: a unit is only chosen for places it serves (``serves`` in the reference data). A city-wide
utility whose keywords match but which does not serve the post's county gives way to that county's government,
which answers for the local supplier.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Protocol

from services.common.reference import Category, Division, Kind, ReferenceData, Unit, load_reference

INQUIRY_CUES = ("咨询", "请问", "是否", "如何", "怎么办", "怎样", "能否", "可否", "可不可以",
                "能不能", "哪里办", "需要什么", "什么时候", "有没有", "想了解", "想问")
COMPLAINT_CUES = ("投诉", "举报", "反映", "曝光", "强烈要求", "严重影响", "不作为", "维权", "恳请",
                  "求助")


class LocationLike(Protocol):
    """What the router needs of a structured location (``services.common.events.Location`` fits)."""

    county: str | None
    township: str | None


def detect_kind(text: str) -> Kind:
    """Inquiry when inquiry cues outnumber complaint cues; a complaint otherwise (also when neither occurs:
    a post that asks for nothing explicitly is usually reporting a problem)."""
    inquiry = sum(text.count(cue) for cue in INQUIRY_CUES)
    complaint = sum(text.count(cue) for cue in COMPLAINT_CUES)
    return "inquiry" if inquiry > complaint else "complaint"


@dataclass(frozen=True)
class Place:
    county: str | None  # a division name from the gazetteer (may be a development zone)
    township: str | None
    evidence: str | None  # how it was found, e.g. "水西镇 → 章贡区"
    source: str | None  # "location" (given with the post) or "text"


@dataclass(frozen=True)
class _Mention:
    name: str
    divisions: tuple[str, ...]
    township: bool


class PlaceFinder:
    """Finds the division (and township) a text is about, using the gazetteer."""

    def __init__(self, divisions: Sequence[Division]) -> None:
        self.divisions = {d.name: d for d in divisions}
        owners: dict[str, list[str]] = {}
        names: dict[str, str] = {}
        for division in divisions:
            for name in (division.name, *division.aliases):
                names[name] = division.name
            for township in division.townships:
                owners.setdefault(township, []).append(division.name)
        self._mentions: dict[str, _Mention] = {t: _Mention(t, tuple(o), True) for t, o in owners.items()}
        # a division's name or alias beats a township of the same spelling
        self._mentions.update({n: _Mention(n, (d,), False) for n, d in names.items()})
        terms = sorted(self._mentions, key=lambda t: (-len(t), t))
        self._pattern = re.compile("|".join(map(re.escape, terms)))

    def mentions(self, text: str) -> list[_Mention]:
        """Names in text order; at each position the longest name wins, and matches do not overlap."""
        return [self._mentions[m.group()] for m in self._pattern.finditer(text)]

    def division_named(self, value: str) -> str | None:
        """The division a (structured) county value means: its name or alias, or the single division named in
        it (``赣州市章贡区``)."""
        value = value.strip()
        mention = self._mentions.get(value)
        if mention is not None and not mention.township:
            return mention.divisions[0]
        named = {m.divisions[0] for m in self.mentions(value) if not m.township}
        return named.pop() if len(named) == 1 else None

    def find(self, text: str, location: LocationLike | None = None) -> Place:
        given = self._from_location(location)
        if given is not None:
            return given
        return self._from_text(self.mentions(text))

    def _from_location(self, location: LocationLike | None) -> Place | None:
        if location is None:
            return None
        county = self.division_named(location.county) if location.county else None
        township = (location.township or "").strip() or None
        owners = self._mentions[township].divisions if township in self._mentions else ()
        if county is None and len(owners) == 1:
            county = owners[0]
        if county is None:
            return None
        township = township if township and (not owners or county in owners) else None
        evidence = f"{township} → {county}" if township else county
        return Place(county, township, evidence, "location")

    def _from_text(self, mentions: list[_Mention]) -> Place:
        named = [m.divisions[0] for m in mentions if not m.township]
        named = [d for d in named if not self._has_named_child(d, named)]
        townships = [m for m in mentions if m.township]
        # 1. a township together with its division, e.g. 章贡区水西镇 (also settles a shared township name)
        for mention in townships:
            for division in mention.divisions:
                if division in named:
                    return Place(division, mention.name, f"{mention.name} → {division}", "text")
        # 2. a township alone implies its division, unless two divisions share the name
        for mention in townships:
            if len(mention.divisions) == 1:
                return Place(mention.divisions[0], mention.name, f"{mention.name} → {mention.divisions[0]}",
                             "text")
        # 3. a division by name: the most often named, the first named on a tie
        if named:
            counts = Counter(named)
            division = max(named, key=lambda d: (counts[d], -named.index(d)))
            return Place(division, None, division, "text")
        return Place(None, None, None, None)

    def _has_named_child(self, division: str, named: Iterable[str]) -> bool:
        """A zone is more precise than the district it was carved from: 章贡区 + 经开区 → 经开区."""
        return any(self.divisions[other].parent == division for other in named if other != division)

    def lineage(self, division: str) -> list[str]:
        """The division, its parent, its parent's parent…"""
        chain = [division]
        while (parent := self.divisions[chain[-1]].parent) is not None and parent not in chain:
            chain.append(parent)
        return chain


@dataclass(frozen=True)
class Assignment:
    unit_id: str | None  # None: every candidate was tried already (the caller sends the case to triage)
    unit_name: str | None
    working_days: int
    kind: Kind
    county: str | None
    township: str | None
    reasons: tuple[str, ...]
    candidates: tuple[str, ...]  # the ranked unit ids still open, the chosen one first


@dataclass(frozen=True)
class _Candidate:
    unit: Unit
    reason: str


def _keyword_hits(unit: Unit, text: str) -> list[str]:
    return [k for k in unit.keywords if k in text]


class Assigner:
    """Chooses the unit for a categorised post. Build once (it indexes the reference data), call often."""

    def __init__(self, reference: ReferenceData) -> None:
        self.reference = reference
        self.places = PlaceFinder(reference.gazetteer.divisions)
        self.categories: dict[str, Category] = {c.id: c for c in reference.taxonomy.categories}
        self.units: dict[str, Unit] = {u.id: u for u in reference.units.units}

    @classmethod
    def default(cls) -> Assigner:
        return cls(load_reference())

    @property
    def version(self) -> str:
        return self.reference.version

    def assign(self, category: str, text: str, location: LocationLike | None = None,
               exclude: Iterable[str] = (), keywords: Sequence[str] = ()) -> Assignment:
        """``keywords``: the taxonomy keywords the classifier found, quoted in the reasons."""
        if category not in self.categories:
            raise KeyError(f"unknown category {category!r}")
        details = self.categories[category]
        place = self.places.find(text, location)
        excluded = set(exclude)
        ranked = [c for c in self.ranked(details, text, place)
                  if c.unit.active and c.unit.id not in excluded]
        kind = detect_kind(text)
        reasons = [f"关键词: {'、'.join(keywords[:5])}"] if keywords else []
        reasons.append(f"类型: {'咨询' if kind == 'inquiry' else '投诉/反映'}")
        if excluded:
            names = [self.units[u].name if u in self.units else u for u in sorted(excluded)]
            reasons.append(f"已退回, 不再派给: {'、'.join(names)}")
        if not ranked:
            reasons.append("没有尚未尝试的承办单位")
            return Assignment(None, None, details.kind_days.for_kind(kind), kind, place.county,
                              place.township, tuple(reasons), ())
        chosen = ranked[0]
        reasons.append(chosen.reason)
        working_days = chosen.unit.sla_days or details.kind_days.for_kind(kind)
        return Assignment(chosen.unit.id, chosen.unit.name, working_days, kind, place.county, place.township,
                          tuple(reasons), tuple(dict.fromkeys(c.unit.id for c in ranked)))

    def ranked(self, category: Category, text: str, place: Place) -> list[_Candidate]:
        """Every unit that could answer, best first (before removing tried and inactive units)."""
        local: list[_Candidate] = []
        if category.scope == "county" and place.county is not None:
            for division in self.places.lineage(place.county):
                path = place.evidence if division == place.county else f"{place.evidence} → {division}"
                local += self._local_units(category, text, division, path)
        return local + self._city_units(category, text, place, bool(local))

    def _local_units(self, category: Category, text: str, division: str,
                     path: str | None) -> list[_Candidate]:
        answering = [u for u in self.units.values()
                     if u.jurisdiction == division and category.id in u.categories
                     and u.serves_place(division, None)]
        bureaus = sorted((u for u in answering if u.kind == "county_dept"),
                         key=lambda u: -len(_keyword_hits(u, text)))
        governments = [u for u in answering if u.kind != "county_dept"]
        return [_Candidate(u, f"地点: {path} → {u.name}") for u in (*bureaus, *governments)]

    def _city_units(self, category: Category, text: str, place: Place, after_local: bool) -> list[
            _Candidate]:
        county = place.county
        if category.scope == "city":
            why = f"{category.name}由全市统一办理"
        elif county is None:
            why = "未识别到县区, 由市级部门办理"
        else:
            why = "县区已尝试, 由市级部门办理" if after_local else f"{county}无对应承办单位, 由市级部门办理"
        city = [u for u in self.units.values() if u.city_wide and category.id in u.categories]
        hits = {u.id: _keyword_hits(u, text) for u in city}
        by_keyword = sorted((u for u in city if hits[u.id]), key=lambda u: -len(hits[u.id]))
        candidates: list[_Candidate] = []
        for unit in by_keyword:
            if unit.serves_place(county, place.township):
                candidates.append(_Candidate(unit, f"{why}: 关键词 {'、'.join(hits[unit.id][:3])} → {unit.name}"))
            elif county is not None:
                candidates += [_Candidate(gov, f"{unit.name}不服务{county}, 由{gov.name}办理")
                               for gov in self._governments(county) if gov not in (c.unit for c in candidates)]
        fallback = self.units.get(category.city_unit)
        if fallback is not None and fallback.serves_place(county, place.township):
            candidates.append(_Candidate(fallback, f"{why} → {fallback.name}"))
        return candidates

    def _governments(self, county: str) -> list[Unit]:
        """The government (or zone committee) of a division and of the divisions it was carved from."""
        return [u for division in self.places.lineage(county) for u in self.units.values()
                if u.jurisdiction == division and u.kind in ("county_gov", "zone")]
