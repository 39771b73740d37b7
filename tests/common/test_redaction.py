"""The redactor against a hand-written corpus: precision and recall per kind, and the behaviour around it."""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import pytest

from services.common.redaction import MARKERS, Kind, find_personal_data, id_checksum_ok, redact

CORPUS = Path(__file__).with_name("redaction_corpus.txt")
MARKUP = re.compile(r"\{(\w+):([^{}]+)\}")
RECALL_TARGETS = {Kind.PHONE: 0.99, Kind.ID_CARD: 0.99, Kind.NAME: 0.9}
PRECISION_TARGET = 0.95


@dataclass(frozen=True)
class Example:
    line: int
    text: str
    private_names: tuple[str, ...]
    expected: tuple[tuple[Kind, int, int], ...]


def load_corpus() -> list[Example]:
    examples = []
    for number, raw in enumerate(CORPUS.read_text(encoding="utf-8").splitlines(), 1):
        if not raw.strip() or raw.startswith("#"):
            continue
        names: tuple[str, ...] = ()
        if raw.startswith("@"):
            name, raw = raw[1:].split(" ", 1)
            names = (name,)
        text, expected, at = "", [], 0
        for m in MARKUP.finditer(raw):
            text += raw[at:m.start()]
            expected.append((Kind(m.group(1)), len(text), len(text) + len(m.group(2))))
            text += m.group(2)
            at = m.end()
        text += raw[at:]
        examples.append(Example(number, text, names, tuple(expected)))
    return examples


def score(examples: list[Example]) -> tuple[dict[Kind, dict[str, int]], list[str]]:
    """Per kind: expected, recalled (wholly covered by a finding of that kind), found, correct (overlapping
    an expected span of that kind). Also the misses, for the failure message."""
    counts: dict[Kind, Counter[str]] = {kind: Counter() for kind in Kind}
    misses = []
    for ex in examples:
        findings = find_personal_data(ex.text, ex.private_names)
        for kind, start, end in ex.expected:
            counts[kind]["expected"] += 1
            if any(f.kind is kind and f.start <= start and f.end >= end for f in findings):
                counts[kind]["recalled"] += 1
            else:
                misses.append(f"line {ex.line}: missed {kind.value} {ex.text[start:end]!r} in {ex.text!r}")
        for f in findings:
            counts[f.kind]["found"] += 1
            if any(kind is f.kind and f.start < end and f.end > start for kind, start, end in ex.expected):
                counts[f.kind]["correct"] += 1
            else:
                misses.append(f"line {ex.line}: wrong {f.kind.value} {ex.text[f.start:f.end]!r} in {ex.text!r}")
    return {kind: dict(c) for kind, c in counts.items()}, misses


def test_corpus_is_big_enough_and_has_both_sides() -> None:
    examples = load_corpus()
    assert len(examples) >= 200
    assert sum(1 for ex in examples if not ex.expected) >= 60  # negatives: numbers and words that must survive
    assert {kind for ex in examples for kind, _, _ in ex.expected} == set(Kind)


def test_precision_and_recall_per_kind_meet_the_targets(capsys: pytest.CaptureFixture[str]) -> None:
    counts, misses = score(load_corpus())
    lines = [f"{'kind':<10} {'expected':>8} {'recall':>7} {'found':>6} {'precision':>9}"]
    for kind, c in counts.items():
        recall = c.get("recalled", 0) / c["expected"] if c.get("expected") else 1.0
        precision = c.get("correct", 0) / c["found"] if c.get("found") else 1.0
        lines.append(f"{kind.value:<10} {c.get('expected', 0):>8} {recall:>7.3f} {c.get('found', 0):>6} "
                     f"{precision:>9.3f}")
    with capsys.disabled():
        print("\nredaction corpus:\n" + "\n".join(lines) + ("\n" + "\n".join(misses) if misses else ""))
    for kind, c in counts.items():
        recall = c.get("recalled", 0) / c["expected"]
        assert recall >= RECALL_TARGETS.get(kind, 0.9), (kind, recall, misses)
        if c.get("found"):
            assert c.get("correct", 0) / c["found"] >= PRECISION_TARGET, (kind, misses)
    total_found = sum(c.get("found", 0) for c in counts.values())
    assert sum(c.get("correct", 0) for c in counts.values()) / total_found >= PRECISION_TARGET


def test_redacted_text_keeps_no_digit_run_of_a_phone_or_id() -> None:
    for ex in load_corpus():
        out = redact(ex.text, ex.private_names).text
        for kind, start, end in ex.expected:
            if kind in (Kind.PHONE, Kind.ID_CARD, Kind.BANK_CARD):
                digits = re.sub(r"\D", "", ex.text[start:end].translate({c: c - 0xFEE0 for c in range(0xFF10, 0xFF1A)}))
                assert digits[-7:] not in re.sub(r"\D", "", out), (ex.line, out)


def test_markers_and_the_rest_of_the_text_survive() -> None:
    result = redact("我叫王建华，电话138-0000-5678，身份证36070219900101123X，2023年10月5日起停水，欠款1380元。")
    assert result.text == f"我叫{MARKERS[Kind.NAME]}，电话{MARKERS[Kind.PHONE]}，身份证{MARKERS[Kind.ID_CARD]}，" \
                          "2023年10月5日起停水，欠款1380元。"
    assert result.kinds == ["id_card", "name", "phone"]


def test_a_pattern_name_is_uncertain_and_numbers_alone_are_certain() -> None:
    assert redact("我叫王建华，路灯坏了").uncertain
    assert redact("王先生说路灯坏了").uncertain
    assert not redact("电话 13800005678，路灯坏了").uncertain
    assert not redact("路灯坏了半个月").findings
    # the poster's own name, given to the redactor, is certain wherever it appears
    poster = redact("王建华反映：建华家门口路灯坏了", ["王建华"])
    assert poster.text == "[姓名]反映：[姓名]家门口路灯坏了" and not poster.uncertain


def test_id_checksum() -> None:
    assert id_checksum_ok("11010519491231002X")
    assert not id_checksum_ok("110105194912310021")
    # a typo'd ID is still redacted, but as uncertain
    result = redact("身份证110105194912310021")
    assert result.text == "身份证[身份证号]" and result.uncertain
