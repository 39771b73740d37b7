"""The router's MongoDB adapter (database ``wenzheng_router``): recent posts for duplicate detection,
labelled corrections for retraining, imported past cases (``history``), routing-quality tallies
(``quality_tallies``, see ``services.router.quality``) and the model versions that routed (the trained
models themselves are in ``services.router.registry``).

Recent posts live in one document per poster and day (``_id`` = ``"<poster_ref>|<YYYY-MM-DD>"``, UTC day of
submission): a post is added with ``$addToSet`` (a replay adds nothing), a closed case's id goes into the
same document's ``closed`` set, and the posts of a poster's last days are read with one ``_id: {$in}``
query. Every read and write is by ``_id``, which the local MongoDB-wire server serves from its index (a
filter on any other field scans the whole collection), and a batch of cases costs one query and one
bulk write however many posters it has. The local server's updates are not atomic: the worker writes each
document at most once per batch; two workers adding posts of the same poster on the same day at the same
moment could, on that server only, lose one of them for duplicate detection.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from pymongo import ASCENDING, UpdateOne
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import BulkWriteError, DuplicateKeyError

from services.common.events import utcnow
from services.common.mongo import DUPLICATE_KEY, id_chunks
from services.router.policies import CaseRouting, RecentPost

STORED_TEXT_CHARS = 2000


def day_key(poster_ref: str, when: datetime) -> str:
    return f"{poster_ref}|{when.astimezone(UTC).date().isoformat()}"


def day_keys(poster_ref: str, now: datetime, window: timedelta) -> list[str]:
    """The documents that can hold this poster's posts of ``[now - window, now]``."""
    first, last = (now - window).astimezone(UTC).date(), now.astimezone(UTC).date()
    return [f"{poster_ref}|{(first + timedelta(days=i)).isoformat()}" for i in range((last - first).days + 1)]


class RouterStore:
    def __init__(self, db: AsyncDatabase) -> None:
        self.db = db
        self.poster_days = db["poster_days"]
        self.corrections = db["corrections"]
        self.models = db["model_versions"]
        self.history = db["history"]
        self.quality = db["quality_tallies"]
        self.retrain_runs = db["retrain_runs"]

    async def ensure_indexes(self) -> None:
        await self.corrections.create_index([("recorded_at", ASCENDING)], name="recorded_at")

    async def remember_posts(self, cases: Iterable[CaseRouting], existing: Collection[str] | None = None) -> None:
        """Add submitted posts (with a poster and a time) to their poster's day; idempotent. ``existing``: the
        day documents known to exist (e.g. just read by :meth:`recent_posts_of`); the others are inserted
        whole, which costs the server far less than an upsert, and updated only if someone created them
        meanwhile."""
        by_day: dict[str, list[dict]] = {}
        for case in cases:
            if case.poster_ref and case.submitted_at:
                by_day.setdefault(day_key(case.poster_ref, case.submitted_at), []).append(
                    {"case_id": case.case_id, "text": case.text[:STORED_TEXT_CHARS], "submitted_at": case.submitted_at})
        update = [key for key in by_day if existing is None or key in existing]
        insert = [key for key in by_day if existing is not None and key not in existing]
        if insert:
            try:
                await self.poster_days.insert_many([{"_id": key, "posts": by_day[key]} for key in insert],
                                                   ordered=False)
            except BulkWriteError as exc:
                problems = exc.details.get("writeErrors", [])
                if any(error.get("code") != DUPLICATE_KEY for error in problems):
                    raise
                update += [insert[error["index"]] for error in problems]
        if update:
            await self.poster_days.bulk_write(
                [UpdateOne({"_id": key}, {"$addToSet": {"posts": {"$each": by_day[key]}}}, upsert=True)
                 for key in update], ordered=False)

    async def remember_post(self, case: CaseRouting) -> None:
        await self.remember_posts([case])

    async def recent_posts_of(self, posters: Sequence[tuple[str, datetime]],
                              window: timedelta) -> tuple[dict[str, list[RecentPost]], set[str]]:
        """poster_ref → their posts submitted within ``window`` before each given time (the latest time
        given for a poster bounds its window; callers filter by time again per case), and the ids of the
        day documents that exist."""
        latest: dict[str, datetime] = {}
        for poster, now in posters:
            latest[poster] = max(now, latest.get(poster, now))
        keys = sorted({key for poster, now in latest.items() for key in day_keys(poster, now, window)})
        found: dict[str, list[RecentPost]] = {poster: [] for poster in latest}
        existing = set()
        for chunk in id_chunks(keys):
            async for doc in self.poster_days.find({"_id": {"$in": chunk}}):
                existing.add(doc["_id"])
                poster = doc["_id"].rsplit("|", 1)[0]
                closed = set(doc.get("closed", []))
                found[poster].extend(RecentPost(p["case_id"], p["text"], p["submitted_at"], p["case_id"] not in closed)
                                     for p in doc.get("posts", []))
        return found, existing

    async def recent_posts(self, poster_ref: str, now: datetime, window: timedelta) -> list[RecentPost]:
        posts = (await self.recent_posts_of([(poster_ref, now)], window))[0][poster_ref]
        return [p for p in posts if now - window <= p.submitted_at <= now]

    async def mark_closed(self, cases: Iterable[CaseRouting]) -> None:
        """Cases replied, closed or linked: no longer candidates for duplicate links."""
        by_day: dict[str, list[str]] = {}
        for case in cases:
            if case.poster_ref and case.submitted_at:
                by_day.setdefault(day_key(case.poster_ref, case.submitted_at), []).append(case.case_id)
        if by_day:
            await self.poster_days.bulk_write(
                [UpdateOne({"_id": key}, {"$addToSet": {"closed": {"$each": ids}}}) for key, ids in by_day.items()],
                ordered=False)

    async def record_corrections(self, corrections: Sequence[tuple[str, CaseRouting, str | None, str, str]]) -> None:
        """Supervisors' reassignments (label = the right category and unit) and returns (the unit was wrong),
        as (event id, case, label, department id, kind); keyed by event id, so a replay stores nothing new."""
        if not corrections:
            return
        now = utcnow()
        await self.corrections.bulk_write([UpdateOne(
            {"_id": event_id},
            {"$setOnInsert": {"case_id": case.case_id, "text": case.text, "label": label,
                              "department_id": department_id, "kind": kind,
                              "county": case.location.county if case.location else None, "recorded_at": now}},
            upsert=True) for event_id, case, label, department_id, kind in corrections], ordered=False)

    async def record_correction(self, event_id: str, case: CaseRouting, *, label: str | None,
                                department_id: str, kind: str) -> None:
        await self.record_corrections([(event_id, case, label, department_id, kind)])

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
