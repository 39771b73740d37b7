"""The router's MongoDB adapter (database ``wenzheng_router``): labelled corrections for retraining, imported
past cases (``history``), routing-quality tallies (``quality_tallies``, see ``services.router.quality``) and the
model versions that routed (the trained models themselves are in ``services.router.registry``).

Nothing here is written per post: the per-case and per-poster state the worker routes with is held in Kafka
(``services.router.handlers``); corrections arrive in batches from the router's corrections topic, quality
counts by a timer, model versions at start. Every read and write is by ``_id`` or a whole (small)
collection, which the local MongoDB-wire server serves well.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from typing import Any

from pymongo import ASCENDING, UpdateOne
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import BulkWriteError, DuplicateKeyError

from services.common.events import utcnow
from services.common.mongo import DUPLICATE_KEY
from services.router.domain import Correction


class RouterStore:
    def __init__(self, db: AsyncDatabase) -> None:
        self.db = db
        self.corrections = db["corrections"]
        self.models = db["model_versions"]
        self.history = db["history"]
        self.quality = db["quality_tallies"]
        self.retrain_runs = db["retrain_runs"]

    async def ensure_indexes(self) -> None:
        await self.corrections.create_index([("recorded_at", ASCENDING)], name="recorded_at")

    async def record_corrections(self, corrections: Sequence[Correction]) -> None:
        """Supervisors' reassignments (label = the right category and unit) and returns (the unit was wrong), one
        bulk write per batch; keyed by event id, so a replay stores nothing new. ``recorded_at`` is the event's
        time: the latest reassignment of a case is the one a retrain trusts."""
        if not corrections:
            return
        await self.corrections.bulk_write([UpdateOne(
            {"_id": c.event_id},
            {"$setOnInsert": {"case_id": c.case_id, "text": c.text, "label": c.label, "department_id": c.department_id,
                              "kind": c.kind, "county": c.county, "recorded_at": c.occurred_at}},
            upsert=True) for c in corrections], ordered=False)

    async def corrections_for_training(self, include_returns: bool = False) -> list[dict]:
        """Reassignments carry a trusted label; returns only say which unit was wrong (``include_returns``:
        them too, for the caller to count)."""
        query = {} if include_returns else {"kind": "reassigned", "label": {"$ne": None}}
        return [d async for d in self.corrections.find(query)]

    async def import_history(self, cases: Sequence[Mapping[str, Any]]) -> int:
        """Past labelled cases (``_id`` derived from the text, see ``services.router.history``); a case
        already imported is left as it was. Returns how many were new."""
        new = 0
        for start in range(0, len(cases), 500):
            chunk = list(cases[start : start + 500])
            try:
                new += len((await self.history.insert_many(chunk, ordered=False)).inserted_ids)
            except BulkWriteError as exc:
                problems = exc.details.get("writeErrors", [])
                if any(error.get("code") != DUPLICATE_KEY for error in problems):
                    raise
                new += len(chunk) - len(problems)
        return new

    async def history_for_training(self) -> list[dict]:
        return [d async for d in self.history.find({})]

    async def add_quality(self, owner: str, counts: Mapping[str, Mapping[str, int]]) -> None:
        """Add one worker's drained quality counts (month → ``$inc`` paths) to its own month documents."""
        if counts:
            await self.quality.bulk_write([UpdateOne({"_id": f"{month}|{owner}"}, {"$inc": dict(paths)}, upsert=True)
                                           for month, paths in counts.items()], ordered=False)

    async def quality_documents(self, months: Collection[str] | None = None) -> list[dict]:
        """The tally documents (a few per worker and month: small enough to scan)."""
        docs = [d async for d in self.quality.find({})]
        return [d for d in docs if months is None or str(d["_id"]).split("|", 1)[0] in months]

    async def claim_retrain(self, run_id: str) -> bool:
        """True for the one caller that first inserts this run (an insert of a taken ``_id`` fails on every
        server, unlike an update)."""
        try:
            await self.retrain_runs.insert_one({"_id": run_id, "claimed_at": utcnow()})
        except DuplicateKeyError:
            return False
        return True

    async def record_model(self, version: str) -> None:
        await self.models.update_one({"_id": version}, {"$setOnInsert": {"first_used_at": utcnow()},
                                                        "$set": {"last_started_at": utcnow()}}, upsert=True)
