"""Retention of citizens' contacts (PIPL): erased a configurable number of days after the case is closed.

A periodic batch job, never on the per-post path. Each run finds closed cases past the retention period
whose contact is still there and, per case in one versioned write: removes the contact and everything
derived from it (phone's last four digits, the poster's keyed hash, the idempotency fingerprint), records
when, and queues a **tombstone** for the private compacted contacts topic (key = case id, value = null), so
that compaction drops the contact from Kafka and the notifier drops its copy when it reads the tombstone.
The case, its public (redacted) text and its history stay.
"""

from __future__ import annotations

import asyncio
import time
from datetime import datetime, timedelta
from typing import Any

from services.common.clock import Clock
from services.common.logging import get_logger
from services.common.mongo import id_chunks
from services.intake import metrics
from services.intake.outbox import Write
from services.intake.store import CaseStore

log = get_logger(__name__)
ERASED_FIELDS = {"contact": None, "phone_last4": None, "poster_ref": None, "idempotency_fingerprint": None}


def erasure_cutoff(now: datetime, retention_days: float) -> datetime:
    """Cases closed before this instant have kept their contact long enough."""
    return now - timedelta(days=retention_days)


def tombstone_entry(case_id: str) -> dict[str, Any]:
    """The outbox entry the relay publishes as a null value on the contacts topic (compaction deletes)."""
    return {"id": f"erased:{case_id}", "topic": "case_contacts", "key": case_id, "value": None,
            "at_ms": int(time.time() * 1000)}


class ContactEraser:
    def __init__(self, store: CaseStore, clock: Clock, retention_days: float, *, batch: int = 500,
                 on_commit: Any = None) -> None:
        self.store = store
        self.clock = clock
        self.retention_days = retention_days
        self.batch = batch
        self.on_commit = on_commit or (lambda: None)

    async def due(self, now: datetime) -> list[str]:
        query = {"status": "closed", "closed_at": {"$lt": erasure_cutoff(now, self.retention_days)},
                 "contact_erased_at": None}
        return [doc["_id"] async for doc in self.store.cases.find(query, {"_id": 1}).limit(self.batch)]

    async def sweep(self) -> int:
        """Erase one batch of due contacts; returns how many were erased."""
        now = self.clock.now()
        due = await self.due(now)
        erased = 0
        for ids in id_chunks(due):
            async with self.store.locks.holding(ids):
                outcomes = await asyncio.gather(*(self.store.outbox.write(Write(
                    [tombstone_entry(case_id)], holder="cases", doc_id=case_id,
                    guard={"_id": case_id, "contact_erased_at": None},
                    update={"$set": {**ERASED_FIELDS, "contact_erased_at": now}})) for case_id in ids))
            erased += sum(outcomes)
        if erased:
            metrics.CONTACTS_ERASED.inc(erased)
            self.on_commit()
            log.info("contacts_erased", count=erased, retention_days=self.retention_days)
        return erased

    async def sweep_all(self) -> int:
        total = 0
        while erased := await self.sweep():
            total += erased
        return total

    async def run(self, interval_seconds: float) -> None:
        while True:
            try:
                await self.sweep_all()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the database is away: try again next round
                log.warning("contact_erasure_failed", error=type(exc).__name__)
            await asyncio.sleep(interval_seconds)
