"""Load shedding: which bound a reading passes, and a post refused before it touches the store."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from services.common.clock import FixedClock
from services.common.events import Channel
from services.common.reference import reference
from services.intake import metrics
from services.intake.config import IntakeSettings
from services.intake.handlers import IntakeService, NewPost, Overloaded
from services.intake.shedding import Load, LoopLag, ShedBounds, shed_reason
from tests.intake.unit.fakes import FakeCaseStore

BOUNDS = ShedBounds(max_in_flight_posts=10, max_queued_writes=100, max_write_seconds=1.0,
                    max_outbox_age_seconds=5.0, max_loop_lag_seconds=0.2)


@pytest.mark.parametrize(("load", "reason"), [
    (Load(), None),
    (Load(in_flight_posts=10, queued_writes=100, write_seconds=1.0, outbox_age_seconds=5.0), None),
    (Load(in_flight_posts=11), "in_flight"),
    (Load(queued_writes=101), "queued_writes"),
    (Load(write_seconds=1.5), "write_latency"),
    (Load(outbox_age_seconds=6), "outbox_age"),
    (Load(loop_lag_seconds=0.2), None),
    (Load(loop_lag_seconds=0.25), "loop_lag"),
])
def test_each_bound_names_itself(load: Load, reason: str | None) -> None:
    assert shed_reason(load, BOUNDS) == reason


def test_loop_lag_is_the_worst_lateness_of_the_last_window() -> None:
    lag = LoopLag(interval=0.05, window=1.0)
    assert lag.seconds(now=0.0) == 0.0
    lag.tick(asked_at=10.0, woke_at=10.05)  # on time
    lag.tick(asked_at=10.05, woke_at=10.45)  # a handler held the loop: 0.35 s late
    lag.tick(asked_at=10.45, woke_at=10.51)
    assert lag.seconds(now=10.51) == pytest.approx(0.35)
    assert lag.seconds(now=11.44) == pytest.approx(0.35)  # remembered for a window
    assert lag.seconds(now=11.5) == pytest.approx(0.01)  # then forgotten: only the later tick is left
    assert lag.seconds(now=11.6) == 0.0
    lag.tick(asked_at=12.0, woke_at=12.04)  # early wake-ups count as no lateness
    assert lag.seconds(now=12.04) == 0.0


async def test_a_post_behind_a_late_event_loop_is_shed() -> None:
    intake, store = service(shed_max_loop_lag_seconds=0.2)
    intake.loop_lag = lambda: 0.5
    with pytest.raises(Overloaded):
        await intake.submit(POST, client_ip="10.0.0.1", idempotency_key=None)
    intake.loop_lag = lambda: 0.1
    assert (await intake.submit(POST, client_ip="10.0.0.1", idempotency_key=None)).status_code == 201
    assert len(store.cases) == 1


def service(**settings: object) -> tuple[IntakeService, FakeCaseStore]:
    store = FakeCaseStore()
    options = {"secret": "test-secret", "attachments_dir": "/nonexistent", **settings}
    return IntakeService(store, IntakeSettings(**options), FixedClock(datetime(2026, 11, 2, 3, tzinfo=UTC)),
                         reference()), store  # type: ignore[arg-type]


POST = NewPost(channel=Channel.WEB, title="路灯坏了", body="小区门口的路灯坏了三天", contact_phone="13800138000")


async def test_a_post_past_a_bound_is_refused_at_once_and_counted() -> None:
    intake, store = service(shed_max_queued_writes=5, shed_retry_after_seconds=2)
    accepted = await intake.submit(POST, client_ip="10.0.0.1", idempotency_key=None)
    assert accepted.status_code == 201 and len(store.cases) == 1 and len(store.events) == 2

    store.outbox.queued = 6
    before = metrics.SHED.labels("queued_writes")._value.get()
    with pytest.raises(Overloaded) as refused:
        await intake.submit(POST, client_ip="10.0.0.1", idempotency_key=None)
    assert refused.value.status == 503 and refused.value.retry_after == 2
    assert "稍后重试" in refused.value.message
    assert metrics.SHED.labels("queued_writes")._value.get() == before + 1
    assert len(store.cases) == 1 and intake.in_flight_posts == 0  # nothing stored, nothing left counted


async def test_the_relays_backlog_counts_and_shedding_can_be_switched_off() -> None:
    intake, _ = service(shed_max_outbox_age_seconds=3)
    intake.outbox_age = lambda: 4.0
    with pytest.raises(Overloaded):
        await intake.submit(POST, client_ip=None, idempotency_key=None)
    intake, _ = service(shed_max_outbox_age_seconds=3, shed_enabled=False)
    intake.outbox_age = lambda: 4.0
    assert (await intake.submit(POST, client_ip=None, idempotency_key=None)).status_code == 201


async def test_in_flight_posts_include_the_one_asking() -> None:
    intake, _ = service(shed_max_in_flight_posts=0)
    with pytest.raises(Overloaded):
        await intake.submit(POST, client_ip=None, idempotency_key=None)
