"""The notifier worker's wiring: two consumer loops (services/common/consumer.py), timers, the staff
directory follower and the HTTP pages (/healthz, /readyz, /metrics). The use cases are in handlers.py.

- The **deadline loop**, group ``group_id``, transactional: case events, contacts (the compacted private
  topic, co-partitioned by case id) and the hotspot-posts topic in; alerts, citizen and staff notifications,
  hotspot posts and the state's changelogs out, committed with the consumed offsets in one transaction.
  The ladder scan, the sweep and the hotspot scan run as ``loop.exclusive()`` blocks: their own transactions,
  never beside a batch or a rebalance. Its state (store.py) is restored from the changelogs on assignment.
- The **delivery loop**, group ``<group_id>-delivery``: the notifications topic (read committed) to the
  SMS/WeChat/e-mail channels; its offsets are committed once a poll's deliveries are delivered or
  dead-lettered, so a slow gateway holds up nothing but itself (gateways dedupe by the notification id).
- No database: nothing the notifier does per event touches MongoDB.
"""

from __future__ import annotations

import asyncio
import signal
import socket
from collections.abc import Awaitable, Callable
from typing import Any

import uvicorn
from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition
from fastapi import FastAPI, Response

from services.common.clock import Clock, clock_from_environment
from services.common.config import CommonSettings, TopicSettings, common_settings, topics
from services.common.consumer import Batch, ConsumerLoop, Source
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
from services.common.logging import get_logger
from services.common.metrics import METRICS_CONTENT_TYPE, render_metrics
from services.common.workdays import default_calendar
from services.notifier.channels import Delivery, Dispatcher, channels_from_settings
from services.notifier.config import LadderSettings, NotifierSettings
from services.notifier.handlers import DeliveryOutcomes, NotifierService
from services.notifier.metrics import (
    CONTACTS_HELD,
    DEAD_LETTERS,
    HEALTH,
    SCAN_SECONDS,
    SERVICE,
    STATE_RESTORE_SECONDS,
    STATE_RESTORED_RECORDS,
)
from services.notifier.store import NotifierState

log = get_logger(__name__)


class LoopPublisher:
    """Alerts and notifications go to an explicit partition, the case's case-events partition, through the
    loop (inside its transaction)."""

    def __init__(self, loop: ConsumerLoop, names: TopicSettings, source: str) -> None:
        self.loop, self.names, self.source = loop, names, source

    async def alerts(self, items: list[tuple[Alert, int, str]]) -> list[bool]:
        futures = []
        for alert, partition, key in items:
            event = make_event(alert, source=self.source, time=alert.raised_at)
            futures.append(await self.loop.send(self.names.alerts, event.to_json(), key=key.encode(),
                                                partition=partition))
        results = await asyncio.gather(*futures, return_exceptions=True)
        return [not isinstance(r, BaseException) for r in results]

    async def notification(self, notification: Notification, partition: int) -> None:
        event = make_event(notification, source=self.source, time=notification.created_at)
        await self.loop.send(self.names.notifications, event.to_json(), key=notification.case_id.encode(),
                             partition=partition)

    async def dead_letter(self, letter: DeadLetter) -> None:
        assert self.loop.publisher is not None
        await self.loop.publisher.publish(letter)


def _count_dead_letter(_record: ConsumerRecord, _error: Exception) -> None:
    DEAD_LETTERS.labels("invalid_event").inc()


class NotifierWorker:
    def __init__(self, settings: NotifierSettings | None = None, names: TopicSettings | None = None,
                 common: CommonSettings | None = None, clock: Clock | None = None) -> None:
        self.settings = settings or NotifierSettings()
        self.names = names or topics()
        self.common = common or common_settings()
        self.clock = clock or clock_from_environment()
        group = self.settings.group_id
        self.state = NotifierState(self.settings.state_prefix or group, self.names.case_contacts)
        session = {"session_timeout_ms": self.settings.session_timeout_ms,
                   "heartbeat_interval_ms": max(1000, self.settings.session_timeout_ms // 5)}
        self.loop = ConsumerLoop(
            [Source(self.names.case_events, "case_events"),
             Source(self.names.case_contacts, "case_contacts", tombstones=True),
             Source(self.state.posts.changelog, raw=True)],
            self.handle_batch, service=SERVICE, group_id=group, bootstrap=self.common.kafka_bootstrap,
            names=self.names, states=self.state.all, health=HEALTH, on_dead_letter=_count_dead_letter,
            transactional_id=self.settings.transactional_id or f"{group}-{socket.gethostname()}-{self.settings.port}",
            on_assigned=self.adopt, on_revoked=self.revoke, source_name=self.settings.source, **session)
        self.state.send = self.loop.send
        self.service = NotifierService(self.state, LoopPublisher(self.loop, self.names, self.settings.source),
                                       default_calendar(), self.clock, LadderSettings(), self.settings)
        self.delivery = ConsumerLoop(
            [Source(self.names.notifications, "notifications")], self.deliver, service=SERVICE,
            group_id=f"{group}-delivery", bootstrap=self.common.kafka_bootstrap, names=self.names,
            health=HEALTH, on_dead_letter=_count_dead_letter, max_records=self.settings.delivery_batch,
            source_name=self.settings.source, **session)
        outcomes = DeliveryOutcomes(LoopPublisher(self.delivery, self.names, self.settings.source))
        self.dispatcher = Dispatcher(channels_from_settings(self.settings), self.settings,
                                     delivered=outcomes.delivered, failed=outcomes.failed)
        self.catch_up_targets: dict[int, int] = {}
        self.stopping = asyncio.Event()
        self.rebalancing = False
        self.staff_loaded = asyncio.Event()

    # ------------------------------------------------------------------ rebalancing (under the loop's lock)

    async def revoke(self, revoked: list[TopicPartition]) -> None:
        self.rebalancing = True  # nothing is scanned for these partitions until they are adopted again
        self.service.drop(tp.partition for tp in revoked if tp.topic == self.names.case_events)

    async def adopt(self, assigned: list[TopicPartition]) -> None:
        """The loop restored the partitions' state: rebuild the ladder's index from it, and note where the case
        events end now (no alert is raised for a partition before its events are read that far)."""
        try:
            partitions = sorted(tp.partition for tp in assigned if tp.topic == self.names.case_events)
            self.service.drop([p for p in self.service.owned if p not in partitions])
            new = [p for p in partitions if p not in self.service.owned]
            STATE_RESTORE_SECONDS.set(self.loop.last_restore_seconds)
            STATE_RESTORED_RECORDS.set(self.loop.restored_records)
            if not new:
                return
            assert self.loop.consumer is not None
            ends = await self.loop.consumer.end_offsets([TopicPartition(self.names.case_events, p) for p in new])
            for p in new:
                self.service.adopt(p, await self.state.load_open_cases([p]), self.state.published_for(p), [])
                self.catch_up_targets[p] = ends[TopicPartition(self.names.case_events, p)]
            log.info("partitions_adopted", partitions=new, open_cases=len(self.service.states),
                     restore_seconds=round(self.loop.last_restore_seconds, 3))
        finally:
            self.rebalancing = False

    async def caught_up_partitions(self) -> dict[int, int]:
        """Adopted partitions whose consumer position has reached the end offset noted at adoption (asked
        outside the loop's lock: ``position`` may wait for a rebalance, which needs that lock)."""
        consumer = self.loop.consumer
        reached: dict[int, int] = {}
        if consumer is None:
            return reached
        for p, target in list(self.catch_up_targets.items()):
            if p not in self.service.owned:
                continue
            try:
                position = await asyncio.wait_for(consumer.position(TopicPartition(self.names.case_events, p)),
                                                  timeout=1.0)
            except Exception:  # not assigned any more, or not known yet: the next round asks again
                continue
            if position >= target:
                reached[p] = target
        return reached

    async def mark_caught_up(self, reached: dict[int, int]) -> None:
        """Inside ``loop.exclusive()``: release what waited for these partitions' catch-up (if still ours)."""
        for p, target in reached.items():
            if p not in self.service.owned or self.catch_up_targets.get(p) != target:
                continue  # revoked, or adopted again with a new target, meanwhile
            self.service.caught_up.add(p)
            self.catch_up_targets.pop(p, None)
            for doc in await self.state.ready([p]):
                await self.service.release(doc)
        for p in [p for p in self.catch_up_targets if p not in self.service.owned]:
            self.catch_up_targets.pop(p, None)

    # ------------------------------------------------------------------ consuming

    async def handle_batch(self, batch: Batch) -> None:
        events: list[tuple[CaseEvent, int]] = []
        erased: list[str] = []  # tombstones, erased together but never after a later contact of the batch
        for event, record in batch.items:
            if record.topic == self.state.posts.changelog:
                self.state.apply_post(record)
            elif record.topic == self.names.case_contacts:
                if event is None:
                    if record.key:
                        erased.append(record.key.decode())
                    continue
                if erased:
                    await self.service.erase_contacts(erased)
                    erased = []
                if isinstance(event.data, CaseContact):
                    await self.service.apply_contact(event.data, batch.partition)
            elif event is not None and isinstance(event.data, CaseEvent):
                events.append((event.data, batch.partition))
        await self.service.erase_contacts(erased)
        if events:
            await self.service.apply_batch(events)

    async def deliver(self, batch: Batch) -> None:
        await self.dispatcher.deliver([Delivery(event.data, batch.partition) for event, _ in batch.items
                                       if event is not None and isinstance(event.data, Notification)])

    async def run_loop(self, loop: ConsumerLoop, wait_for_staff: bool) -> None:
        """Run a consumer loop until the worker stops; after a failure its state is restored by running it again."""
        if wait_for_staff:
            # a 督办 notice applied before we know the unit's people would reach nobody: wait until we know them
            waits = [asyncio.create_task(self.staff_loaded.wait()), asyncio.create_task(self.stopping.wait())]
            await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
            for task in waits:
                task.cancel()
        while not self.stopping.is_set():
            try:
                await loop.run(self.stopping)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.error("consumer_loop_failed", group=loop.group_id, error=f"{type(exc).__name__}: {exc}"[:300])
                if loop is self.loop:
                    self.service.drop(list(self.service.owned))
                    self.catch_up_targets.clear()
                await asyncio.sleep(1)

    # ------------------------------------------------------------------ periodic work

    async def every(self, seconds: float, job: Callable[[], Awaitable[Any]], name: str) -> None:
        while not self.stopping.is_set():
            try:
                if self.loop.running:
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
        clock = asyncio.get_running_loop()
        while not self.stopping.is_set():
            async with self.loop.exclusive():
                started = clock.time()
                await self.service.scan()
                SCAN_SECONDS.observe(clock.time() - started)
            if not self.service.backlog:
                return
            await asyncio.sleep(0)  # a backlog (after downtime): let the consumer in between steps

    async def catch_up_once(self) -> None:
        if self.catch_up_targets:
            reached = await self.caught_up_partitions()
            if reached:
                async with self.loop.exclusive():
                    await self.mark_caught_up(reached)

    async def sweep_once(self) -> None:
        async with self.loop.exclusive():
            await self.service.sweep()

    async def hotspots_once(self) -> None:
        async with self.loop.exclusive():
            await self.service.scan_hotspots()

    async def gauges_once(self) -> None:
        self.service.refresh_gauges()
        CONTACTS_HELD.set(len(self.state.contacts))

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

    # ------------------------------------------------------------------ HTTP

    def web_app(self) -> FastAPI:
        app = FastAPI(title="wenzheng notifier", docs_url=None, redoc_url=None, openapi_url=None)

        @app.get("/healthz")
        async def healthz() -> dict[str, str]:
            return {"status": "ok"}

        @app.get("/readyz")
        async def readyz(response: Response) -> dict[str, Any]:
            consuming = self.loop.running and not self.rebalancing
            ready = consuming and self.delivery.running
            response.status_code = 200 if ready else 503
            return {"status": "ready" if ready else "starting", "kafka": self.loop.running,
                    "consuming": consuming, "delivering": self.delivery.running,
                    "partitions": sorted(self.service.owned), "caught_up": sorted(self.service.caught_up),
                    "restore_seconds": round(self.loop.last_restore_seconds, 3)}

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
        self.dispatcher.start()
        log.info("notifier_started", group=self.settings.group_id)
        tasks = [
            asyncio.create_task(self.run_loop(self.loop, wait_for_staff=True), name="deadlines"),
            asyncio.create_task(self.run_loop(self.delivery, wait_for_staff=False), name="delivery"),
            asyncio.create_task(self.follow_staff(), name="staff-contacts"),
            asyncio.create_task(self.every(self.settings.scan_interval_seconds, self.scan_once, "scan")),
            asyncio.create_task(self.every(min(0.2, self.settings.scan_interval_seconds), self.catch_up_once,
                                           "catch-up")),
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
        # the loops finish their batch in flight, commit, and leave their groups: the others take over at once
        await asyncio.gather(*tasks[:2], return_exceptions=True)
        for task in tasks[2:]:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await self.dispatcher.stop()
        server.should_exit = True
        await web
