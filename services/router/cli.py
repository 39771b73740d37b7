"""``python -m services.router train|evaluate``: train the text model, or measure a model (or the keyword
rules) on a labelled CSV. Both print one JSON object on stdout.

    train --data CSV [--data CSV ...] --text-column text [--text-column title ...] --label-column label
          --out DIR [--corrections CSV] [--cv 5] [--neighbours 10]
    evaluate (--model DIR | --keywords-only) --data CSV --text-column text --label-column label
          [--label-map YAML] [--exclude-overlap CSV [--exclude-text-column text]]

Several ``--text-column`` are joined with a space (title and body). ``train`` takes several ``--data``: each
file uses those of the text columns it has, and a post already seen in an earlier file (near duplicates
included, see below) is left out, as is every copy of a text given two different labels; so cross-validation
over several files never tests a post the model trained on. ``--corrections`` adds labelled posts
(columns ``text``, ``label``: supervisors' reassignments) that override training rows with the same text and
count double. ``--label-map`` maps the data's labels onto the model's (a YAML mapping). ``--exclude-overlap``
drops evaluation rows whose text also occurs in another CSV's ``text`` column (e.g. the training data), near
duplicates included: whitespace is ignored and 5-character shingles overlapping by Jaccard >= 0.8 count as the
same post.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from services.common.reference import REFERENCE_DIR, TAXONOMY_FILE, load_taxonomy
from services.router.classifier import (
    KeywordClassifier,
    TextClassifier,
    TrainingParams,
    cross_validate,
    scores_for,
    timed_predictions,
)

CORRECTION_WEIGHT = 2.0
NEAR_DUPLICATE = 0.8


class DataError(ValueError):
    """A CSV or label map the command cannot use; the message says which file and column."""


def _read_columns(path: Path, text_columns: Sequence[str], label_column: str | None) -> list[tuple[str, str]]:
    csv.field_size_limit(sys.maxsize)
    wanted = [*text_columns, *([label_column] if label_column else [])]
    try:
        with path.open(encoding="utf-8-sig", newline="") as handle:
            reader = csv.DictReader(handle)
            missing = [c for c in wanted if c not in (reader.fieldnames or [])]
            if missing:
                raise DataError(f"{path}: no column(s) {', '.join(missing)}; it has {reader.fieldnames}")
            return [(" ".join((row[c] or "").strip() for c in text_columns).strip(),
                     (row[label_column] or "").strip() if label_column else "") for row in reader]
    except OSError as exc:
        raise DataError(f"{path}: cannot read: {exc}") from exc


def read_rows(path: Path, text_columns: Sequence[str], label_column: str) -> list[tuple[str, str]]:
    """(text, label) per row; rows with an empty text or label are skipped."""
    rows = _read_columns(path, text_columns, label_column)
    return [(text, label) for text, label in rows if text and label]


def _header(path: Path) -> list[str]:
    try:
        with path.open(encoding="utf-8-sig", newline="") as handle:
            return next(csv.reader(handle), [])
    except OSError as exc:
        raise DataError(f"{path}: cannot read: {exc}") from exc


def read_training_rows(paths: Sequence[Path], text_columns: Sequence[str],
                       label_column: str) -> tuple[list[tuple[str, str]], dict[str, int]]:
    """(text, label) of one or more CSVs, each joining those of ``text_columns`` it has; a post seen in an
    earlier file (near duplicates included) is dropped, and so is every copy of a text with two labels."""
    rows: list[tuple[str, str]] = []
    dropped = 0
    for path in paths:
        columns = [c for c in text_columns if c in _header(path)] or list(text_columns)  # none: name them
        new = read_rows(path, columns, label_column)
        seen = near_duplicates([text for text, _ in new], [text for text, _ in rows]) if rows else set()
        dropped += len(seen)
        rows += [row for index, row in enumerate(new) if index not in seen]
    labels_of: dict[str, set[str]] = {}
    for text, label in rows:
        labels_of.setdefault(compact(text), set()).add(label)
    kept = [(text, label) for text, label in rows if len(labels_of[compact(text)]) == 1]
    return kept, {"duplicates_of_earlier_files": dropped, "conflicting_labels": len(rows) - len(kept)}


def read_texts(path: Path, column: str) -> list[str]:
    return [text for text, _ in _read_columns(path, [column], None) if text]


def read_label_map(path: Path) -> dict[str, str]:
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise DataError(f"{path}: cannot read the label map: {exc}") from exc
    if not isinstance(raw, dict) or not all(isinstance(v, str) for v in raw.values()):
        raise DataError(f"{path}: a label map is a YAML mapping of data label → model label")
    return {str(k): v for k, v in raw.items()}


def compact(text: str) -> str:
    return "".join(text.split())


def shingles(text: str, size: int = 5) -> set[str]:
    text = compact(text)
    return {text[i : i + size] for i in range(max(len(text) - size + 1, 1))}


def near_duplicates(texts: Sequence[str], others: Sequence[str],
                    threshold: float = NEAR_DUPLICATE) -> set[int]:
    """Indexes of ``texts`` whose 5-character shingles overlap one of ``others`` with Jaccard >= threshold:
    the same post, also when copied with a typo fixed or a name changed."""
    postings: dict[str, list[int]] = {}
    other_sizes = []
    for index, other in enumerate(others):
        grams = shingles(other)
        other_sizes.append(len(grams))
        for gram in grams:
            postings.setdefault(gram, []).append(index)
    found = set()
    for index, text in enumerate(texts):
        grams = shingles(text)
        shared = Counter(other for gram in grams for other in postings.get(gram, ()))
        if any(n / (len(grams) + other_sizes[o] - n) >= threshold for o, n in shared.items()):
            found.add(index)
    return found


def with_corrections(rows: list[tuple[str, str]], corrections: list[tuple[str, str]]) -> tuple[
        list[str], list[str], list[float]]:
    """Training texts, labels and weights: a correction replaces any row with the same text."""
    corrected = {compact(text) for text, _ in corrections}
    kept = [(t, label, 1.0) for t, label in rows if compact(t) not in corrected]
    merged = kept + [(t, label, CORRECTION_WEIGHT) for t, label in corrections]
    return [t for t, _, _ in merged], [label for _, label, _ in merged], [w for _, _, w in merged]


def train(args: argparse.Namespace) -> dict[str, Any]:
    taxonomy = load_taxonomy(args.reference_dir / TAXONOMY_FILE)
    rows, dropped = read_training_rows(args.data, args.text_column, args.label_column)
    corrections = read_rows(args.corrections, ["text"], "label") if args.corrections else []
    texts, labels, weights = with_corrections(rows, corrections)
    params = TrainingParams(c=args.c, keyword_weight=args.keyword_weight, neighbours=args.neighbours,
                            seed=args.seed)
    keywords = taxonomy.keywords_by_category()
    metrics: dict[str, Any] = {}
    if args.cv:
        metrics["cross_validation"] = cross_validate(texts, labels, keywords, params, folds=args.cv)
    model = TextClassifier.train(texts, labels, keywords, params, weights if corrections else None,
                                 taxonomy_version=taxonomy.version)
    model.info["data"] = {"files": [path.name for path in args.data], "rows": len(rows),
                          "corrections": len(corrections), "dropped": dropped}
    model.save(args.out, metrics)
    return {"model_version": model.model_version, "out": str(args.out), "training_size": len(texts),
            "dropped": dropped, "labels": model.labels, "metrics": metrics}


def evaluate(args: argparse.Namespace) -> dict[str, Any]:
    rows = read_rows(args.data, args.text_column, args.label_column)
    excluded = 0
    if args.exclude_overlap:
        seen = read_texts(args.exclude_overlap, args.exclude_text_column)
        duplicates = near_duplicates([text for text, _ in rows], seen)
        rows = [row for index, row in enumerate(rows) if index not in duplicates]
        excluded = len(duplicates)
    if args.label_map:
        mapping = read_label_map(args.label_map)
        rows = [(text, mapping.get(label, label)) for text, label in rows]
    if not rows:
        raise DataError(f"{args.data}: no rows to evaluate")
    if args.keywords_only:
        classifier: TextClassifier | KeywordClassifier = KeywordClassifier.from_taxonomy(
            load_taxonomy(args.reference_dir / TAXONOMY_FILE))
    else:
        classifier = TextClassifier.load(args.model)
    texts, gold = [t for t, _ in rows], [label for _, label in rows]
    unknown = sorted(set(gold) - set(classifier.labels))
    predicted, speed = timed_predictions(classifier, texts)
    result = {**scores_for(gold, predicted), **speed, "model_version": classifier.model_version}
    if unknown:
        result["labels_unknown_to_model"] = unknown
    if args.exclude_overlap:
        result["excluded_overlap"] = excluded
    return result


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m services.router", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    for name in ("train", "evaluate"):
        command = commands.add_parser(name)
        command.add_argument("--text-column", action="append", required=True)
        command.add_argument("--label-column", default="label")
        command.add_argument("--reference-dir", type=Path, default=REFERENCE_DIR,
                             help="where taxonomy.yaml (the keywords) is")
    trainer = commands.choices["train"]
    trainer.add_argument("--data", type=Path, required=True, action="append",
                         help="a labelled CSV; several are merged, duplicates left out")
    trainer.add_argument("--out", type=Path, required=True)
    trainer.add_argument("--corrections", type=Path)
    trainer.add_argument("--cv", type=int, default=0, help="also report k-fold cross-validated scores")
    trainer.add_argument("--c", type=float, default=TrainingParams.c, help="SVM regularisation")
    trainer.add_argument("--keyword-weight", type=float, default=TrainingParams.keyword_weight)
    trainer.add_argument("--neighbours", type=int, default=TrainingParams.neighbours,
                         help="nearest training posts whose votes join the SVM's margins (0: none)")
    trainer.add_argument("--seed", type=int, default=TrainingParams.seed)
    evaluator = commands.choices["evaluate"]
    evaluator.add_argument("--data", type=Path, required=True)
    which = evaluator.add_mutually_exclusive_group(required=True)
    which.add_argument("--model", type=Path)
    which.add_argument("--keywords-only", action="store_true")
    evaluator.add_argument("--label-map", type=Path)
    evaluator.add_argument("--exclude-overlap", type=Path,
                           help="a CSV whose posts are left out (near duplicates too)")
    evaluator.add_argument("--exclude-text-column", default="text")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        result = train(args) if args.command == "train" else evaluate(args)
    except (DataError, ValueError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(result, ensure_ascii=False))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
