"""The operator's model commands against the router's database: retrain (train a candidate, judge it
against the current model on the city's held-out cases, register it, promote it if not worse), import
history, promote, roll back, shadow. ``services.router.cli`` parses the arguments and prints; the
scheduled retrain in the worker runs the same ``retrain`` command in a child process."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from services.common.reference import Taxonomy
from services.router.classifier import KeywordClassifier, TextClassifier, TrainingParams
from services.router.history import Table, plan_import, write_rejects
from services.router.registry import ModelRegistry
from services.router.retraining import (
    city_cases,
    held_out_scores,
    judge,
    side_by_side,
    split_holdout,
    training_set,
)
from services.router.store import RouterStore


@dataclass(frozen=True)
class RetrainOptions:
    holdout_share: float = 0.2
    min_holdout: int = 30
    max_recall_drop: float = 0.1
    min_support: int = 5
    promote: bool = True  # False: register only (e.g. to shadow it first)
    shadow: bool = False  # run the candidate as the shadow instead of promoting it


async def current_model(registry: ModelRegistry, shipped_dir: Path,
                        taxonomy: Taxonomy) -> TextClassifier | KeywordClassifier:
    """The model routing now: the registry's current, else the one shipped with the code."""
    pointer = await registry.pointer()
    if pointer.current:
        info, blob = await registry.fetch(pointer.current)
        return await asyncio.to_thread(TextClassifier.from_bytes, info, blob)
    if (shipped_dir / "model.json").exists():
        return TextClassifier.load(shipped_dir)
    return KeywordClassifier.from_taxonomy(taxonomy)


async def retrain(store: RouterStore, registry: ModelRegistry, *, shipped: Sequence[tuple[str, str, float]],
                  shipped_dir: Path, taxonomy: Taxonomy, options: RetrainOptions = RetrainOptions(),
                  params: TrainingParams | None = None) -> dict[str, Any]:
    """Train, judge, register and (if not worse) promote a candidate; the result says what happened."""
    categories = {c.id: c.name for c in taxonomy.categories}
    cases, found = city_cases(await store.corrections_for_training(include_returns=True),
                              await store.history_for_training(), list(categories))
    train_cases, holdout = split_holdout(cases, options.holdout_share)
    current = await current_model(registry, shipped_dir, taxonomy)
    if params is None:
        params = current.params if isinstance(current, TextClassifier) else TrainingParams(neighbours=0)
    texts, labels, weights = training_set(shipped, train_cases)
    candidate = await asyncio.to_thread(TextClassifier.train, texts, labels, taxonomy.keywords_by_category(),
                                        params, weights, taxonomy.version)
    support = dict(Counter(c.label for c in holdout))
    before, after = held_out_scores(current, holdout), held_out_scores(candidate, holdout)
    verdict = judge(before, after, support, min_holdout=options.min_holdout,
                    max_recall_drop=options.max_recall_drop, min_support=options.min_support)
    verdict.reasons = [_named(reason, categories) for reason in verdict.reasons]
    metrics = {"held_out": after, "current_held_out": before, "current_model_version": current.model_version,
               "verdict": {"promote": verdict.promote, "reasons": verdict.reasons}}
    candidate.info["metrics"] = metrics
    source = {"shipped_examples": len(shipped), "city_cases": found, "training": len(train_cases),
              "held_out": len(holdout), "training_size": len(texts)}
    version = await registry.register(candidate, metrics=metrics, source=source)
    action = "refused"
    if verdict.promote and options.shadow:
        await registry.set_shadow(version)
        action = "shadowing"
    elif verdict.promote and options.promote:
        await registry.promote(version)
        action = "promoted"
    elif verdict.promote:
        action = "registered"
    else:
        await registry.set_status(version, "refused")
    return {"candidate_model_version": version, "current_model_version": current.model_version,
            "action": action, "reasons": verdict.reasons, "city_cases": found, "training": len(train_cases),
            "held_out": len(holdout), "current": before, "candidate": after,
            "table": side_by_side(before, after, support, lambda k: categories.get(k, k),
                                  current.model_version, version)}


def _named(reason: str, categories: dict[str, str]) -> str:
    """Reasons name categories by id; a person reads their Chinese names."""
    head, _, rest = reason.partition(" ")
    return f"{categories[head]}{' ' + rest if rest else ''}" if head in categories else reason


async def import_history(store: RouterStore, table: Table, *, file: str, text_columns: Sequence[str],
                         label_column: str, taxonomy: Taxonomy, label_map: dict[str, str] | None = None,
                         id_column: str | None = None, time_column: str | None = None,
                         rejects: Path | None = None, dry_run: bool = False) -> dict[str, Any]:
    plan = plan_import(table, file=file, text_columns=text_columns, label_column=label_column,
                       categories={c.id: c.name for c in taxonomy.categories}, label_map=label_map,
                       id_column=id_column, time_column=time_column)
    if rejects is not None and plan.skipped:
        write_rejects(rejects, table, plan)
    if dry_run:
        return {**plan.report(), "dry_run": True}
    new = await store.import_history(plan.taken)
    return plan.report(already_imported=len(plan.taken) - new)
