"""The routing engine the worker uses: the trained text model (falling back to the taxonomy's keyword rules
when no model is shipped) plus the unit registry and gazetteer. Adapts both to :class:`Proposal`.

The model is far cheaper per text in a batch than one text at a time, so the worker asks for
:meth:`ModelRoutingEngine.preclassified` with all the texts of a batch of events: one classification call,
then the policies propose for each case as usual."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from services.common.events import Location, PostKind
from services.common.reference import load_reference
from services.router.assignment import Assigner
from services.router.classifier import Classification, KeywordClassifier, load_model
from services.router.domain import Proposal


class ModelRoutingEngine:
    def __init__(self, classifier, assigner: Assigner) -> None:
        unknown = sorted(set(classifier.labels) - set(assigner.categories))
        if unknown:
            # e.g. a model trained on another corpus's labels: routing needs the taxonomy's categories
            raise ValueError(f"model labels {unknown} are not categories of the taxonomy; retrain on its ids")
        self.classifier = classifier
        self.assigner = assigner
        self.categories = assigner.categories
        self.model_version = f"{classifier.model_version}+ref-{assigner.version}"

    def propose(self, text: str, location: Location | None, exclude: frozenset[str]) -> Proposal:
        return self.proposal(self.classifier.classify(text), text, location, exclude)

    def preclassified(self, texts: Sequence[str]) -> PreclassifiedEngine:
        """An engine for these texts, all classified in one batch."""
        unique = list(dict.fromkeys(texts))
        return PreclassifiedEngine(self, dict(zip(unique, self.classifier.classify_batch(unique), strict=True)))

    def proposal(self, result: Classification, text: str, location: Location | None,
                 exclude: frozenset[str]) -> Proposal:
        assignment = self.assigner.assign(result.category, text, location, exclude=exclude, keywords=result.keywords)
        category = self.categories[result.category]
        return Proposal(
            category=result.category,
            category_name=category.name,
            confidence=float(result.confidence),
            unit_id=assignment.unit_id,
            unit_name=assignment.unit_name,
            working_days=assignment.working_days,
            kind=PostKind(assignment.kind),
            county=assignment.county,
            township=assignment.township,
            reasons=assignment.reasons,
            top_features=tuple(result.top_features[:5]),
            model_version=self.model_version,
        )


class PreclassifiedEngine:
    """A :class:`ModelRoutingEngine` whose classifications of some texts are already known."""

    def __init__(self, engine: ModelRoutingEngine, results: dict[str, Classification]) -> None:
        self.engine = engine
        self.results = results
        self.model_version = engine.model_version

    def propose(self, text: str, location: Location | None, exclude: frozenset[str]) -> Proposal:
        result = self.results.get(text)
        if result is None:
            result = self.results[text] = self.engine.classifier.classify(text)
        return self.engine.proposal(result, text, location, exclude)


def load_engine(model_dir: Path) -> ModelRoutingEngine:
    reference = load_reference()
    classifier = load_model(model_dir) if (model_dir / "model.json").exists() else (
        KeywordClassifier.from_taxonomy(reference.taxonomy))
    return ModelRoutingEngine(classifier, Assigner(reference))
