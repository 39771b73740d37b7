"""``python -m services.router train|evaluate``: train the text model, or measure a model (or the keyword rules)
on a labelled CSV. Both print one JSON object on stdout.

    train --data CSV --text-column text [--text-column title ...] --label-column label --out DIR
          [--corrections CSV] [--cv 5]
    evaluate (--model DIR | --keywords-only) --data CSV --text-column text --label-column label
          [--label-map YAML] [--exclude-overlap CSV]

Several ``--text-column`` are joined with a space (title and body). ``--corrections`` adds labelled posts
(columns ``text``, ``label``: supervisors' reassignments) that override training rows with the same text and
count double. ``--label-map`` maps the data's labels onto the model's (a YAML mapping). ``--exclude-overlap``
drops evaluation rows whose text (whitespace removed) also occurs in another CSV's ``text`` column, e.g. the
training data.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from services.router.classifier import (
    KeywordClassifier,
    TextClassifier,
    TrainingParams,
    cross_validate,
    scores_for,
    timed_predictions,
)
from services.router.reference import REFERENCE_DIR, TAXONOMY_FILE, load_taxonomy

CORRECTION_WEIGHT = 2.0


class DataError(ValueError):
    """A CSV or label map the command cannot use; the message says which file and column."""


def read_rows(path: Path, text_columns: Sequence[str], label_column: str) -> list[tuple[str, str]]:
    """(text, label) per row; rows with an empty text or label are skipped."""
    csv.field_size_limit(sys.maxsize)
    try:
        with path.open(encoding="utf-8-sig", newline="") as handle:
            reader = csv.DictReader(handle)
            missing = [c for c in (*text_columns, label_column) if c not in (reader.fieldnames or [])]
            if missing:
                raise DataError(f"{path}: no column(s) {', '.join(missing)}; it has {reader.fieldnames}")
            rows = [(" ".join((row[c] or "").strip() for c in text_columns).strip(), (row[label_column] or "").strip())
                    for row in reader]
    except OSError as exc:
        raise DataError(f"{path}: cannot read: {exc}") from exc
    return [(text, label) for text, label in rows if text and label]


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


def with_corrections(rows: list[tuple[str, str]], corrections: list[tuple[str, str]]) -> tuple[
        list[str], list[str], list[float]]:
    """Training texts, labels and weights: a correction replaces any row with the same text."""
    corrected = {compact(text) for text, _ in corrections}
    kept = [(t, label, 1.0) for t, label in rows if compact(t) not in corrected]
    merged = kept + [(t, label, CORRECTION_WEIGHT) for t, label in corrections]
    return [t for t, _, _ in merged], [label for _, label, _ in merged], [w for _, _, w in merged]


def train(args: argparse.Namespace) -> dict[str, Any]:
    taxonomy = load_taxonomy(args.reference_dir / TAXONOMY_FILE)
    rows = read_rows(args.data, args.text_column, args.label_column)
    corrections = read_rows(args.corrections, ["text"], "label") if args.corrections else []
    texts, labels, weights = with_corrections(rows, corrections)
    params = TrainingParams(c=args.c, keyword_weight=args.keyword_weight, seed=args.seed)
    keywords = taxonomy.keywords_by_category()
    metrics: dict[str, Any] = {}
    if args.cv:
        metrics["cross_validation"] = cross_validate(texts, labels, keywords, params, folds=args.cv)
    model = TextClassifier.train(texts, labels, keywords, params, weights if corrections else None,
                                 taxonomy_version=taxonomy.version)
    model.info["data"] = {"file": args.data.name, "rows": len(rows), "corrections": len(corrections)}
    model.save(args.out, metrics)
    return {"model_version": model.model_version, "out": str(args.out), "training_size": len(texts),
            "labels": model.labels, "metrics": metrics}


def evaluate(args: argparse.Namespace) -> dict[str, Any]:
    rows = read_rows(args.data, args.text_column, args.label_column)
    if args.exclude_overlap:
        seen = {compact(text) for text, _ in read_rows(args.exclude_overlap, ["text"], "label")}
        rows = [(text, label) for text, label in rows if compact(text) not in seen]
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
    predicted, per_second = timed_predictions(classifier, texts)
    result = {**scores_for(gold, predicted), "posts_per_second": per_second,
              "model_version": classifier.model_version}
    if unknown:
        result["labels_unknown_to_model"] = unknown
    return result


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m services.router", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    for name in ("train", "evaluate"):
        command = commands.add_parser(name)
        command.add_argument("--data", type=Path, required=True)
        command.add_argument("--text-column", action="append", required=True)
        command.add_argument("--label-column", default="label")
        command.add_argument("--reference-dir", type=Path, default=REFERENCE_DIR,
                             help="where taxonomy.yaml (the keywords) is")
    trainer = commands.choices["train"]
    trainer.add_argument("--out", type=Path, required=True)
    trainer.add_argument("--corrections", type=Path)
    trainer.add_argument("--cv", type=int, default=0, help="also report k-fold cross-validated scores")
    trainer.add_argument("--c", type=float, default=TrainingParams.c, help="SVM regularisation")
    trainer.add_argument("--keyword-weight", type=float, default=TrainingParams.keyword_weight)
    trainer.add_argument("--seed", type=int, default=TrainingParams.seed)
    evaluator = commands.choices["evaluate"]
    which = evaluator.add_mutually_exclusive_group(required=True)
    which.add_argument("--model", type=Path)
    which.add_argument("--keywords-only", action="store_true")
    evaluator.add_argument("--label-map", type=Path)
    evaluator.add_argument("--exclude-overlap", type=Path)
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
