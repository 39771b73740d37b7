"""``python -m services.router train|evaluate|retrain|import-history|models|promote|rollback|shadow``: train
the text model, or measure a model (or the keyword rules) on a labelled CSV; retrain from the city's
corrections and history, import history, and manage the registered models (``services.router.admin``).
Every command prints one JSON object on stdout (and, for people, a summary in Chinese on stderr).

    train --data CSV [--data CSV ...] --text-column text [--text-column title ...] --label-column label
          --out DIR [--weight FILE=W ...] [--corrections CSV] [--cv 5] [--neighbours 5]
          [--head-weight 0.5] [--head-chars 30] [--nb-smoothing 0.1]
    evaluate (--model DIR | --keywords-only) --data CSV --text-column text --label-column label
          [--label-map YAML] [--exclude-overlap CSV [--exclude-text-column text]]

Several ``--text-column`` are joined with a space (title and body). ``train`` takes several ``--data``: each
file uses those of the text columns it has, and a post already seen in an earlier file (near duplicates
included, see below) is left out, as is every copy of a text given two different labels; so cross-validation
over several files never tests a post the model trained on. ``--corrections`` adds labelled posts
(columns ``text``, ``label``: supervisors' reassignments) that override training rows with the same text and
count double. ``--weight FILE=W`` makes each row of the ``--data`` file named FILE count W (1 by default).
``--label-map`` maps the data's labels onto the model's (a YAML mapping). ``--exclude-overlap``
drops evaluation rows whose text also occurs in another CSV's ``text`` column (e.g. the training data), near
duplicates included: whitespace is ignored and 5-character shingles overlapping by Jaccard >= 0.8 count as the
same post.
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import json
import sys
from collections import Counter
from collections.abc import Mapping, Sequence
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
from services.router.config import SHIPPED_FILE_WEIGHTS
from services.router.textdata import DataError, compact

CORRECTION_WEIGHT = 2.0
NEAR_DUPLICATE = 0.8


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


def read_training_rows(paths: Sequence[Path], text_columns: Sequence[str], label_column: str,
                       weights: Mapping[str, float] | None = None) -> tuple[
                           list[tuple[str, str, float]], dict[str, int]]:
    """(text, label, weight) of one or more CSVs, each joining those of ``text_columns`` it has; a post seen in
    an earlier file (near duplicates included) is dropped, and so is every copy of a text with two labels.
    ``weights`` maps a file's name to the weight of each of its rows (1 for a file it does not name)."""
    rows: list[tuple[str, str, float]] = []
    dropped = 0
    for path in paths:
        columns = [c for c in text_columns if c in _header(path)] or list(text_columns)  # none: name them
        new = read_rows(path, columns, label_column)
        seen = near_duplicates([text for text, _ in new], [text for text, _, _ in rows]) if rows else set()
        dropped += len(seen)
        weight = (weights or {}).get(path.name, 1.0)
        rows += [(text, label, weight) for index, (text, label) in enumerate(new) if index not in seen]
    labels_of: dict[str, set[str]] = {}
    for text, label, _ in rows:
        labels_of.setdefault(compact(text), set()).add(label)
    kept = [row for row in rows if len(labels_of[compact(row[0])]) == 1]
    return kept, {"duplicates_of_earlier_files": dropped, "conflicting_labels": len(rows) - len(kept)}


def parse_weights(specs: Sequence[str]) -> dict[str, float]:
    """``NAME=WEIGHT`` options: the weight of every row of the ``--data`` file called NAME."""
    weights = {}
    for spec in specs:
        name, _, value = spec.partition("=")
        try:
            weights[Path(name).name] = float(value)
        except ValueError:
            raise DataError(f"--weight {spec!r}: expected FILE=WEIGHT, e.g. examples.csv=0.1") from None
        if weights[Path(name).name] < 0:
            raise DataError(f"--weight {spec!r}: a weight is not negative")
    return weights


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


def with_corrections(rows: list[tuple[str, str, float]], corrections: list[tuple[str, str]]) -> tuple[
        list[str], list[str], list[float]]:
    """Training texts, labels and weights: a correction replaces any row with the same text."""
    corrected = {compact(text) for text, _ in corrections}
    kept = [row for row in rows if compact(row[0]) not in corrected]
    merged = kept + [(t, label, CORRECTION_WEIGHT) for t, label in corrections]
    return [t for t, _, _ in merged], [label for _, label, _ in merged], [w for _, _, w in merged]


def train(args: argparse.Namespace) -> dict[str, Any]:
    taxonomy = load_taxonomy(args.reference_dir / TAXONOMY_FILE)
    file_weights = parse_weights(args.weight)
    unknown = sorted(set(file_weights) - {path.name for path in args.data})
    if unknown:
        raise DataError(f"--weight names no --data file: {', '.join(unknown)}")
    rows, dropped = read_training_rows(args.data, args.text_column, args.label_column, file_weights)
    corrections = read_rows(args.corrections, ["text"], "label") if args.corrections else []
    texts, labels, weights = with_corrections(rows, corrections)
    params = TrainingParams(c=args.c, keyword_weight=args.keyword_weight, neighbours=args.neighbours,
                            head_weight=args.head_weight, head_chars=args.head_chars, seed=args.seed,
                            nb_smoothing=args.nb_smoothing)
    keywords = taxonomy.keywords_by_category()
    metrics: dict[str, Any] = {}
    if args.cv:
        metrics["cross_validation"] = cross_validate(texts, labels, keywords, params, folds=args.cv)
    weighted = corrections or any(w != 1.0 for w in weights)
    model = TextClassifier.train(texts, labels, keywords, params, weights if weighted else None,
                                 taxonomy_version=taxonomy.version)
    model.info["data"] = {"files": [path.name for path in args.data], "rows": len(rows),
                          "weights": file_weights, "corrections": len(corrections), "dropped": dropped}
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


def shipped_examples(paths: Sequence[Path],
                     weights: Mapping[str, float] = SHIPPED_FILE_WEIGHTS) -> list[tuple[str, str, float]]:
    """(text, label, weight) of the examples shipped with the code, weighted as the default model was."""
    return read_training_rows([p for p in paths if p.exists()], ["text"], "label", weights)[0]


async def _with_store(work):
    """Run ``work(store, registry)`` against the router's database (``WENZHENG_MONGO_URL``,
    ``WENZHENG_ROUTER_DATABASE``)."""
    from services.common.config import common_settings
    from services.common.mongo import new_client
    from services.router.config import RouterSettings
    from services.router.registry import ModelRegistry
    from services.router.store import RouterStore

    client = new_client(common_settings().mongo_url)
    try:
        db = client[RouterSettings().database]
        return await work(RouterStore(db), ModelRegistry(db))
    finally:
        await client.close()


OUTCOMES = {"promoted": "已启用新模型", "shadowing": "新模型进入影子运行", "registered": "新模型已登记，未启用",
            "refused": "新模型不优于当前模型，未启用"}


def retrain_command(args: argparse.Namespace) -> dict[str, Any]:
    from services.router import admin
    from services.router.config import RouterSettings

    settings = RouterSettings()
    taxonomy = load_taxonomy(args.reference_dir / TAXONOMY_FILE)
    options = admin.RetrainOptions(holdout_share=args.holdout_share, min_holdout=args.min_holdout,
                                   max_recall_drop=args.max_recall_drop, promote=not args.no_promote,
                                   shadow=args.shadow)
    shipped = shipped_examples(args.data or settings.training_files)
    result = asyncio.run(_with_store(lambda store, registry: admin.retrain(
        store, registry, shipped=shipped, shipped_dir=settings.model_dir, taxonomy=taxonomy, options=options)))
    print(result.pop("table"), file=sys.stderr)
    print(f"结论：{OUTCOMES[result['action']]}；" + "；".join(result["reasons"]), file=sys.stderr)
    return result


def import_history_command(args: argparse.Namespace) -> dict[str, Any]:
    from services.router import admin
    from services.router.history import read_table

    taxonomy = load_taxonomy(args.reference_dir / TAXONOMY_FILE)
    table = read_table(args.file, args.sheet)
    label_map = read_label_map(args.label_map) if args.label_map else None
    from services.router.history import plan_import

    # plan once before connecting: a file the import cannot use is refused without touching the database
    plan_import(table, file=args.file.name, text_columns=args.text_column, label_column=args.label_column,
                categories={c.id: c.name for c in taxonomy.categories}, label_map=label_map,
                id_column=args.id_column, time_column=args.time_column)

    async def work(store, _registry):
        return await admin.import_history(store, table, file=args.file.name, text_columns=args.text_column,
                                          label_column=args.label_column, taxonomy=taxonomy, label_map=label_map,
                                          id_column=args.id_column, time_column=args.time_column,
                                          rejects=args.rejects, dry_run=args.dry_run)

    result = asyncio.run(work(None, None)) if args.dry_run else asyncio.run(_with_store(work))
    print(f"共 {result['rows']} 行：导入 {result['taken']} 行，跳过 {result['skipped_total']} 行"
          + "".join(f"；{v['meaning']} {v['count']} 行" for v in result["skipped"].values()), file=sys.stderr)
    return result


def registry_command(args: argparse.Namespace) -> dict[str, Any]:
    async def work(_store, registry):
        if args.command == "promote":
            pointer = await registry.promote(args.version)
        elif args.command == "rollback":
            pointer = await registry.rollback()
        elif args.command == "shadow":
            pointer = await registry.set_shadow(None if args.off else args.version)
        else:
            pointer = await registry.pointer()
            return {"current": pointer.current, "shadow": pointer.shadow, "previous": pointer.previous,
                    "models": [{"model_version": d["_id"], "status": d.get("status"),
                                "registered_at": d["registered_at"].isoformat(),
                                "held_out_macro_f1": d.get("metrics", {}).get("held_out", {}).get("macro_f1"),
                                "source": d.get("source")} for d in await registry.list_models()]}
        return {"current": pointer.current, "shadow": pointer.shadow, "previous": pointer.previous,
                "note": "every router worker loads it within WENZHENG_ROUTER_MODEL_POLL_SECONDS"}

    return asyncio.run(_with_store(work))


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
    trainer.add_argument("--weight", action="append", default=[], metavar="FILE=WEIGHT",
                         help="weight of every row of the --data file named FILE (default 1)")
    trainer.add_argument("--head-weight", type=float, default=TrainingParams.head_weight,
                         help="weight of the n-grams of a post's first --head-chars characters (its title)")
    trainer.add_argument("--head-chars", type=int, default=TrainingParams.head_chars)
    trainer.add_argument("--seed", type=int, default=TrainingParams.seed)
    trainer.add_argument("--nb-smoothing", type=float, default=TrainingParams.nb_smoothing,
                         help="> 0: scale each n-gram by its naive-Bayes ratio per category (NBSVM), this smoothing")
    evaluator = commands.choices["evaluate"]
    evaluator.add_argument("--data", type=Path, required=True)
    which = evaluator.add_mutually_exclusive_group(required=True)
    which.add_argument("--model", type=Path)
    which.add_argument("--keywords-only", action="store_true")
    evaluator.add_argument("--label-map", type=Path)
    evaluator.add_argument("--exclude-overlap", type=Path,
                           help="a CSV whose posts are left out (near duplicates too)")
    evaluator.add_argument("--exclude-text-column", default="text")

    retrainer = commands.add_parser("retrain", help="train a candidate on the shipped examples plus the city's "
                                    "reassignments and imported history; promote it if not worse")
    retrainer.add_argument("--reference-dir", type=Path, default=REFERENCE_DIR)
    retrainer.add_argument("--data", type=Path, action="append",
                           help="shipped example CSVs (text,label); default: the router's training_data")
    retrainer.add_argument("--holdout-share", type=float, default=0.2,
                           help="share of the city's labelled cases held out to judge the candidate")
    retrainer.add_argument("--min-holdout", type=int, default=30,
                           help="fewer held-out cases than this: the candidate is not promoted")
    retrainer.add_argument("--max-recall-drop", type=float, default=0.1,
                           help="no category (with >= 5 held-out cases) may lose more recall than this")
    retrainer.add_argument("--no-promote", action="store_true", help="register the candidate only")
    retrainer.add_argument("--shadow", action="store_true",
                           help="if not worse, run it as the shadow beside the current model instead")

    importer = commands.add_parser("import-history", help="import past labelled cases from a CSV or .xlsx")
    importer.add_argument("file", type=Path)
    importer.add_argument("--text-column", action="append", required=True,
                          help="column(s) with the post's text, e.g. 标题 and 内容 (joined with a space)")
    importer.add_argument("--label-column", required=True, help="column with the category")
    importer.add_argument("--label-map", type=Path,
                          help="YAML: the file's label → category id or Chinese name")
    importer.add_argument("--id-column", help="the old system's case number (kept for reference)")
    importer.add_argument("--time-column", help="when the case happened (kept for reference)")
    importer.add_argument("--sheet", help="the .xlsx sheet (default: the first)")
    importer.add_argument("--rejects", type=Path, help="write the skipped rows here with their reason")
    importer.add_argument("--dry-run", action="store_true", help="report only; import nothing")
    importer.add_argument("--reference-dir", type=Path, default=REFERENCE_DIR)

    commands.add_parser("models", help="the registered models and which one routes")
    promoter = commands.add_parser("promote", help="make a registered model route on every worker")
    promoter.add_argument("version")
    commands.add_parser("rollback", help="back to the model that routed before the current one")
    shadower = commands.add_parser("shadow", help="run a registered model beside the current one, deciding nothing")
    target = shadower.add_mutually_exclusive_group(required=True)
    target.add_argument("version", nargs="?")
    target.add_argument("--off", action="store_true")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    commands = {"train": train, "evaluate": evaluate, "retrain": retrain_command,
                "import-history": import_history_command}
    try:
        result = commands.get(args.command, registry_command)(args)
    except (DataError, ValueError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(result, ensure_ascii=False))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
