"""The real local broker and MongoDB-wire server: events of every type through Kafka, documents through Mongo."""

from __future__ import annotations

import asyncio
from collections import defaultdict

import pytest
from pymongo import ASCENDING, UpdateOne
from pymongo.errors import DuplicateKeyError

from services.common.consumer import ConsumerLoop, KeyedConcurrency, Source
from services.common.events import SPEC_BY_MODEL, make_event, parse_event
from services.common.kafka import EventPublisher, new_consumer, new_producer
from services.common.mongo import new_client
from tests.common.samples import sample_payloads

pytestmark = pytest.mark.integration


async def test_every_event_type_round_trips_through_the_broker(kafka_bootstrap, test_topics):
    cases = [f"case-{i}" for i in range(12)]
    sent = {}
    producer = new_producer(kafka_bootstrap)
    await producer.start()
    try:
        publisher = EventPublisher(producer, source="/tests", names=test_topics)
        batch = []
        for case_id in cases:
            for payload in sample_payloads(case_id):
                event_topic = publisher.topic_for(payload)
                event = make_event(payload, source="/tests")
                batch.append((event_topic, event))
                sent[event.id] = event
        await publisher.send_events(batch)
    finally:
        await producer.stop()

    all_topics = [getattr(test_topics, k) for k in test_topics.model_dump()]
    consumer = new_consumer(*all_topics, group_id=None, bootstrap=kafka_bootstrap)
    await consumer.start()
    received = {}
    partitions_by_key = defaultdict(set)
    order_by_case = defaultdict(list)
    try:
        async with asyncio.timeout(60):
            while len(received) < len(sent):
                for _tp, records in (await consumer.getmany(timeout_ms=1000)).items():
                    for record in records:
                        event = parse_event(record.value)
                        received[event.id] = event
                        partitions_by_key[(record.topic, record.key)].add(record.partition)
                        if record.topic == test_topics.case_events:
                            order_by_case[record.key].append(event.envelope.sequence)
    finally:
        await consumer.stop()

    assert received.keys() == sent.keys()
    for event_id, event in sent.items():
        assert received[event_id].data == event.data
        assert received[event_id].envelope == event.envelope
    # keyed by subject: one key always lands in one partition, and several partitions are used
    assert all(len(parts) == 1 for parts in partitions_by_key.values())
    case_partitions = {next(iter(p)) for (topic, _), p in partitions_by_key.items()
                       if topic == test_topics.case_events}
    assert len(case_partitions) > 1
    # per-case order is kept
    for sequences in order_by_case.values():
        assert sequences == [s for s in (p.version for p in sample_payloads() if hasattr(p, "version"))]
    assert {type(e.data) for e in received.values()} == set(SPEC_BY_MODEL)


async def test_documents_upsert_increment_and_unique_index(mongo_url, run_id):
    client = new_client(mongo_url)
    db = client[f"wenzheng_test_{run_id}"]
    try:
        rollups = db["rollups"]
        for _ in range(3):
            await rollups.update_one({"_id": "dept:a:2026-09"}, {"$inc": {"received": 1, "replied": 1}},
                                     upsert=True)
        await rollups.update_one({"_id": "dept:a:2026-09"}, {"$inc": {"received": 1}}, upsert=True)
        doc = await rollups.find_one({"_id": "dept:a:2026-09"})
        assert doc["received"] == 4 and doc["replied"] == 3

        cases = db["cases"]
        await cases.create_index([("tracking_number", ASCENDING)], unique=True, name="tracking_unique")
        await cases.insert_one({"_id": "c1", "tracking_number": "WZ-1"})
        with pytest.raises(DuplicateKeyError):
            await cases.insert_one({"_id": "c2", "tracking_number": "WZ-1"})
        assert await cases.count_documents({}) == 1
        indexes = {ix["name"] async for ix in await cases.list_indexes()}
        assert "tracking_unique" in indexes
    finally:
        await client.drop_database(db.name)
        await client.close()


async def test_id_pushdown_never_changes_what_a_filter_matches(mongo_url, run_id):
    """The local server's patch (deploy/local/ferretdb/id-pushdown.patch) narrows rows by `_id` before the
    rest of the filter runs; every other condition must still apply, and odd `$in` lists still work."""
    client = new_client(mongo_url)
    db = client[f"wenzheng_pushdown_{run_id}"]
    try:
        docs = [{"_id": f"c{i}", "version": i % 3, "tags": ["a", "b"] if i % 2 else ["c"]} for i in range(30)]
        await db.things.insert_many(docs)
        await db.things.insert_one({"_id": 7, "version": 0})

        assert (await db.things.update_one({"_id": "c4", "version": 0}, {"$set": {"x": 1}})).modified_count == 0
        assert (await db.things.update_one({"_id": "c4", "version": 1}, {"$set": {"x": 1}})).modified_count == 1
        assert (await db.things.delete_one({"_id": "c5", "version": 0})).deleted_count == 0

        ids = ["c1", "c2", "c3", "missing"]
        found = await db.things.find({"_id": {"$in": ids}, "tags": "a"}).to_list()
        assert sorted(d["_id"] for d in found) == ["c1", "c3"]
        mixed = await db.things.find({"_id": {"$in": ["c0", 7]}}).to_list()
        assert sorted(str(d["_id"]) for d in mixed) == ["7", "c0"]
        assert await db.things.count_documents({"_id": {"$in": ["c1", "c2"]}, "version": {"$gt": 1}}) == 1
        assert await db.things.count_documents({"_id": {"$nin": ["c1"]}}) == 30
        assert await db.things.count_documents({"_id": {"$in": [f"c{i}" for i in range(1500)]}}) == 30

        result = await db.things.update_many({"_id": {"$in": ids}, "version": 1}, {"$inc": {"version": 10}})
        assert result.modified_count == 1
        assert (await db.things.find_one({"_id": "c1"}))["version"] == 11
    finally:
        await client.drop_database(db.name)


async def test_one_update_command_may_carry_more_statements_than_the_server_has_connections(mongo_url, run_id):
    """FerretDB kept every statement's query open until the command ended: 101+ updates in one bulk write
    waited forever for a pooled connection (deploy/local/ferretdb/update-closes-each-query.patch)."""
    client = new_client(mongo_url)
    db = client[f"wenzheng_bulk_{run_id}"]
    try:
        await db.things.insert_many([{"_id": f"c{i}", "n": 0} for i in range(300)])
        async with asyncio.timeout(60):
            result = await db.things.bulk_write([UpdateOne({"_id": f"c{i}", "n": 0}, {"$inc": {"n": 1}})
                                                 for i in range(300)], ordered=False)
        assert result.modified_count == 300
        assert await db.things.count_documents({"n": 1}) == 300
    finally:
        await client.drop_database(db.name)


async def test_consuming_several_cases_at_once_keeps_each_cases_order(kafka_bootstrap, test_topics, run_id):
    """The consumer loop with KeyedConcurrency(N): different keys interleave, one key's events stay in order,
    a malformed record is dead-lettered, and the batch is committed only when every key is done."""

    producer = new_producer(kafka_bootstrap)
    await producer.start()
    try:
        publisher = EventPublisher(producer, source="/tests", names=test_topics)
        batch = [(test_topics.case_events, make_event(payload, source="/tests"))
                 for i in range(8) for payload in sample_payloads(f"case-{i}")
                 if publisher.topic_for(payload) == test_topics.case_events]
        await publisher.send_events(batch)
        await producer.send_and_wait(test_topics.case_events, b"{not json", key=b"case-0")
    finally:
        await producer.stop()

    seen: dict[str, list[int]] = defaultdict(list)
    in_flight, most_in_flight = 0, 0
    stop = asyncio.Event()
    dead = []

    async def handler(event, record):
        nonlocal in_flight, most_in_flight
        in_flight += 1
        most_in_flight = max(most_in_flight, in_flight)
        await asyncio.sleep(0.01)
        seen[record.key.decode()].append(event.envelope.sequence)
        in_flight -= 1
        stop_when_all_done()

    def on_dead_letter(record, exc):
        dead.append(record.offset)
        stop_when_all_done()

    def stop_when_all_done():
        if sum(map(len, seen.values())) == len(batch) and dead:
            stop.set()

    consumer = new_consumer(test_topics.case_events, group_id=f"test-{run_id}", bootstrap=kafka_bootstrap)
    await consumer.start()
    producer = new_producer(kafka_bootstrap)
    await producer.start()
    try:
        async with asyncio.timeout(60):
            loop = ConsumerLoop([Source(test_topics.case_events, None)], KeyedConcurrency(handler, 8),
                                service="tests", group_id=None, consumer=consumer, producer=producer,
                                source_name="/tests", names=test_topics, on_dead_letter=on_dead_letter)
            await loop.run(stop)
    finally:
        await consumer.stop()
        await producer.stop()

    sent_order: dict[str, list[int]] = defaultdict(list)
    for _, event in batch:
        sent_order[event.key.decode()].append(event.envelope.sequence)
    assert dict(seen) == dict(sent_order)
    assert most_in_flight > 1
    assert len(dead) == 1
