"""The synthetic training data is reproducible and covers every category."""

from __future__ import annotations

import csv
from collections import Counter

from services.common.reference import load_taxonomy
from services.router.training_data.generate import EXAMPLES_FILE, generate


def test_generation_is_deterministic_and_balanced():
    rows = generate(per_category=20)
    assert rows == generate(per_category=20)
    counts = Counter(label for _, label in rows)
    assert set(counts) == set(load_taxonomy().ids)
    assert set(counts.values()) == {20}
    assert len({text for text, _ in rows}) == len(rows)


def test_the_shipped_examples_are_what_the_generator_writes():
    with EXAMPLES_FILE.open(encoding="utf-8", newline="") as handle:
        shipped = [(row["text"], row["label"]) for row in csv.DictReader(handle)]
    assert shipped == generate()
    assert len(shipped) >= 2000
