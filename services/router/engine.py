"""The routing engine the worker uses: the trained text model (falling back to the taxonomy's keyword rules
when no model is shipped) plus the unit registry and gazetteer. Adapts both to :class:`Proposal`."""

from __future__ import annotations

from pathlib import Path

from services.common.events import Location, PostKind
from services.router.assignment import Assigner
from services.router.classifier import KeywordClassifier, load_model
from services.router.policies import Proposal
from services.router.reference import load_reference


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
        result = self.classifier.classify(text)
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


def load_engine(model_dir: Path) -> ModelRoutingEngine:
    reference = load_reference()
    classifier = load_model(model_dir) if (model_dir / "model.json").exists() else (
        KeywordClassifier.from_taxonomy(reference.taxonomy))
    return ModelRoutingEngine(classifier, Assigner(reference))
