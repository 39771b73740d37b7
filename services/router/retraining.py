"""Retraining from the city's own labelled cases, and the gate a candidate passes before it routes.

The city's labelled cases are supervisors' reassignments (改派: the category they chose is a trusted
label; the latest one per case counts) and imported history. Returns (退单) say only that a unit was
wrong, not which category is right, so they train nothing here (they count in the quality figures).

A fixed share of the city's cases, chosen by a hash of the case (so the same cases on every run, and never
in training), is held out. The candidate is trained on the shipped examples plus the rest of the city's
cases (reassignments count double and override a shipped example with the same text), and both the current
model and the candidate are scored on the held-out cases. The candidate is promoted only if it is not
worse: macro-F1 at least the current model's, and no category with at least ``min_support`` held-out cases
losing more than ``max_recall_drop`` recall.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from services.router.classifier import KeywordClassifier, TextClassifier, scores_for
from services.router.textdata import compact

CORRECTION_WEIGHT = 2.0
HISTORY_WEIGHT = 1.0


@dataclass(frozen=True)
class CityCase:
    key: str  # stable: the case id of a reassignment, the history id of an imported case
    text: str
    label: str
    source: str  # "reassigned" | "history"

    @property
    def weight(self) -> float:
        return CORRECTION_WEIGHT if self.source == "reassigned" else HISTORY_WEIGHT


def city_cases(corrections: Iterable[Mapping[str, Any]], history: Iterable[Mapping[str, Any]],
               known_labels: Sequence[str]) -> tuple[list[CityCase], dict[str, int]]:
    """The city's labelled cases, one per text: a case's latest reassignment, else an imported case; and
    what was left out and why."""
    report: Counter = Counter()
    latest: dict[str, Mapping[str, Any]] = {}
    for doc in corrections:
        if doc.get("kind") != "reassigned" or not doc.get("label"):
            report["returns_not_labels"] += 1
            continue
        case_id = str(doc.get("case_id"))
        if case_id not in latest or doc["recorded_at"] >= latest[case_id]["recorded_at"]:
            latest[case_id] = doc
    by_text: dict[str, CityCase] = {}
    for doc in history:
        by_text[compact(doc["text"])] = CityCase(str(doc["_id"]), doc["text"], doc["label"], "history")
    for case_id, doc in latest.items():
        key = compact(doc["text"] or "")
        if key in by_text:
            report["history_overridden_by_reassignment"] += 1
        by_text[key] = CityCase(case_id, doc["text"], doc["label"], "reassigned")
    known = set(known_labels)
    cases = []
    for case in by_text.values():
        if not compact(case.text):
            report["empty_text"] += 1
        elif case.label not in known:
            report["label_not_in_taxonomy"] += 1
        else:
            cases.append(case)
    report["reassignments"] = sum(1 for c in cases if c.source == "reassigned")
    report["history"] = sum(1 for c in cases if c.source == "history")
    return cases, dict(report)


def is_held_out(key: str, share: float) -> bool:
    digest = int(hashlib.sha256(f"holdout|{key}".encode()).hexdigest()[:8], 16)
    return digest % 10_000 < share * 10_000


def split_holdout(cases: Sequence[CityCase], share: float) -> tuple[list[CityCase], list[CityCase]]:
    """(training, held out): the same cases held out on every run."""
    held = [is_held_out(c.key, share) for c in cases]
    return [c for c, h in zip(cases, held, strict=True) if not h], [c for c, h in zip(cases, held, strict=True) if h]


def training_set(shipped: Sequence[tuple[str, str, float]], city: Sequence[CityCase]) -> tuple[
        list[str], list[str], list[float]]:
    """Texts, labels and weights: the shipped examples (text, label, weight), minus any whose text a city case
    relabels, plus the city's cases."""
    relabelled = {compact(c.text) for c in city}
    rows = [row for row in shipped if compact(row[0]) not in relabelled]
    rows += [(c.text, c.label, c.weight) for c in city]
    return [r[0] for r in rows], [r[1] for r in rows], [r[2] for r in rows]


@dataclass
class Verdict:
    promote: bool
    reasons: list[str] = field(default_factory=list)


def judge(current: Mapping[str, Any], candidate: Mapping[str, Any], support: Mapping[str, int], *,
          min_holdout: int, max_recall_drop: float, min_support: int) -> Verdict:
    """Whether the candidate's held-out scores are not worse than the current model's (``scores_for``
    results); the reasons say why, in Chinese, for the operator."""
    reasons = []
    n = int(candidate["n"])
    if n < min_holdout:
        reasons.append(f"留出的本市已标注案例只有 {n} 条（至少需要 {min_holdout} 条），无法判断新模型是否更好")
    if candidate["macro_f1"] < current["macro_f1"]:
        reasons.append(f"宏平均F1 下降：{current['macro_f1']:.4f} → {candidate['macro_f1']:.4f}")
    for label, recall in candidate["per_label_recall"].items():
        before = current["per_label_recall"].get(label, 0.0)
        if support.get(label, 0) >= min_support and before - recall > max_recall_drop:
            reasons.append(f"{label} 召回率下降超过 {max_recall_drop:.2f}：{before:.4f} → {recall:.4f}")
    return Verdict(not reasons, reasons or [f"宏平均F1 {current['macro_f1']:.4f} → {candidate['macro_f1']:.4f}，"
                                            "各类别召回率未明显下降"])


def held_out_scores(model: TextClassifier | KeywordClassifier, holdout: Sequence[CityCase]) -> dict[str, Any]:
    gold = [c.label for c in holdout]
    predicted = model.predict([c.text for c in holdout]) if holdout else []
    return scores_for(gold, predicted) if holdout else {"macro_f1": 0.0, "accuracy": 0.0, "per_label_f1": {},
                                                        "per_label_recall": {}, "n": 0}


def side_by_side(current: Mapping[str, Any], candidate: Mapping[str, Any], support: Mapping[str, int],
                 name_of: Callable[[str], str], current_version: str, candidate_version: str) -> str:
    """The comparison as a person reads it: macro-F1, then recall per category, with Chinese names."""
    lines = [f"{'':<28}{'当前模型':>12}{'候选模型':>12}",
             f"{'':<28}{current_version[-12:]:>16}{candidate_version[-12:]:>16}",
             f"{'宏平均F1 (留出样本 ' + str(candidate['n']) + ' 条)':<28}"
             f"{current['macro_f1']:>16.4f}{candidate['macro_f1']:>16.4f}",
             "各类别召回率："]
    for label in sorted(candidate["per_label_recall"], key=lambda k: -support.get(k, 0)):
        title = f"  {name_of(label)}（{support.get(label, 0)} 条）"
        lines.append(f"{title:<28}{current['per_label_recall'].get(label, 0.0):>16.4f}"
                     f"{candidate['per_label_recall'][label]:>16.4f}")
    return "\n".join(lines)
