"""Intake's runtime: the database client, the stores, the use cases, the outbox relay, the consumers and the
background jobs, started and stopped with the app (``api.create_app`` wires the lifespan to them)."""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from pymongo import AsyncMongoClient

from services.common.clock import Clock
from services.common.config import CommonSettings, TopicSettings
from services.common.logging import get_logger
from services.common.mongo import new_client
from services.common.reference import ReferenceData
from services.intake import metrics
from services.intake.accounts_store import AccountsStore
from services.intake.auth import Credentials
from services.intake.case_follower import CaseFollower
from services.intake.config import IntakeSettings
from services.intake.consumer import DecisionConsumer
from services.intake.handlers import IntakeService
from services.intake.outbox import OutboxWriter, new_writer_id
from services.intake.people import AccountsService
from services.intake.relay import OutboxRelay
from services.intake.retention import ContactEraser
from services.intake.shedding import LoopLag
from services.intake.store import CaseStore

log = get_logger(__name__)


@dataclass
class Runtime:
    settings: IntakeSettings
    common: CommonSettings
    names: TopicSettings
    clock: Clock
    reference: ReferenceData
    credentials: Credentials
    client: AsyncMongoClient | None = None
    store: CaseStore | None = None
    service: IntakeService | None = None
    relay: OutboxRelay | None = None
    consumer: DecisionConsumer | None = None
    follower: CaseFollower | None = None
    index_load_seconds: float | None = None  # how long the lists' index took to load at start
    accounts: AccountsService | None = None
    oidc_metadata: dict[str, Any] | None = None
    oidc_jwks: dict[str, Any] | None = None
    eraser: ContactEraser | None = None
    tasks: list[asyncio.Task] = field(default_factory=list)




def load_credentials(settings: IntakeSettings, common: CommonSettings) -> Credentials:
    try:
        credentials = Credentials.from_file(settings.credentials_file)
    except FileNotFoundError:
        credentials = Credentials.empty()
    except (OSError, ValueError, AttributeError) as exc:
        raise SystemExit(f"intake: cannot read credentials {settings.credentials_file}: {exc}") from exc
    settings.check_production(common.environment)
    return credentials


async def start_runtime(runtime: Runtime) -> None:
    settings, common = runtime.settings, runtime.common
    runtime.client = new_client(common.mongo_url, service="intake")
    runtime.store = CaseStore(runtime.client[settings.database], OutboxWriter(runtime.client[settings.database],
                                                                              new_writer_id()))
    await runtime.store.ensure_indexes()
    await load_list_index(runtime)
    runtime.relay = OutboxRelay(runtime.store, runtime.names, settings.relay_bootstrap or common.kafka_bootstrap,
                                window=settings.relay_window, idle_seconds=settings.relay_idle_seconds,
                                lease_seconds=settings.relay_lease_seconds,
                                abandon_seconds=settings.relay_abandon_seconds,
                                min_interval_seconds=settings.relay_min_interval_seconds)
    runtime.service = IntakeService(runtime.store, settings, runtime.clock, runtime.reference,
                                    topic_names=runtime.names, on_commit=runtime.relay.notify)
    runtime.service.outbox_age = runtime.relay.falling_behind_seconds
    lag = LoopLag()
    runtime.service.loop_lag = lambda: lag.seconds(time.monotonic())
    runtime.tasks.append(asyncio.create_task(watch_loop_lag(lag), name="loop-lag"))
    accounts_store = AccountsStore(runtime.client[settings.database], runtime.store.outbox)
    await accounts_store.ensure_indexes()
    runtime.accounts = AccountsService(accounts_store, settings, runtime.clock, runtime.reference,
                                       production=common.environment == "production", on_commit=runtime.relay.notify)
    runtime.service.accounts = runtime.accounts
    if settings.relay_enabled:
        runtime.tasks.append(asyncio.create_task(runtime.relay.run(), name="outbox-relay"))
    runtime.eraser = ContactEraser(runtime.store, runtime.clock, settings.contact_retention_days,
                                   on_commit=runtime.relay.notify)
    if settings.retention_enabled:
        runtime.tasks.append(asyncio.create_task(runtime.eraser.run(settings.retention_interval_seconds),
                                                 name="contact-retention"))
    if settings.consumer_enabled:
        runtime.consumer = DecisionConsumer(runtime.service, runtime.names, common.kafka_bootstrap,
                                            settings.consumer_group, settings.source)
        runtime.tasks.append(asyncio.create_task(runtime.consumer.run(), name="decision-consumer"))
    log.info("intake_started", database=settings.database, reference=runtime.reference.version,
             started_at=datetime.now(UTC).isoformat())


async def watch_loop_lag(lag: LoopLag) -> None:
    while True:
        asked = time.monotonic()
        await asyncio.sleep(lag.interval)
        lag.tick(asked, time.monotonic())
        metrics.LOOP_LAG.set(lag.seconds(time.monotonic()))


async def load_list_index(runtime: Runtime) -> None:
    """The lists' read model: where the case events end now, then every case's summary, then follow them."""
    assert runtime.store is not None
    if runtime.settings.follow_case_events:
        runtime.follower = CaseFollower(runtime.store, runtime.names.case_events, runtime.common.kafka_bootstrap,
                                        runtime.names)
        await runtime.follower.start()
    started = time.monotonic()
    loaded = await runtime.store.load_index()
    runtime.index_load_seconds = time.monotonic() - started
    log.info("list_index_loaded", cases=loaded, seconds=round(runtime.index_load_seconds, 2))
    if runtime.follower is not None:
        runtime.tasks.append(asyncio.create_task(runtime.follower.run(), name="case-follower"))


async def stop_runtime(runtime: Runtime) -> None:
    if runtime.consumer:
        await runtime.consumer.stop()
    for task in runtime.tasks:
        task.cancel()
    for task in runtime.tasks:
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await asyncio.wait_for(task, 10)
    runtime.tasks.clear()
    if runtime.store is not None:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(runtime.store.outbox.close(), 10)
    if runtime.relay:
        await runtime.relay.stop()
    if runtime.follower:
        await runtime.follower.stop()
    if runtime.client is not None:
        await runtime.client.close()
