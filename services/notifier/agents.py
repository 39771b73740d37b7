"""The notifier worker: a consumer group over case events and contacts, a periodic ladder scan, channel
senders and the HTTP pages (/healthz, /readyz, /metrics).

Plain asyncio + aiokafka rather than faust agents: the exactly-once design needs, per partition, to
(1) finish the batch and the scan in flight and flush the producer before a partition is given up, and
(2) read the alerts partition to its end before anything is published for it. aiokafka's rebalance
listener is awaited at exactly those two points; faust's tables cannot be written from a timer and its
in-memory tables replay their whole changelog at every rebalance. Durable state lives in MongoDB.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

import uvicorn
from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition
from aiokafka.abc import ConsumerRebalanceListener
from aiokafka.coordinator.assignors.range import RangePartitionAssignor
from aiokafka.errors import CommitFailedError, IllegalStateError
from fastapi import FastAPI, Response

from services.common.clock import Clock, clock_from_environment
from services.common.config import CommonSettings, TopicSettings, common_settings, topics
from services.common.consumer import read_to_end
from services.common.events import (
    Alert,
    CaseContact,
    CaseEvent,
    DeadLetter,
    EventValidationError,
    Notification,
    StaffContact,
    make_event,
    parse_event,
)
from services.common.kafka import EventPublisher, new_consumer, new_producer
from services.common.logging import get_logger
from services.common.metrics import METRICS_CONTENT_TYPE, render_metrics
from services.common.mongo import new_client, ping
from services.common.workdays import default_calendar
from services.notifier.channels import Dispatcher, channels_from_settings
from services.notifier.config import LadderSettings, NotifierSettings
from services.notifier.handlers import NotifierService
from services.notifier.metrics import DEAD_LETTERS, HEALTH, SCAN_SECONDS
from services.notifier.store import NotifierStore

log = get_logger(__name__)
SERVICE = "notifier"


class KafkaPublisher:
    """Alerts and notifications go to an explicit partition: the case's case-events partition."""

    def __init__(self, events: EventPublisher, names: TopicSettings, source: str) -> None:
        self.events, self.names, self.source = events, names, source

    async def alerts(self, items: list[tuple[Alert, int, str]]) -> list[bool]:
        producer = self.events.producer
        futures = []
        for alert, partition, key in items:
            event = make_event(alert, source=self.source, time=alert.raised_at)
            futures.append(await producer.send(self.names.alerts, event.to_json(), key=key.encode(),
                                               partition=partition))
        results = await asyncio.gather(*futures, return_exceptions=True)
        return [not isinstance(r, BaseException) for r in results]

    async def notification(self, notification: Notification, partition: int) -> None:
        event = make_event(notification, source=self.source, time=notification.created_at)
        await self.events.producer.send_and_wait(self.names.notifications, event.to_json(),
                                                 key=notification.case_id.encode(), partition=partition)

    async def dead_letter(self, letter: DeadLetter) -> None:
        await self.events.publish(letter)


async def read_partition_values(bootstrap: str, tps: list[TopicPartition]) -> dict[TopicPartition, list[bytes]]:
    """Every value in these partitions, from the beginning to the end as of now."""
    found: dict[TopicPartition, list[bytes]] = {tp: [] for tp in tps}
    await read_to_end(bootstrap, tps, lambda tp, records: found[tp].extend(r.value for r in records if r.value))
    return found


def _payloads(values: Iterable[bytes]) -> list[dict[str, Any]]:
    out = []
    for value in values:
        try:
            out.append(json.loads(value)["data"])
        except (ValueError, KeyError, TypeError):
            continue  # not ours to judge here; the alert id set only needs the readable ones
    return out


class NotifierWorker:
    def __init__(self, settings: NotifierSettings | None = None, names: TopicSettings | None = None,
                 common: CommonSettings | None = None, clock: Clock | None = None) -> None:
        self.settings = settings or NotifierSettings()
        self.names = names or topics()
        self.common = common or common_settings()
        self.clock = clock or clock_from_environment()
        self.owner = f"{socket.gethostname()}:{os.getpid()}"
        self.mongo = new_client(self.common.mongo_url, service="notifier")
        self.store = NotifierStore(self.mongo[self.settings.database])
        self.producer = new_producer(self.common.kafka_bootstrap)
        self.events = EventPublisher(self.producer, source=self.settings.source, names=self.names)
        self.service = NotifierService(self.store, KafkaPublisher(self.events, self.names, self.settings.source),
                                       default_calendar(), self.clock, LadderSettings(), self.settings, self.owner)
        self.dispatcher = Dispatcher(channels_from_settings(self.settings), self.settings,
                                     claim=self.service.claim, delivered=self.service.delivered,
                                     failed=self.service.failed)
        self.dispatcher.owned = lambda p: p in self.service.owned
        self.service.dispatcher = self.dispatcher
        self.consumer: AIOKafkaConsumer | None = None
        self.catch_up_targets: dict[int, int] = {}
        self.stopping = asyncio.Event()
        self.started = False
        self.rebalancing = False
        self.staff_loaded = asyncio.Event()

    # ------------------------------------------------------------------ rebalancing

    def listener(self) -> ConsumerRebalanceListener:
        worker = self

        class Listener(ConsumerRebalanceListener):
            async def on_partitions_revoked(self, revoked: list[TopicPartition]) -> None:
                worker.rebalancing = True
                async with worker.service.lock:  # no batch and no scan in flight past this point
                    await worker.producer.flush()
                    worker.service.drop(tp.partition for tp in revoked if tp.topic == worker.names.case_events)

            async def on_partitions_assigned(self, assigned: list[TopicPartition]) -> None:
                try:
                    await worker.adopt([tp.partition for tp in assigned if tp.topic == worker.names.case_events])
                finally:
                    worker.rebalancing = False

        return Listener()

    async def adopt(self, partitions: list[int]) -> None:
        partitions = [p for p in partitions if p not in self.service.owned]
        if not partitions:
            return
        alert_tps = [TopicPartition(self.names.alerts, p) for p in partitions]
        note_tps = [TopicPartition(self.names.notifications, p) for p in partitions]
        values = await read_partition_values(self.common.kafka_bootstrap, alert_tps + note_tps)
        states = await self.store.load_open_cases(partitions)
        assert self.consumer is not None
        case_tps = [TopicPartition(self.names.case_events, p) for p in partitions]
        ends = await self.consumer.end_offsets(case_tps)
        async with self.service.lock:
            for p in partitions:
                self.service.adopt(
                    p, [s for s in states if s.partition == p],
                    _payloads(values[TopicPartition(self.names.alerts, p)]),
                    [d.get("notification_id", "") for d in _payloads(values[TopicPartition(self.names.notifications,
                                                                                             p)])])
                self.catch_up_targets[p] = ends[TopicPartition(self.names.case_events, p)]
        log.info("partitions_adopted", partitions=partitions, open_cases=len(states))

    async def caught_up_partitions(self) -> dict[int, int]:
        """Adopted partitions whose consumer position has reached the end offset noted at adoption.

        Called without the service lock: ``consumer.position`` waits until the position is known, and right
        after an assignment that needs the group coordinator, which in a rebalance first calls
        ``on_partitions_revoked``, which takes the lock: waiting under the lock stalled the worker for good."""
        assert self.consumer is not None
        reached: dict[int, int] = {}
        for p, target in list(self.catch_up_targets.items()):
            if p not in self.service.owned:
                continue
            try:
                position = await asyncio.wait_for(
                    self.consumer.position(TopicPartition(self.names.case_events, p)), timeout=1.0)
            except Exception:  # not assigned any more, or not known yet: the next round asks again
                continue
            if position >= target:
                reached[p] = target
        return reached

    async def mark_caught_up(self, reached: dict[int, int]) -> None:
        """Under the service lock: release what waited for these partitions' catch-up (if still ours)."""
        for p, target in reached.items():
            if p not in self.service.owned or self.catch_up_targets.get(p) != target:
                continue  # revoked, or adopted again with a new target, meanwhile
            self.service.caught_up.add(p)
            self.catch_up_targets.pop(p, None)
            for doc in await self.store.ready([p]):
                await self.service.release(doc)
        for p in [p for p in self.catch_up_targets if p not in self.service.owned]:
            self.catch_up_targets.pop(p, None)

    # ------------------------------------------------------------------ consuming

    async def handle_batch(self, records: list[ConsumerRecord]) -> None:
        events: list[tuple[CaseEvent, int]] = []
        erased: list[str] = []  # tombstones, erased together but never after a later contact of the batch
        for record in records:
            if record.topic == self.names.case_contacts and record.value is None:
                if record.key:
                    erased.append(record.key.decode())
                continue
            if record.topic == self.names.case_contacts and erased:
                await self.service.erase_contacts(erased)
                erased = []
            try:
                event = parse_event(record.value or b"")
            except EventValidationError as exc:
                await self.events.dead_letter(record, exc, service=SERVICE)
                DEAD_LETTERS.labels("invalid_event").inc()
                continue
            if record.topic == self.names.case_contacts and isinstance(event.data, CaseContact):
                await self.service.apply_contact(event.data)
            elif record.topic == self.names.case_events and isinstance(event.data, CaseEvent):
                events.append((event.data, record.partition))
            else:
                await self.events.dead_letter(record, EventValidationError(
                    f"event type {event.type!r} does not belong on topic {record.topic!r}", "type"), service=SERVICE)
                DEAD_LETTERS.labels("invalid_event").inc()
        await self.service.erase_contacts(erased)
        if events:
            await self.service.apply_batch(events)

    async def consume(self) -> None:
        assert self.consumer is not None
        # a 督办 notice applied before we know the unit's people would reach nobody: wait until we know them
        waits = [asyncio.create_task(self.staff_loaded.wait()), asyncio.create_task(self.stopping.wait())]
        await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
        for task in waits:
            task.cancel()
        while not self.stopping.is_set():
            batches = await self.consumer.getmany(timeout_ms=500, max_records=500)
            async with self.service.lock:
                for tp, records in batches.items():
                    if tp not in self.consumer.assignment():
                        continue  # revoked while we waited for the lock: the new owner replays it
                    await self.handle_batch(records)
                    try:
                        await self.consumer.commit({tp: records[-1].offset + 1})
                    except (CommitFailedError, IllegalStateError) as exc:
                        # the partition moved: its new owner replays from the last commit, harmlessly
                        log.info("commit_skipped", partition=tp.partition, reason=type(exc).__name__)
                    HEALTH.applied()
            if self.catch_up_targets:
                reached = await self.caught_up_partitions()
                async with self.service.lock:
                    await self.mark_caught_up(reached)

    # ------------------------------------------------------------------ periodic work

    async def every(self, seconds: float, job: Callable[[], Awaitable[Any]], name: str) -> None:
        while not self.stopping.is_set():
            try:
                await job()
            except Exception:
                log.exception("periodic_job_failed", job=name)
            try:
                await asyncio.wait_for(self.stopping.wait(), timeout=seconds)
            except TimeoutError:
                pass

    async def scan_once(self) -> None:
        if not self.staff_loaded.is_set():
            return  # an alert raised now would miss the people it is for: wait until we know them
        loop = asyncio.get_running_loop()
        while not self.stopping.is_set():
            async with self.service.lock:
                started = loop.time()
                await self.service.scan()
                SCAN_SECONDS.observe(loop.time() - started)
            if not self.service.backlog:
                return
            await asyncio.sleep(0)  # a backlog (after downtime): let the consumer in between steps

    async def follow_staff(self) -> None:
        """Every replica reads the whole compacted staff-contacts topic (a global table: any unit's alert may
        come up on any partition) and keeps following it; ``staff_loaded`` once it has read to the end."""
        consumer = AIOKafkaConsumer(bootstrap_servers=self.common.kafka_bootstrap, group_id=None,
                                    enable_auto_commit=False, auto_offset_reset="earliest")
        await consumer.start()
        try:
            partitions = consumer.partitions_for_topic(self.names.staff_contacts) or set()
            if not partitions:
                await consumer._client.force_metadata_update()
                partitions = consumer.partitions_for_topic(self.names.staff_contacts) or set()
            tps = [TopicPartition(self.names.staff_contacts, p) for p in sorted(partitions)]
            consumer.assign(tps)
            await consumer.seek_to_beginning(*tps)
            ends = await consumer.end_offsets(tps) if tps else {}
            while not self.stopping.is_set():
                for records in (await consumer.getmany(timeout_ms=500, max_records=1000)).values():
                    for record in records:
                        self._apply_staff(record)
                if not self.staff_loaded.is_set() and all(
                        [await consumer.position(tp) >= ends[tp] for tp in tps]):
                    self.staff_loaded.set()
                    log.info("staff_contacts_loaded", people=len(self.service.staff.people))
        finally:
            await consumer.stop()

    def _apply_staff(self, record: ConsumerRecord) -> None:
        try:
            event = parse_event(record.value or b"", expected_topic="staff_contacts")
        except EventValidationError:
            DEAD_LETTERS.labels("invalid_event").inc()  # a private topic: the bad record is not copied anywhere
            return
        if isinstance(event.data, StaffContact):
            self.service.staff.apply(event.data)

    async def sweep_once(self) -> None:
        async with self.service.lock:  # a release racing the consumer's would publish a notification twice
            await self.service.sweep()

    async def hotspots_once(self) -> None:
        async with self.service.lock:
            await self.service.scan_hotspots()

    async def gauges_once(self) -> None:
        self.service.refresh_gauges()
        if self.consumer is not None:
            assigned = list(self.consumer.assignment())
            if assigned:
                ends = await self.consumer.end_offsets(assigned)
                lag: dict[str, int] = {}
                for tp in assigned:
                    try:
                        position = await self.consumer.position(tp)
                    except Exception:
                        continue
                    lag[tp.topic] = lag.get(tp.topic, 0) + max(0, ends[tp] - position)
                for topic, value in lag.items():
                    HEALTH.lag.labels(topic).set(value)

    # ------------------------------------------------------------------ HTTP

    def web_app(self) -> FastAPI:
        app = FastAPI(title="wenzheng notifier", docs_url=None, redoc_url=None, openapi_url=None)

        @app.get("/healthz")
        async def healthz() -> dict[str, str]:
            return {"status": "ok"}

        @app.get("/readyz")
        async def readyz(response: Response) -> dict[str, Any]:
            mongo_ok = await ping(self.mongo)
            consuming = self.started and self.consumer is not None and not self.rebalancing
            ready = mongo_ok and consuming
            response.status_code = 200 if ready else 503
            return {"status": "ready" if ready else "starting", "mongodb": mongo_ok, "kafka": self.started,
                    "consuming": consuming, "partitions": sorted(self.service.owned),
                    "caught_up": sorted(self.service.caught_up)}

        @app.get("/metrics")
        async def metrics() -> Response:
            return Response(render_metrics(), media_type=METRICS_CONTENT_TYPE)

        return app

    # ------------------------------------------------------------------ lifecycle

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.stopping.set)
        server = uvicorn.Server(uvicorn.Config(self.web_app(), host="0.0.0.0", port=self.settings.port,
                                               log_level="warning", access_log=False, lifespan="off"))
        server.install_signal_handlers = lambda: None  # ours stop the worker, which stops the server
        web = asyncio.create_task(server.serve(), name="web")
        await self.store.ensure_indexes()
        await self.producer.start()
        self.consumer = new_consumer(
            group_id=self.settings.group_id, bootstrap=self.common.kafka_bootstrap,
            partition_assignment_strategy=(RangePartitionAssignor,),  # contacts p go with case events p
            session_timeout_ms=self.settings.session_timeout_ms,
            heartbeat_interval_ms=max(1000, self.settings.session_timeout_ms // 5))
        self.consumer.subscribe([self.names.case_events, self.names.case_contacts], listener=self.listener())
        await self.consumer.start()
        self.dispatcher.start()
        self.started = True
        log.info("notifier_started", group=self.settings.group_id, owner=self.owner)
        tasks = [
            asyncio.create_task(self.consume(), name="consume"),
            asyncio.create_task(self.follow_staff(), name="staff-contacts"),
            asyncio.create_task(self.every(self.settings.scan_interval_seconds, self.scan_once, "scan")),
            asyncio.create_task(self.every(self.settings.hotspot_scan_seconds, self.hotspots_once, "hotspots")),
            asyncio.create_task(self.every(self.settings.sweep_interval_seconds, self.sweep_once, "sweep")),
            asyncio.create_task(self.every(self.settings.metrics_refresh_seconds, self.gauges_once, "gauges")),
        ]
        stopper = asyncio.create_task(self.stopping.wait())
        done, _ = await asyncio.wait([*tasks, stopper], return_when=asyncio.FIRST_COMPLETED)
        for task in done:
            if task is not stopper and task.exception() is not None:
                log.error("worker_task_failed", task=task.get_name(), error=repr(task.exception()))
        self.stopping.set()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await self.dispatcher.stop()
        await self.consumer.stop()  # leaves the group: the others take over at once
        await self.producer.stop()
        server.should_exit = True
        await web
        await self.mongo.close()
