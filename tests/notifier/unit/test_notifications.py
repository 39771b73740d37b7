"""Citizen notifications: templates, stable ids, a contact that arrives late, bounded waiting, masking."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest

from services.common.events import CaseContact, Notification
from services.common.workdays import default_calendar
from services.notifier.channels import Delivery, Dispatcher, LogChannel, PermanentDeliveryError, channels_from_settings
from services.notifier.config import NotifierSettings
from services.notifier.domain import choose_channel, mask_address, render
from tests.notifier.fakes import CaseScript, make_service

T0 = datetime(2026, 9, 7, 2, tzinfo=UTC)


def test_templates_are_chinese_files_with_the_tracking_number_and_sms_query():
    text = render("received", {"tracking_number": "WZ2609-ABCD"})
    assert '发送短信"查询 WZ2609-ABCD"' in text
    assigned = render("assigned", {"tracking_number": "WZ1", "department_name": "章贡区人民政府",
                                   "deadline": "2026年09月10日23:59"})
    assert "章贡区人民政府" in assigned and "2026年09月10日23:59前" in assigned
    assert "评价 WZ1" in render("replied", {"tracking_number": "WZ1", "department_name": "x"})
    assert "第2次办理" in render("reopened", {"tracking_number": "WZ1", "department_name": "x", "deadline": "d",
                                           "handling_round": "2"})
    assert "已办结" in render("closed", {"tracking_number": "WZ1"})


def test_channel_choice_and_masking():
    contact = CaseContact(case_id="c", tracking_number="t", phone="13800138000", wechat_openid="o1",
                          preferred_channel="wechat", recorded_at=T0)
    assert choose_channel(contact) == ("wechat", "o1")
    no_wechat = contact.model_copy(update={"wechat_openid": None})
    assert choose_channel(no_wechat) == ("sms", "13800138000")
    assert choose_channel(no_wechat, force="log") == ("log", "13800138000")
    assert choose_channel(CaseContact(case_id="c", tracking_number="t", recorded_at=T0)) is None
    assert mask_address("13800138000") == "138****8000"
    assert mask_address("li@example.cn") == "l***@example.cn"
    channels = channels_from_settings(NotifierSettings(sms_url=None))
    assert all(isinstance(c, LogChannel) for c in channels.values())  # nothing configured: the log channel


async def test_contact_after_the_case_events_releases_the_waiting_notifications():
    service, _, store, publisher = make_service(T0)
    script = CaseScript("c-late")
    deadline = default_calendar().add_working_days(T0, 3)
    await service.apply_batch([(script.submitted(T0), 0), (script.assigned(T0, deadline), 0)])
    assert publisher.notifications_sent == []
    assert {d["status"] for d in store.notifications.values()} == {"waiting"}
    await service.apply_batch([(script.submitted(T0), 0)])  # a replay after a crash adds nothing
    assert len(store.notifications) == 2
    await service.apply_contact(script.contact(T0), 0)
    sent = {n.notification_id: n for n in publisher.notifications_sent}
    assert set(sent) == {"received:c-late", "assigned:c-late:1"}
    assert sent["received:c-late"].to == "13800138000" and sent["received:c-late"].channel == "sms"
    # later events find the contact at once; a reply and a second round get their own ids
    await service.apply_batch([(script.replied(T0, deadline), 0), (script.reopened(T0, deadline, 2), 0),
                               (script.replied(T0, deadline, 2), 0), (script.closed(T0), 0)])
    assert [n.notification_id for n in publisher.notifications_sent][2:] == [
        "replied:c-late:1", "reopened:c-late:2", "replied:c-late:2", "closed:c-late"]
    # the topic publish happens once per id even when a notification is released again (sweeper, restart)
    await service.sweep()
    assert len(publisher.notifications_sent) == 6


async def test_waiting_for_a_contact_is_bounded_per_case():
    service, _, store, _ = make_service(T0)
    service.settings = NotifierSettings(pending_per_case_max=2)
    script = CaseScript("c-many")
    deadline = default_calendar().add_working_days(T0, 3)
    await service.apply_batch([(script.submitted(T0), 0), (script.assigned(T0, deadline), 0),
                               (script.replied(T0, deadline), 0)])
    assert len(store.notifications) == 2


class FlakyChannel:
    name = "sms"

    def __init__(self, failures: int, permanent: bool = False) -> None:
        self.failures, self.permanent, self.calls = failures, permanent, 0

    async def send(self, notification: Notification) -> None:
        self.calls += 1
        if self.calls <= self.failures:
            raise PermanentDeliveryError("no") if self.permanent else ConnectionError("gateway down")

    async def close(self) -> None:
        return None


async def _run_dispatch(channel: FlakyChannel, attempts: int = 3) -> tuple[list[str], list[str]]:
    settings = NotifierSettings(max_attempts=attempts, backoff_base_seconds=0.001, senders_per_channel=1)
    done: list[str] = []
    dead: list[str] = []

    async def delivered(d: Delivery, _e: Exception | None) -> None:
        done.append(d.notification.notification_id)

    async def failed(d: Delivery, _e: Exception | None) -> None:
        dead.append(d.notification.notification_id)

    dispatcher = Dispatcher({"sms": channel}, settings, delivered=delivered, failed=failed)
    dispatcher.start()
    n = Notification(notification_id="n1", case_id="c", tracking_number="t", kind="received", channel="sms",
                     to="13800138000", template="received", text="x", created_at=T0)
    await asyncio.wait_for(dispatcher.deliver([Delivery(n, 0)]), timeout=30)
    await dispatcher.stop()
    return done, dead


async def test_dispatcher_retries_with_backoff_then_delivers_or_dead_letters():
    assert await _run_dispatch(FlakyChannel(failures=2)) == (["n1"], [])
    flaky = FlakyChannel(failures=10)
    assert await _run_dispatch(flaky) == ([], ["n1"]) and flaky.calls == 3
    refused = FlakyChannel(failures=1, permanent=True)
    assert await _run_dispatch(refused) == ([], ["n1"]) and refused.calls == 1  # a 4xx is not retried
    settings = NotifierSettings(backoff_base_seconds=0.5, backoff_max_seconds=3)
    dispatcher = Dispatcher({}, settings, delivered=None, failed=None)  # type: ignore[arg-type]
    assert [dispatcher.backoff(k) for k in (1, 2, 3, 4, 5)] == [0.5, 1, 2, 3, 3]
    assert timedelta(seconds=dispatcher.backoff(1)) > timedelta(0)


async def test_deliver_returns_once_every_delivery_has_an_outcome():
    """The delivery consumer commits a poll after ``deliver``: by then each one was delivered or given up."""
    settings = NotifierSettings(max_attempts=2, backoff_base_seconds=0.001, senders_per_channel=2)
    outcomes: list[tuple[str, str]] = []

    async def delivered(d: Delivery, _e: Exception | None) -> None:
        outcomes.append((d.notification.notification_id, "delivered"))

    async def failed(d: Delivery, _e: Exception | None) -> None:
        outcomes.append((d.notification.notification_id, "dead"))

    flaky = FlakyChannel(failures=10)
    flaky.name = "wechat"
    dispatcher = Dispatcher({"sms": FlakyChannel(failures=1), "wechat": flaky}, settings,
                            delivered=delivered, failed=failed)
    dispatcher.start()
    notes = [Notification(notification_id=f"n{i}", case_id="c", tracking_number="t", kind="received",
                          channel=channel, to="13800138000", template="received", text="x", created_at=T0)
             for i, channel in enumerate(("sms", "wechat", "sms"))]
    await asyncio.wait_for(dispatcher.deliver([Delivery(n, 0) for n in notes]), timeout=30)
    await dispatcher.stop()
    assert sorted(outcomes) == [("n0", "delivered"), ("n1", "dead"), ("n2", "delivered")]
    assert dispatcher.in_flight == set()


async def test_deliver_raises_when_an_outcome_cannot_be_recorded_so_the_poll_is_not_committed():
    settings = NotifierSettings(max_attempts=1, senders_per_channel=1)

    async def delivered(_d: Delivery, _e: Exception | None) -> None:
        return None

    async def failed(_d: Delivery, _e: Exception | None) -> None:
        raise ConnectionError("the dead-letter topic is unreachable")

    dispatcher = Dispatcher({"sms": FlakyChannel(failures=5)}, settings, delivered=delivered, failed=failed)
    dispatcher.start()
    n = Notification(notification_id="n1", case_id="c", tracking_number="t", kind="received", channel="sms",
                     to="13800138000", template="received", text="x", created_at=T0)
    try:
        with pytest.raises(ConnectionError):
            await asyncio.wait_for(dispatcher.deliver([Delivery(n, 0)]), timeout=30)
    finally:
        await dispatcher.stop()
