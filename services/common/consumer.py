"""The one consumer loop of the platform (aiokafka), for every consumer that is not a faust agent.

    loop = ConsumerLoop(
        [Source(names.case_events, "case_events"),                    # topic, expected topic key of parse_event
         Source(names.case_contacts, "case_contacts", tombstones=True)],
        handle,                                   # async (Batch) -> None: one partition's records, in order
        service="notifier", group_id="wenzheng-notifier", names=names,
        states=[cases],                           # optional KeyedState(s), each with its changelog topic
        transactional_id="wenzheng-notifier-0",   # optional: outputs + changelog + offsets in one transaction
        health=HEALTH, on_dead_letter=..., on_assigned=..., on_revoked=...)
    await loop.run(stop)                          # until ``stop`` is set; a handler error is raised, not swallowed

- Each poll (``getmany``, up to ``max_records``, blocking up to ``timeout_ms``: an idle consumer sleeps in the
  broker's fetch, it does not spin) is parsed record by record; a malformed record goes to the dead-letter
  topic with the reason (and ``on_dead_letter``); the valid ones are handed to the handler as one
  :class:`Batch` per partition, in partition order. Offsets are committed after the handlers of the poll return.
- Outputs: ``loop.send(topic, value, key=, partition=)``. Without a transaction they are flushed before the
  offsets are committed (at-least-once: handlers must be idempotent); with ``transactional_id`` the outputs,
  the state's changelog records and the consumed offsets commit together (``send_offsets_to_transaction``);
  readers of the outputs use ``isolation_level="read_committed"`` (``new_consumer``'s default).
- :class:`KeyedState`: an in-memory dict per assigned partition of the first source topic, restored on
  assignment from a compacted changelog topic with the same partition count (record key = state key,
  partition number = input partition number: co-partitioned with the input); ``put``/``delete`` mark a key,
  and its value at the end of the batch is written to the changelog. Values are JSON by default.
- Timers of a stateful user (a periodic scan) run inside ``async with loop.exclusive():``: never beside a
  batch or a rebalance, and with their outputs and state changes in a transaction of their own.
- Lag per topic goes to ``health`` (:class:`services.common.metrics.ConsumerHealth`) every ``lag_seconds``.
- Rebalances: ``on_revoked`` runs with no batch in flight (and before the state of those partitions is
  dropped); ``on_assigned`` runs after the state of new partitions is restored.
- After an error the loop's in-memory state may be ahead of what was committed: ``run`` clears it when it
  ends, and a new ``run`` restores it from the changelogs.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord
from aiokafka.abc import ConsumerRebalanceListener
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.coordinator.assignors.range import RangePartitionAssignor
from aiokafka.errors import CommitFailedError, IllegalStateError, TopicAlreadyExistsError
from aiokafka.structs import TopicPartition

from services.common.config import TopicSettings, common_settings
from services.common.events import Event, EventValidationError, parse_event
from services.common.kafka import EventPublisher, new_consumer, new_producer
from services.common.logging import get_logger
from services.common.metrics import ConsumerHealth

log = get_logger(__name__)
V = TypeVar("V")
TRANSACTIONAL_FETCH = {"fetch_min_bytes": 64 * 1024, "fetch_max_wait_ms": 100}


@dataclass(frozen=True)
class Source:
    """A consumed topic: ``expected_key`` is the topic key its events must belong to (None: any type);
    with ``tombstones`` a record without a value (a compacted topic's delete) reaches the handler as
    ``(None, record)`` instead of being dead-lettered; with ``raw`` every record does, unparsed (an internal
    topic whose values are not events)."""

    topic: str
    expected_key: str | None = None
    tombstones: bool = False
    raw: bool = False


@dataclass
class Batch:
    """One partition's valid records of one poll, in offset order."""

    tp: TopicPartition
    items: list[tuple[Event | None, ConsumerRecord]]

    @property
    def partition(self) -> int:
        return self.tp.partition


BatchHandler = Callable[[Batch], Awaitable[None]]
DeadLetterHook = Callable[[ConsumerRecord, Exception], None]
RebalanceHook = Callable[[list[TopicPartition]], Awaitable[None]]


def _json_encode(value: Any) -> bytes:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode()


class KeyedState(Generic[V]):
    """Per-partition key → value state backed by the compacted topic ``changelog``.

    Mutating a value in place is not seen: call ``put`` (again) after changing it. ``decode`` may return None
    for a record it refuses (it is then left out of the restored state)."""

    def __init__(self, changelog: str, *, encode: Callable[[V], bytes] = _json_encode,
                 decode: Callable[[bytes], V | None] = json.loads) -> None:
        self.changelog = changelog
        self.encode, self.decode = encode, decode
        self.partitions: dict[int, dict[str, V]] = {}
        self._dirty: set[tuple[int, str]] = set()

    def of(self, partition: int) -> dict[str, V]:
        """The partition's entries (read them; write through ``put``/``delete``)."""
        return self.partitions.get(partition, {})

    def get(self, partition: int, key: str, default: V | None = None) -> V | None:
        return self.partitions.get(partition, {}).get(key, default)

    def put(self, partition: int, key: str, value: V) -> None:
        self.partitions.setdefault(partition, {})[key] = value
        self._dirty.add((partition, key))

    def remember(self, partition: int, key: str, value: V | None) -> None:
        """Set (None: forget) without a changelog record: for a state whose changelog is the topic the value
        was just read from (a compacted input, such as the contacts topic)."""
        if value is None:
            self.partitions.get(partition, {}).pop(key, None)
        else:
            self.partitions.setdefault(partition, {})[key] = value

    def delete(self, partition: int, key: str) -> None:
        if self.partitions.get(partition, {}).pop(key, None) is not None:
            self._dirty.add((partition, key))

    def __len__(self) -> int:
        return sum(map(len, self.partitions.values()))

    def changes(self) -> list[tuple[int, str, bytes | None]]:
        """The changelog records owed since the last call: (partition, key, value or None for a delete)."""
        out = []
        for partition, key in self._dirty:
            value = self.partitions.get(partition, {}).get(key)
            out.append((partition, key, None if value is None else self.encode(value)))
        self._dirty.clear()
        return out

    def load(self, partition: int, records: Iterable[ConsumerRecord]) -> None:
        entries = self.partitions.setdefault(partition, {})
        for record in records:
            if record.key is None:
                continue
            key = record.key.decode()
            value = None if record.value is None else self.decode(record.value)
            if value is None:  # a delete, or a value its decoder refuses
                entries.pop(key, None)
            else:
                entries[key] = value

    def drop(self, partitions: Iterable[int]) -> None:
        gone = set(partitions)
        for p in gone:
            self.partitions.pop(p, None)
        self._dirty = {(p, k) for p, k in self._dirty if p not in gone}

    def clear(self) -> None:
        self.partitions.clear()
        self._dirty.clear()


async def ensure_changelogs(bootstrap: str, source_topic: str, changelogs: Sequence[str]) -> None:
    """Create missing changelog topics, compacted, with as many partitions as ``source_topic``."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=30000)
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        missing = [t for t in changelogs if t not in existing]
        if not missing:
            return
        described = await admin.describe_topics([source_topic])
        partitions = len(described[0]["partitions"])
        if partitions == 0:
            raise RuntimeError(f"topic {source_topic!r} does not exist: its changelog cannot be co-partitioned")
        with contextlib.suppress(TopicAlreadyExistsError):
            await admin.create_topics([NewTopic(name=t, num_partitions=partitions, replication_factor=1,
                                                topic_configs={"cleanup.policy": "compact",
                                                               "min.compaction.lag.ms": "0",
                                                               "segment.ms": str(3600 * 1000)})
                                       for t in missing])
    finally:
        await admin.close()


async def read_to_end(bootstrap: str, tps: list[TopicPartition],
                      apply: Callable[[TopicPartition, list[ConsumerRecord]], None]) -> int:
    """Every committed record of these partitions, from the start to their end as of now; returns how many."""
    if not tps:
        return 0
    reader = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False,
                              isolation_level="read_committed", max_partition_fetch_bytes=8 * 1024 * 1024,
                              fetch_max_bytes=64 * 1024 * 1024)
    await reader.start()
    count = 0
    try:
        reader.assign(tps)
        await reader.seek_to_beginning(*tps)
        ends = await reader.end_offsets(tps)
        pending = {tp for tp in tps if ends[tp] > 0}
        while pending:
            for tp, records in (await reader.getmany(*pending, timeout_ms=500, max_records=10000)).items():
                apply(tp, records)
                count += len(records)
            for tp in list(pending):
                if await reader.position(tp) >= ends[tp]:
                    pending.discard(tp)
    finally:
        await reader.stop()
    return count


class ConsumerLoop:
    def __init__(
        self,
        sources: Sequence[Source],
        handler: BatchHandler,
        *,
        service: str,
        group_id: str | None,
        bootstrap: str | None = None,
        names: TopicSettings | None = None,
        states: Sequence[KeyedState[Any]] = (),
        transactional_id: str | None = None,
        transaction_timeout_ms: int = 15000,
        max_records: int = 500,
        timeout_ms: int = 500,
        health: ConsumerHealth | None = None,
        lag_seconds: float = 5.0,
        on_dead_letter: DeadLetterHook | None = None,
        on_assigned: RebalanceHook | None = None,
        on_revoked: RebalanceHook | None = None,
        consumer: AIOKafkaConsumer | None = None,
        producer: AIOKafkaProducer | None = None,
        source_name: str | None = None,
        commit_offsets: bool = True,
        concurrent_partitions: bool = False,
        **consumer_options: Any,
    ) -> None:
        """``consumer``/``producer`` given: started and owned by the caller (used as they are);
        otherwise the loop makes, starts and stops its own. ``commit_offsets=False``: a reader without a
        group that chose where it starts and never commits (a replica following a topic for itself).
        ``concurrent_partitions``: a poll's partition batches are handled side by side (each in order), for a
        handler whose keys never meet across partitions and whose I/O then shares round trips."""
        if transactional_id and (consumer is not None or producer is not None):
            raise ValueError("a transactional loop makes its own consumer and producer")
        if states and not group_id:
            raise ValueError("keyed state needs a consumer group (it follows the group's assignment)")
        self.sources = {s.topic: s for s in sources}
        keys = {s.expected_key for s in sources}
        self._fallback_key = keys.pop() if len(keys) == 1 else None  # a record of a topic not named above
        self.state_topic = sources[0].topic
        self.handler, self.service, self.group_id = handler, service, group_id
        self.bootstrap = bootstrap or common_settings().kafka_bootstrap
        self.names = names
        self.states = list(states)
        self.transactional_id, self.transaction_timeout_ms = transactional_id, transaction_timeout_ms
        self.max_records, self.timeout_ms = max_records, timeout_ms
        self.health, self.lag_seconds = health, lag_seconds
        self.on_dead_letter, self.on_assigned, self.on_revoked = on_dead_letter, on_assigned, on_revoked
        self.consumer_options = consumer_options
        self.commit_offsets = commit_offsets
        self.concurrent_partitions = concurrent_partitions
        self._own_clients = consumer is None
        self.consumer: AIOKafkaConsumer | None = consumer
        self.producer: AIOKafkaProducer | None = producer
        self._publisher_type = EventPublisher
        self.publisher = EventPublisher(producer, source=source_name or f"/wenzheng/{service}",
                                        names=names) if producer is not None else None
        self.source_name = source_name or f"/wenzheng/{service}"
        self.lock = asyncio.Lock()  # one of: a poll's batches, an exclusive() block, a rebalance step
        self.owned: set[int] = set()  # partitions of the first source (and of the state) held now
        self.restored_records = 0
        self.last_restore_seconds = 0.0
        self.running = False
        self._broken: BaseException | None = None

    # ------------------------------------------------------------------ outputs

    async def send(self, topic: str, value: bytes | None, *, key: bytes | None = None,
                   partition: int | None = None) -> asyncio.Future:
        """Queue an output; it is delivered (or in the transaction) before the batch's offsets commit."""
        assert self.producer is not None, "the loop is not running"
        return await self.producer.send(topic, value, key=key, partition=partition)

    async def _write_changes(self) -> None:
        for state in self.states:
            for partition, key, value in state.changes():
                await self.send(state.changelog, value, key=key.encode(), partition=partition)

    @contextlib.asynccontextmanager
    async def exclusive(self) -> AsyncIterator[ConsumerLoop]:
        """Work beside the batches (a timer): alone, and committed as one unit (a transaction when configured)."""
        async with self.lock:
            if self._broken is not None:
                raise RuntimeError("the consumer loop failed; it restores its state when run again") from self._broken
            await self._begin()
            try:
                yield self
                await self._write_changes()
                await self._commit(None)
            except BaseException as exc:
                await self._fail(exc)
                raise

    async def _begin(self) -> None:
        if self.transactional_id:
            assert self.producer is not None
            await self.producer.begin_transaction()

    async def _commit(self, offsets: dict[TopicPartition, int] | None) -> None:
        assert self.producer is not None and self.consumer is not None
        if self.transactional_id:
            if offsets:
                assert self.group_id is not None
                await self.producer.send_offsets_to_transaction(offsets, self.group_id)
            await self.producer.commit_transaction()
            return
        await self.producer.flush()
        if offsets and self.commit_offsets and (self.group_id or not self._own_clients):
            try:
                await self.consumer.commit(offsets)
            except (CommitFailedError, IllegalStateError) as exc:
                # the partition moved on: its new owner replays from the last commit, which idempotent handlers allow
                log.info("commit_skipped", service=self.service, reason=type(exc).__name__)

    async def _fail(self, exc: BaseException) -> None:
        """The state in memory is now ahead of what was committed: nothing more runs until it is restored."""
        self._broken = exc
        if self.transactional_id and self.producer is not None:
            with contextlib.suppress(Exception):
                await self.producer.abort_transaction()

    # ------------------------------------------------------------------ records

    async def parse(self, record: ConsumerRecord) -> tuple[Event | None, ConsumerRecord] | None:
        """The record as an event, or None after dead-lettering it with the reason."""
        source = self.sources.get(record.topic) or Source(record.topic, self._fallback_key)
        if source.raw or (record.value is None and source.tombstones):
            return None, record
        try:
            return parse_event(record.value or b"", expected_topic=source.expected_key), record
        except EventValidationError as exc:
            assert self.publisher is not None
            await self.publisher.dead_letter(record, exc, service=self.service)
            if self.on_dead_letter:
                self.on_dead_letter(record, exc)
            return None

    async def process(self, polled: dict[TopicPartition, list[ConsumerRecord]]) -> None:
        """One poll: parse, hand each partition's batch to the handler, write state changes, commit."""
        assert self.consumer is not None
        async with self.lock:
            if self._broken is not None:
                raise self._broken
            assignment = self.consumer.assignment()
            polled = {tp: rs for tp, rs in polled.items() if rs and tp in assignment}
            if not polled:
                return  # revoked while we waited for the lock: the new owner reads them
            await self._begin()
            try:
                batches = []
                for tp, records in polled.items():
                    items = [item for item in [await self.parse(r) for r in records] if item is not None]
                    if items:
                        batches.append(Batch(tp, items))
                if self.concurrent_partitions:
                    await asyncio.gather(*(self.handler(batch) for batch in batches))
                else:
                    for batch in batches:
                        await self.handler(batch)
                await self._write_changes()
                await self._commit({tp: records[-1].offset + 1 for tp, records in polled.items()})
            except BaseException as exc:
                await self._fail(exc)
                raise
            if self.health is not None:
                self.health.applied()

    # ------------------------------------------------------------------ rebalancing

    def listener(self) -> ConsumerRebalanceListener:
        loop = self

        class Listener(ConsumerRebalanceListener):
            async def on_partitions_revoked(self, revoked: list[TopicPartition]) -> None:
                async with loop.lock:  # no batch and no exclusive() block in flight past this point
                    if loop.producer is not None and not loop.transactional_id:
                        await loop.producer.flush()
                    if loop.on_revoked:
                        await loop.on_revoked(list(revoked))

            async def on_partitions_assigned(self, assigned: list[TopicPartition]) -> None:
                await loop._adopt(list(assigned))

        return Listener()

    async def _adopt(self, assigned: list[TopicPartition]) -> None:
        """Keep the state of partitions still ours (nobody else can have written them during an eager
        rebalance), drop the others', restore the new ones' from the changelogs, then tell the user."""
        async with self.lock:
            now_owned = {tp.partition for tp in assigned if tp.topic == self.state_topic}
            gone, new = self.owned - now_owned, sorted(now_owned - self.owned)
            for state in self.states:
                state.drop(gone)
            self.owned = now_owned
            try:
                if self.states and new:
                    await self._restore(new)
                if self.on_assigned:
                    await self.on_assigned(list(assigned))
            except Exception as exc:  # a half-restored state must not be worked on: the next poll raises this
                log.error("restore_failed", service=self.service, partitions=new, error=repr(exc)[:300])
                self._broken = exc

    async def _restore(self, partitions: list[int]) -> None:
        started = time.perf_counter()
        by_topic = {s.changelog: s for s in self.states}
        for state in self.states:
            for p in partitions:
                state.partitions.setdefault(p, {})
        self.restored_records = await read_to_end(
            self.bootstrap, [TopicPartition(s.changelog, p) for s in self.states for p in partitions],
            lambda tp, records: by_topic[tp.topic].load(tp.partition, records))
        self.last_restore_seconds = time.perf_counter() - started
        log.info("state_restored", service=self.service, partitions=partitions, records=self.restored_records,
                 seconds=round(self.last_restore_seconds, 3))

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        self._broken = None
        if not self._own_clients:
            return
        if self.states:
            await ensure_changelogs(self.bootstrap, self.state_topic, [s.changelog for s in self.states])

        producer_options: dict[str, Any] = {}
        if self.transactional_id:
            producer_options = {"transactional_id": self.transactional_id,
                                "transaction_timeout_ms": self.transaction_timeout_ms}
        self.producer = new_producer(self.bootstrap, **producer_options)
        await self.producer.start()
        self.publisher = self._publisher_type(self.producer, source=self.source_name, names=self.names)
        options: dict[str, Any] = {"max_poll_records": self.max_records,
                                   # same partition numbers of every source: co-partitioned inputs and state
                                   "partition_assignment_strategy": (RangePartitionAssignor,)}
        if self.transactional_id:
            # a transaction costs the broker about six requests and a marker per partition whatever it holds:
            # the broker holds a fetch up to this long to gather more, so a busy loop commits fewer, larger ones
            options.update(TRANSACTIONAL_FETCH)
        options.update(self.consumer_options)
        self.consumer = new_consumer(group_id=self.group_id, bootstrap=self.bootstrap, **options)
        self.consumer.subscribe(list(self.sources), listener=self.listener())
        await self.consumer.start()

    async def stop(self) -> None:
        for state in self.states:
            state.clear()
        self.owned = set()
        if not self._own_clients:
            return
        if self.consumer is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.consumer.stop(), 10)  # leaves the group: the others take over
        if self.producer is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.producer.stop(), 10)

    async def run(self, stop: asyncio.Event | None = None) -> None:
        """Start, consume until ``stop`` is set (or a handler fails: raised), stop."""
        stop = stop or asyncio.Event()
        await self.start()
        assert self.consumer is not None
        lag = asyncio.create_task(self._report_lag(stop)) if self.health is not None else None
        self.running = True
        try:
            while not stop.is_set():
                polled = await self.consumer.getmany(timeout_ms=self.timeout_ms, max_records=self.max_records)
                if polled:
                    await self.process(polled)
                elif self._broken is not None:
                    raise self._broken
        finally:
            self.running = False
            if lag is not None:
                lag.cancel()
                await asyncio.gather(lag, return_exceptions=True)
            await self.stop()

    async def _report_lag(self, stop: asyncio.Event) -> None:
        assert self.health is not None
        while not stop.is_set():
            with contextlib.suppress(Exception):
                per_topic: dict[str, int] = {}
                for tp, n in (await end_offsets_lag(self.consumer)).items() if self.consumer else ():
                    per_topic[tp.topic] = per_topic.get(tp.topic, 0) + n
                for topic, n in per_topic.items():
                    self.health.lag.labels(topic).set(n)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=self.lag_seconds)


async def end_offsets_lag(consumer: AIOKafkaConsumer) -> dict[TopicPartition, int]:
    """Messages not yet consumed, per assigned partition (for the lag gauge)."""
    assigned = consumer.assignment()
    if not assigned:
        return {}
    ends = await consumer.end_offsets(list(assigned))
    lag = {}
    for tp in assigned:
        try:
            position = await consumer.position(tp)
        except Exception:
            continue
        lag[tp] = max(0, ends[tp] - position)
    return lag


@dataclass
class KeyedConcurrency:
    """Hands one partition's batch to a per-record handler, up to ``limit`` keys at once, in order per key."""

    handler: Callable[[Event, ConsumerRecord], Awaitable[None]]
    limit: int = 1
    _slots: asyncio.Semaphore = field(init=False)

    def __post_init__(self) -> None:
        self._slots = asyncio.Semaphore(max(1, self.limit))

    async def _in_order(self, items: list[tuple[Event | None, ConsumerRecord]]) -> None:
        async with self._slots:
            for event, record in items:
                if event is not None:
                    await self.handler(event, record)

    async def __call__(self, batch: Batch) -> None:
        if self.limit <= 1:
            await self._in_order(batch.items)
            return
        by_key: dict[bytes | None, list[tuple[Event | None, ConsumerRecord]]] = {}
        for event, record in batch.items:
            by_key.setdefault(record.key, []).append((event, record))
        results = await asyncio.gather(*(self._in_order(group) for group in by_key.values()),
                                       return_exceptions=True)
        if failure := next((r for r in results if isinstance(r, BaseException)), None):
            raise failure
