"""Fakes of intake's own adapters for the handlers' unit tests (as cosmicpython's FakeRepository)."""

from __future__ import annotations

import copy
from datetime import datetime
from typing import Any

from services.intake.domain import Case
from services.intake.store import DuplicateKey, case_to_fields


class FakeOutbox:
    """The load readings of the outbox writer, set by the test."""

    def __init__(self) -> None:
        self.queued = 0
        self.seconds = 0.0

    def write_seconds(self) -> float:
        return self.seconds


class FakeCaseStore:
    """New cases and their events in memory, with the unique tracking numbers and Idempotency-Keys."""

    def __init__(self) -> None:
        self.cases: dict[str, dict[str, Any]] = {}
        self.events: list[dict[str, Any]] = []
        self.outbox = FakeOutbox()

    async def insert(self, doc: dict[str, Any], events: list[dict[str, Any]]) -> None:
        for other in self.cases.values():
            if other["tracking_number"] == doc["tracking_number"] or other["idempotency_key"] == doc["idempotency_key"]:
                raise DuplicateKey("duplicate key")
        self.cases[doc["_id"]] = doc
        self.events += events

    async def get_by_idempotency_key(self, key: str) -> dict[str, Any] | None:
        return next((doc for doc in self.cases.values() if doc["idempotency_key"] == key), None)

    async def get(self, case_id: str) -> dict[str, Any] | None:
        doc = self.cases.get(case_id)
        return copy.deepcopy(doc) if doc is not None else None

    async def commit(self, case: Case, expected_version: int, *, outbox: list[dict[str, Any]],
                     timeline: list[dict[str, Any]], replies: list[dict[str, Any]], now: datetime,
                     also_set: dict[str, Any] | None = None) -> bool:
        """The real store's guard: only if the case is still at ``expected_version``."""
        doc = self.cases.get(case.case_id)
        if doc is None or doc["version"] != expected_version:
            return False
        doc.update(case_to_fields(case), updated_at=now, **(also_set or {}))
        doc["timeline"] = [*doc.get("timeline", []), *timeline]
        doc["replies"] = [*doc.get("replies", []), *replies]
        self.events += outbox
        return True
