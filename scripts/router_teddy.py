"""Measure the router's text model on the Teddy 2020 corpus (``../shared/eval/``, evaluation only: never copied
into the repository, never used to train the shipped model).

    python scripts/router_teddy.py sample [--model services/router/models/default]
        macro-F1 of a model on the organisers' sample (title and body) and on the dev set, with the category
        pairs it confuses most (counts only) and its speed
    python scripts/router_teddy.py cv [--seeds 1,2,3] [--nb-smoothing 0.1] [--neighbours 5] [--neighbour-power 1]
                                      [--neighbour-weight 0.6] [--c 1.0]
        the Teddy recipe: 5-fold cross-validation on the dev set for each seed (vocabulary, IDF and model
        fitted inside each fold), the mean of the seeds, and posts/s of a model trained on all of dev

The Teddy labels are the corpus's own first-level categories; ``router_teddy_map.yaml`` beside this file maps
them onto our taxonomy's ids (the five categories of ours that Teddy lacks have no label there, so predicting
one of them is an error). Prints one JSON object per result.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from collections import Counter
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from services.common.reference import REFERENCE_DIR, TAXONOMY_FILE, load_taxonomy  # noqa: E402
from services.router.classifier import (  # noqa: E402
    TextClassifier,
    TrainingParams,
    cross_validate,
    scores_for,
    timed_predictions,
)

LABEL_MAP = Path(__file__).with_name("router_teddy_map.yaml")
TEDDY_RECIPE = {"keyword_weight": 0.0, "head_chars": 30, "head_weight": 0.5}  # the taxonomy's keywords are ours


def default_eval_dir() -> Path:
    for candidate in (ROOT.parent / "shared" / "eval", ROOT.parent.parent / "shared" / "eval"):
        if candidate.is_dir():
            return candidate
    return ROOT.parent / "shared" / "eval"


def read(path: Path, text_columns: tuple[str, ...]) -> tuple[list[str], list[str]]:
    with path.open(encoding="utf-8-sig", newline="") as handle:
        rows = list(csv.DictReader(handle))
    return [" ".join(row[c] for c in text_columns) for row in rows], [row["label"] for row in rows]


def sample(args: argparse.Namespace) -> None:
    mapping = yaml.safe_load(LABEL_MAP.read_text(encoding="utf-8"))
    model = TextClassifier.load(args.model)
    for name, columns in (("messages", ("title", "body")), ("dev", ("text",))):
        texts, labels = read(args.eval_dir / f"teddy2020_{name}.csv", columns)
        gold = [mapping[label] for label in labels]
        predicted, speed = timed_predictions(model, texts)
        confused = Counter((g, p) for g, p in zip(gold, predicted, strict=True) if g != p)
        print(json.dumps({"data": name, "model_version": model.model_version, **scores_for(gold, predicted), **speed,
                          "confused": [f"{g} -> {p}: {n}" for (g, p), n in confused.most_common(args.top)]},
                         ensure_ascii=False))


def cv(args: argparse.Namespace) -> None:
    texts, labels = read(args.eval_dir / "teddy2020_dev.csv", ("text",))
    keywords = load_taxonomy(REFERENCE_DIR / TAXONOMY_FILE).keywords_by_category()
    recipe = {**TEDDY_RECIPE, "nb_smoothing": args.nb_smoothing, "neighbours": args.neighbours,
              "neighbour_power": args.neighbour_power, "neighbour_weight": args.neighbour_weight, "c": args.c}
    scores = []
    for seed in args.seeds:
        result = cross_validate(texts, labels, keywords, TrainingParams(**recipe, seed=seed), folds=args.folds)
        scores.append(result["macro_f1"])
        print(json.dumps({"seed": seed, **result}, ensure_ascii=False), flush=True)
    model = TextClassifier.train(texts, labels, keywords, TrainingParams(**recipe))
    _, speed = timed_predictions(model, texts)
    print(json.dumps({"recipe": recipe, "folds": args.folds, "seeds": args.seeds, "macro_f1": scores,
                      "mean_macro_f1": round(sum(scores) / len(scores), 4), **speed}, ensure_ascii=False))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--eval-dir", type=Path, default=default_eval_dir())
    commands = parser.add_subparsers(dest="command", required=True)
    on_sample = commands.add_parser("sample")
    on_sample.add_argument("--model", type=Path, default=ROOT / "services/router/models/default")
    on_sample.add_argument("--top", type=int, default=12, help="how many confused category pairs to list")
    on_cv = commands.add_parser("cv")
    on_cv.add_argument("--seeds", type=lambda s: [int(x) for x in s.split(",")], default=[1, 2, 3])
    on_cv.add_argument("--folds", type=int, default=5)
    on_cv.add_argument("--nb-smoothing", type=float, default=0.1)
    on_cv.add_argument("--neighbours", type=int, default=TrainingParams.neighbours)
    on_cv.add_argument("--neighbour-power", type=float, default=TrainingParams.neighbour_power)
    on_cv.add_argument("--neighbour-weight", type=float, default=TrainingParams.neighbour_weight)
    on_cv.add_argument("--c", type=float, default=TrainingParams.c)
    args = parser.parse_args()
    {"sample": sample, "cv": cv}[args.command](args)


if __name__ == "__main__":
    main()
