"""Fakes of intake's own adapters for the handlers' unit tests (as cosmicpython's FakeRepository)."""

from __future__ import annotations

from typing import Any

from services.intake.store import DuplicateKey


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
