"""An in-memory fake of our own StatsStore (as cosmicpython's FakeRepository), for unit tests of the projector.

It keeps the store's contract, not its storage: ledger documents by case id with a revision, the batch
journal, each owner's rollup log with its floor and head, fold markers, and rollup documents that take an
owner's fold marker at most once. Documents are copied in and out, as a database would."""

from __future__ import annotations

import copy
from collections.abc import AsyncIterator, Iterable
from datetime import UTC, datetime
from typing import Any

from services.stats.domain import Counters, merge_counters
from services.stats.lists import Change
from services.stats.store import LogConflict, LogRecord, LogState, StoredRollups, rollup_location


class FakeStatsStore:
    def __init__(self) -> None:
        self.ledger: dict[str, dict[str, Any]] = {}
        self.journal: dict[str, dict[str, Any]] = {}
        self.log: dict[tuple[str, int], LogRecord] = {}
        self.owners: dict[str, LogState] = {}
        self.folds: dict[str, dict[str, Any]] = {}
        self.documents: dict[tuple[str, str], dict[str, Any]] = {}  # rollups by id, and markers by owner
        self.lists: dict[str, Change] = {}
        self.lists_built = False
        self.calls: list[str] = []  # every method called, in order

    def _called(self, name: str) -> None:
        self.calls.append(name)

    # ledger
    async def load_cases(self, case_ids: Iterable[str]) -> dict[str, dict[str, Any]]:
        self._called("load_cases")
        return {cid: copy.deepcopy(self.ledger[cid]) for cid in case_ids if cid in self.ledger}

    async def replace_cases(self, docs: list[dict[str, Any]], existing: set[str] | None = None) -> None:
        self._called("replace_cases")
        for doc in docs:
            self.ledger[doc["_id"]] = copy.deepcopy(doc)

    async def scan_revisions(self) -> AsyncIterator[dict[str, Any]]:
        for doc in list(self.ledger.values()):
            yield {"_id": doc["_id"], "rev": doc["rev"], "s": copy.deepcopy(doc["s"])}

    # the bulletin's lists
    async def case_lists(self) -> dict[str, Change]:
        return copy.deepcopy(self.lists)

    async def save_case_lists(self, changes: dict[str, Change]) -> None:
        for cid, change in changes.items():
            if change["rev"] >= self.lists.get(cid, {"rev": 0})["rev"]:
                self.lists[cid] = copy.deepcopy(change)

    async def case_lists_built(self) -> bool:
        return self.lists_built

    async def mark_case_lists_built(self) -> None:
        self.lists_built = True

    # the batch journal
    async def open_batch(self, batch_id: str, instance: str, group: str, seq: int, docs: list[dict[str, Any]],
                         deltas: dict[str, Counters], lists: dict[str, Change] | None = None) -> None:
        self._called("open_batch")
        self.journal[batch_id] = copy.deepcopy({"_id": batch_id, "instance": instance, "group": group, "seq": seq,
                                                "docs": docs, "deltas": deltas, "lists": lists or {},
                                                "opened_at": datetime.now(UTC)})

    async def open_batches(self) -> list[dict[str, Any]]:
        return sorted(copy.deepcopy(list(self.journal.values())),
                      key=lambda j: (j["instance"], j["seq"], j["opened_at"]))

    async def renumber_batches(self, batch_ids: list[str], seq: int) -> None:
        for batch_id in batch_ids:
            self.journal[batch_id]["seq"] = seq

    async def close_batches(self, batch_ids: list[str]) -> None:
        self._called("close_batches")
        for batch_id in batch_ids:
            self.journal.pop(batch_id, None)

    # the rollup log
    async def register_owner(self, owner: str, head: int = 0) -> None:
        state = self.owners.get(owner, LogState(0, 0))
        self.owners[owner] = LogState(state.floor, max(state.head, head))

    async def log_owners(self) -> dict[str, LogState]:
        return dict(self.owners)

    async def log_floors(self) -> dict[str, int]:
        return {owner: state.floor for owner, state in self.owners.items()}

    async def append_log(self, owner: str, seq: int, group: str, increments: dict[str, Counters],
                         lists: dict[str, Change] | None = None) -> bool:
        self._called("append_log")
        existing = self.log.get((owner, seq))
        if existing is not None:
            if existing.group != group:
                raise LogConflict(owner, seq)
            written = False
        else:
            self.log[(owner, seq)] = LogRecord(owner, seq, group, copy.deepcopy(increments),
                                               copy.deepcopy(lists or {}))
            written = True
        await self.register_owner(owner, head=seq)
        return written

    async def read_log(self, owner: str, after: int) -> list[LogRecord]:
        out = []
        seq = after + 1
        while (owner, seq) in self.log:
            out.append(copy.deepcopy(self.log[(owner, seq)]))
            seq += 1
        return out

    async def trim_log(self, owner: str, upto: int, floor: int) -> None:
        for seq in range(floor + 1, upto + 1):
            self.log.pop((owner, seq), None)
        state = self.owners[owner]
        self.owners[owner] = LogState(max(state.floor, upto), state.head)

    # folds into the rollup documents
    async def fold_state(self, owner: str) -> tuple[int, int | None]:
        state = self.folds.get(owner, {})
        return int(state.get("folded", 0)), state.get("to")

    async def begin_fold(self, owner: str, to: int) -> None:
        self.folds.setdefault(owner, {})["to"] = to

    async def end_fold(self, owner: str, folded: int) -> None:
        self.folds[owner] = {"folded": folded, "to": None}

    async def increment_once(self, increments: dict[str, Counters], marker: int, owner: str,
                             recovering: bool = False) -> None:
        self._called("increment_once")
        by_doc: dict[tuple[str, str], dict[str, Counters]] = {}
        for rid, counters in increments.items():
            coll, doc_id, _prefix = rollup_location(rid)
            by_doc.setdefault((coll, doc_id), {})[rid] = counters
        for location, rollups in by_doc.items():
            doc = self.documents.setdefault(location, {"rollups": {}, "markers": {}})
            if doc["markers"].get(owner) == marker:
                continue  # this fold is in the document already
            merge_counters(doc["rollups"], copy.deepcopy(rollups))
            doc["markers"][owner] = marker

    async def rollup_documents(self) -> list[StoredRollups]:
        return [StoredRollups(coll, doc_id, copy.deepcopy(doc["rollups"]), dict(doc["markers"]))
                for (coll, doc_id), doc in self.documents.items()]
