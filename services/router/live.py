"""The models a router worker routes with, kept up to date from the registry without a restart.

:class:`LiveEngine` is the engine the worker uses: it routes with the current model and, when the registry
names a shadow, also classifies every batch with the shadow and counts where the two agree — the shadow
decides nothing. :meth:`LiveEngine.refresh` reads the registry's pointer (one read by ``_id``); when it
names another model, the model's bytes are fetched and deserialised in a thread (off the event loop) and
swapped in between two batches. A model that cannot be loaded leaves the previous one routing.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from services.common.events import utcnow
from services.common.logging import get_logger
from services.router.assignment import Assigner
from services.router.classifier import TextClassifier
from services.router.engine import ModelRoutingEngine, PreclassifiedEngine
from services.router.metrics import MODEL_SWAPS, SHADOW_AGREEMENT, SHADOW_COMPARED
from services.router.registry import ModelRegistry

log = get_logger(__name__)


@dataclass
class ShadowComparison:
    """Current vs shadow category of every post both classified (in this worker) since the shadow loaded."""

    shadow_version: str
    current_version: str
    since: datetime = field(default_factory=utcnow)
    pairs: dict[tuple[str, str], int] = field(default_factory=dict)

    def observe(self, current: Sequence[str], shadow: Sequence[str]) -> None:
        for pair in zip(current, shadow, strict=True):
            self.pairs[pair] = self.pairs.get(pair, 0) + 1
            SHADOW_COMPARED.labels(*pair).inc()
        SHADOW_AGREEMENT.set(self.agreement or 0.0)

    @property
    def compared(self) -> int:
        return sum(self.pairs.values())

    @property
    def agreement(self) -> float | None:
        total = self.compared
        return sum(n for (a, b), n in self.pairs.items() if a == b) / total if total else None

    def report(self, name_of: Callable[[str], str]) -> dict[str, Any]:
        """For supervisors: per category the current model chose, how often the shadow agreed and what it
        chose instead."""
        by_category: dict[str, dict[str, int]] = {}
        for (current, shadow), n in self.pairs.items():
            by_category.setdefault(current, {})[shadow] = by_category.setdefault(current, {}).get(shadow, 0) + n
        rows = []
        for category, chosen in sorted(by_category.items(), key=lambda item: -sum(item[1].values())):
            total = sum(chosen.values())
            rows.append({
                "category": category, "category_name": name_of(category), "posts": total,
                "agreed": chosen.get(category, 0), "agreement": round(chosen.get(category, 0) / total, 4),
                "shadow_chose_instead": [
                    {"category": other, "category_name": name_of(other), "posts": n}
                    for other, n in sorted(chosen.items(), key=lambda item: -item[1]) if other != category],
            })
        agreement = self.agreement
        return {"shadow_model_version": self.shadow_version, "current_model_version": self.current_version,
                "since": self.since.isoformat(), "posts": self.compared,
                "agreement": None if agreement is None else round(agreement, 4), "by_category": rows}


class LiveEngine:
    """A :class:`ModelRoutingEngine` that follows the registry. ``fallback`` routes when the registry names
    no model (the one shipped with the code)."""

    def __init__(self, fallback: ModelRoutingEngine, assigner: Assigner, registry: ModelRegistry | None) -> None:
        self.fallback = fallback
        self.assigner = assigner
        self.registry = registry
        self.current = fallback
        self.shadow: TextClassifier | None = None
        self.comparison: ShadowComparison | None = None
        self._loaded: dict[str, ModelRoutingEngine] = {}  # version -> engine, the last two kept
        self._failed: set[str] = set()

    @property
    def model_version(self) -> str:
        return self.current.model_version

    @property
    def classifier_version(self) -> str:
        return self.current.classifier.model_version

    @property
    def categories(self):
        return self.current.categories

    def propose(self, text, location, exclude):
        return self.current.propose(text, location, exclude)

    def preclassified(self, texts: Sequence[str]) -> PreclassifiedEngine:
        engine = self.current.preclassified(texts)
        shadow, comparison = self.shadow, self.comparison
        if shadow is not None and comparison is not None and engine.results:
            unique = list(engine.results)
            chosen = [result.category for result in shadow.classify_batch(unique, explain=0)]
            comparison.observe([engine.results[text].category for text in unique], chosen)
        return engine

    # -- following the registry ----------------------------------------------------------------------------

    async def refresh(self) -> bool:
        """Load what the registry's pointer names, if it changed; True when a model was swapped."""
        if self.registry is None:
            return False
        pointer = await self.registry.pointer()
        swapped = False
        if pointer.current is None:
            swapped = self.current is not self.fallback
            self.current = self.fallback
        elif pointer.current != self.classifier_version:
            engine = await self._engine(pointer.current, "current")
            if engine is not None:
                self.current, swapped = engine, True
        if swapped:
            log.info("router_model_swapped", model_version=self.model_version)
        await self._follow_shadow(pointer.shadow)
        return swapped

    async def _follow_shadow(self, version: str | None) -> None:
        if version is None:
            self.shadow = self.comparison = None
            return
        if self.shadow is None or self.shadow.model_version != version:
            engine = await self._engine(version, "shadow")
            if engine is None:
                return
            self.shadow = engine.classifier
            self.comparison = ShadowComparison(version, self.classifier_version)
        elif self.comparison is not None and self.comparison.current_version != self.classifier_version:
            self.comparison = ShadowComparison(version, self.classifier_version)  # compared with another model

    async def _engine(self, version: str, role: str) -> ModelRoutingEngine | None:
        if version in self._loaded:
            return self._loaded[version]
        if version in self._failed:
            return None
        assert self.registry is not None
        try:
            info, blob = await self.registry.fetch(version)
            engine = await asyncio.to_thread(self._build, info, blob)
        except Exception as exc:  # a broken model must not stop routing with the current one
            self._failed.add(version)
            MODEL_SWAPS.labels(role, "failed").inc()
            log.error("router_model_load_failed", model_version=version, role=role, error=str(exc)[:300])
            return None
        MODEL_SWAPS.labels(role, "loaded").inc()
        self._loaded = {v: e for v, e in self._loaded.items() if e is self.current} | {version: engine}
        return engine

    def _build(self, info: dict[str, Any], blob: bytes) -> ModelRoutingEngine:
        return ModelRoutingEngine(TextClassifier.from_bytes(info, blob), self.assigner)

    def shadow_report(self) -> dict[str, Any]:
        if self.comparison is None:
            return {"shadow_model_version": None, "current_model_version": self.classifier_version, "posts": 0,
                    "agreement": None, "by_category": []}
        return self.comparison.report(self._category_name)

    def _category_name(self, category: str) -> str:
        known = self.assigner.categories.get(category)
        return known.name if known else category
