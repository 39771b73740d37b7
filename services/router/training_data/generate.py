"""Generate the synthetic labelled posts the default model is trained on (``examples.csv``).

Posts are assembled from the phrase templates in ``templates.yaml`` — a category's own complaints and
inquiries, wrapped in openers, self-introductions, places, durations and closers shared by all categories (so
the model learns the issue, not the wrapping) — with places drawn from the gazetteer. A fixed seed makes the
output identical on every run: ``python -m services.router.training_data.generate`` rewrites the file.
"""

from __future__ import annotations

import argparse
import csv
import random
import re
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from services.common.reference import Division, ReferenceData, load_reference

HERE = Path(__file__).parent
TEMPLATES_FILE = HERE / "templates.yaml"
EXAMPLES_FILE = HERE / "examples.csv"
SEED = 20250601
PER_CATEGORY = 360
INQUIRY_SHARE = 0.3
_FIELD = re.compile(r"\{(\w+)\}")


@dataclass(frozen=True)
class Templates:
    shared: dict[str, list[str]]
    categories: dict[str, dict[str, Any]]

    @classmethod
    def load(cls, path: Path = TEMPLATES_FILE) -> Templates:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
        return cls(raw["shared"], raw["categories"])

    def check(self, reference: ReferenceData) -> None:
        """Every category has templates, and every {slot} in them can be filled."""
        missing = set(reference.taxonomy.ids) - set(self.categories)
        if missing:
            raise ValueError(f"{TEMPLATES_FILE.name}: no templates for {sorted(missing)}")
        for category, body in self.categories.items():
            known = _COMMON_SLOTS | set(body.get("slots", {}))
            if not body.get("issues"):
                raise ValueError(f"{TEMPLATES_FILE.name}: {category} has no issues")
            for section in ("titles", "complaint", "inquiry"):
                for template in body[section]:
                    unknown = set(_FIELD.findall(template)) - known
                    if unknown:
                        raise ValueError(f"{TEMPLATES_FILE.name}: {category}.{section}: unknown slot(s) "
                                         f"{sorted(unknown)} in {template!r}")


_COMMON_SLOTS = {"place", "county", "township", "road", "estate", "company", "identity", "duration", "money",
                 "count", "month", "year", "kw", "issue"}
ISSUE_FRAME_SHARE = 0.3  # sentences built from a shared frame around one of the category's issues


class _Slots(dict):
    """Fills ``{slot}`` fields on first use; a slot used twice in one post keeps its value."""

    def __init__(self, draw: Callable[[str], str]) -> None:
        super().__init__()
        self._draw = draw

    def __missing__(self, key: str) -> str:
        self[key] = self._draw(key)
        return self[key]


class PostWriter:
    def __init__(self, templates: Templates, reference: ReferenceData, rng: random.Random) -> None:
        self.templates = templates
        self.rng = rng
        self.counties = [d for d in reference.gazetteer.divisions if d.kind != "zone" and d.townships]
        self.keywords = reference.taxonomy.keywords_by_category()

    def _pick(self, options: Sequence[str]) -> str:
        return self.rng.choice(list(options))

    def _place(self, division: Division, township: str, slots: _Slots) -> str:
        county = slots["county"]
        forms = [f"{county}{township}", f"{county}{township}", county, township, f"赣州市{county}",
                 f"{county}{township}{slots['estate']}", f"{township}{slots['estate']}"]
        return self._pick(forms)

    def _slots(self, category: str) -> _Slots:
        shared = self.templates.shared
        own = self.templates.categories[category].get("slots", {})
        division = self.rng.choice(self.counties)
        township = self._pick(division.townships)
        simple = {"road": "roads", "estate": "estates", "company": "companies", "identity": "identities",
                  "duration": "durations", "money": "money", "count": "counts", "month": "months",
                  "year": "years"}

        def draw(key: str) -> str:
            if key in own:
                return self._pick(own[key])
            if key in simple:
                return self._pick(shared[simple[key]])
            if key == "county":
                return self._pick([division.name, division.name, *division.aliases[:1]])
            if key == "township":
                return township
            if key == "place":
                return self._place(division, township, slots)
            if key == "kw":
                return self._pick(self.keywords[category])
            if key == "issue":
                return self._pick(self.templates.categories[category]["issues"])
            raise KeyError(key)

        slots = _Slots(draw)
        return slots

    def post(self, category: str, kind: str) -> str:
        """One post: an optional title, then the body."""
        shared, own = self.templates.shared, self.templates.categories[category]
        slots = self._slots(category)
        fill = lambda template: template.format_map(slots)  # noqa: E731 - reads better inline

        def sentence() -> str:
            if self.rng.random() < ISSUE_FRAME_SHARE:
                return fill(self._pick(shared[f"issue_frames_{kind}"]))
            return fill(self._pick(own[kind]))

        body = [sentence()]
        if self.rng.random() < (0.35 if kind == "complaint" else 0.15):
            body.append(sentence())
        if kind == "complaint" and self.rng.random() < 0.4:
            body.insert(1, fill(self._pick(shared["complaint_linkers"])))
        if kind == "complaint" and self.rng.random() < 0.35:
            body.insert(self.rng.randrange(1, len(body) + 1), self._pick(shared["fillers"]))
        if self.rng.random() < (0.6 if kind == "complaint" else 0.4):
            body.insert(0, fill(self._pick(shared["intros"])))
        if self.rng.random() < 0.5:
            body.insert(0, self._pick(shared["openers"]))
        body.append(self._pick(shared[f"{kind}_closers"]))
        title = ""
        roll = self.rng.random()
        if roll < 0.4:
            title = fill(self._pick(own["titles"]))
        elif roll < 0.5:
            title = f"关于{slots['kw']}的{'咨询' if kind == 'inquiry' else '问题'}"
        elif roll < 0.6:
            title = fill(self._pick(["{issue}", "关于{issue}的问题", "{place}{issue}"]))
        text = "".join(dict.fromkeys(body))  # a phrase drawn twice is written once
        return f"{title} {text}".strip()


def generate(per_category: int = PER_CATEGORY, seed: int = SEED) -> list[tuple[str, str]]:
    """(text, label) rows, ``per_category`` distinct posts of each category."""
    reference = load_reference()
    templates = Templates.load()
    templates.check(reference)
    writer = PostWriter(templates, reference, random.Random(seed))
    rows: dict[str, str] = {}
    for category in reference.taxonomy.ids:
        made, attempts = 0, 0
        while made < per_category and attempts < per_category * 20:
            attempts += 1
            kind = "inquiry" if writer.rng.random() < INQUIRY_SHARE else "complaint"
            text = writer.post(category, kind)
            if text not in rows:
                rows[text] = category
                made += 1
    return list(rows.items())


def write_csv(rows: Sequence[tuple[str, str]], path: Path) -> None:
    with path.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["text", "label"])
        writer.writerows(rows)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=EXAMPLES_FILE)
    parser.add_argument("--per-category", type=int, default=PER_CATEGORY)
    parser.add_argument("--seed", type=int, default=SEED)
    args = parser.parse_args(argv)
    rows = generate(args.per_category, args.seed)
    write_csv(rows, args.out)
    print(f"wrote {len(rows)} examples to {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
