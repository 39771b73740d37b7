"""The outbox's group commit and the relay's plan against the real MongoDB-wire server: how many statements
concurrent requests cost, what a failed guard leaves out, and how a group whose writer died is settled."""

from __future__ import annotations

import asyncio
from collections import Counter
from datetime import UTC, datetime
from types import SimpleNamespace

from pymongo import monitoring

from services.common.mongo import new_client
from services.intake.outbox import (
    OutboxLog,
    OutboxWriter,
    Write,
    WriterMark,
    done_ref,
    group_ref,
    plan_publication,
    window_ids,
)
from services.intake.store import CaseStore


class Commands(monitoring.CommandListener):
    def __init__(self) -> None:
        self.seen: Counter[str] = Counter()

    def started(self, event: monitoring.CommandStartedEvent) -> None:
        self.seen[event.command_name] += 1

    def succeeded(self, event: monitoring.CommandSucceededEvent) -> None:
        pass

    def failed(self, event: monitoring.CommandFailedEvent) -> None:
        pass


def entry(event_id: str, case_id: str, version: int) -> dict:
    return {"id": event_id, "topic": "case_events", "key": case_id, "value": "{}", "v": version, "at_ms": 0}


async def test_concurrent_writes_cost_one_group_and_a_failed_guard_publishes_nothing(mongo_url: str,
                                                                                    run_id: str) -> None:
    commands = Commands()
    client = new_client(mongo_url, event_listeners=[commands])
    db = client[f"wenzheng_intake_outbox_{run_id}"]
    writer = OutboxWriter(db, "writer-a")
    log = OutboxLog(db)
    try:
        posts = [Write([entry(f"s{i}", f"c{i}", 1)], holder="cases", doc_id=f"c{i}",
                       insert={"_id": f"c{i}", "version": 1},
                       pointers=[("tracking_numbers", {"_id": f"T{i}", "case_id": f"c{i}"})]) for i in range(40)]
        assert await asyncio.gather(*(writer.write(w) for w in posts)) == [True] * 40
        # the writer's registration, the intent, the cases, the done marker and the pointers: 40 posts, 5 commands
        assert sum(commands.seen.values()) == 5, commands.seen
        commands.seen.clear()

        # every other command expects a version the case no longer has
        changes = [Write([entry(f"a{i}", f"c{i}", 2)], holder="cases", doc_id=f"c{i}",
                         guard={"_id": f"c{i}", "version": 1 if i % 2 == 0 else 7},
                         update={"$set": {"version": 2}}) for i in range(40)]
        outcomes = await asyncio.gather(*(writer.write(w) for w in changes))
        assert outcomes == [i % 2 == 0 for i in range(40)]
        # intent, one bulk write, the read-back of who got the change, the done marker
        assert commands.seen == Counter({"insert": 2, "update": 1, "find": 1}), commands.seen
        done = await db["outbox"].find_one({"_id": done_ref(group_ref("writer-a", 2))})
        assert sorted(done["failed"]) == sorted(f"a{i}" for i in range(1, 40, 2))

        # a writer that dies between its intent and its done marker: the group is settled from the documents
        crashed = [Write([entry("x0", "c0", 3)], holder="cases", doc_id="c0", guard={"_id": "c0", "version": 2},
                         update={"$set": {"version": 3}}),
                   Write([entry("x1", "c1", 3)], holder="cases", doc_id="c1", guard={"_id": "c1", "version": 2},
                         update={"$set": {"version": 3}})]  # c1 is still at version 1: never changed
        queued = [SimpleNamespace(write=w) for w in crashed]
        ref = await writer._insert_intent(queued)  # the first half of a group, then "kill -9"
        await writer._apply(queued, ref)
        marks = await log.marks()
        docs = await log.read(window_ids(marks, 8))
        plan = plan_publication(marks, docs, window=8, now_ms=10**13, abandon_ms=30_000)  # long after
        assert [g.seq for g in plan.ready] == [1, 2, 3] and [g.ref for g in plan.to_check] == [ref]
        reached = await log.reached(plan.to_check)
        published = [e["id"] for g in plan.ready for e in g.events(reached.get(g.ref))]
        assert sorted(published) == sorted([*(f"s{i}" for i in range(40)), *(f"a{i}" for i in range(0, 40, 2)), "x0"])

        await log.advance(plan, datetime.now(UTC))
        assert await log.marks() == [WriterMark("writer-a", 3)]
        assert await log.backlog() == 0 and await db["outbox"].count_documents({}) == 0
    finally:
        await client.drop_database(db.name)
        await client.close()


async def test_events_left_inside_documents_by_an_older_deployment_move_into_the_outbox(mongo_url: str,
                                                                                        run_id: str) -> None:
    client = new_client(mongo_url)
    db = client[f"wenzheng_intake_legacy_{run_id}"]
    try:
        legacy = [entry("old-1", "c-old", 2), entry("old-2", "c-old", 3)]
        await db["cases"].insert_one({"_id": "c-old", "version": 3, "outbox": legacy, "outbox_count": 2})
        await db["people"].insert_one({"_id": "p-old", "outbox": [entry("old-3", "p-old", 1)], "outbox_count": 1})
        await db["outbox_pending"].insert_many([{"_id": "c-old", "seq": 1}, {"_id": "p-old", "seq": 1}])
        store = CaseStore(db, OutboxWriter(db, "writer-m"))
        assert await store.migrate_legacy_outboxes() == 3
        assert await store.outbox_backlog() == 3
        assert (await db["cases"].find_one({"_id": "c-old"}))["outbox_count"] == 0
        assert await db["outbox_pending"].count_documents({}) == 0
        assert await store.migrate_legacy_outboxes() == 0  # once only
    finally:
        await client.drop_database(db.name)
        await client.close()
