"""Delivery channels (SMS and WeChat gateways over HTTP, e-mail over SMTP, a log channel) and the dispatcher.

Each channel has its own bounded queue and senders, so a slow or failing gateway delays only its own
messages; the dispatcher runs in the delivery consumer (its own consumer group over the notifications
topic), so the alert ladder never waits for a delivery. Failures are retried with exponential backoff
without holding a sender; after ``max_attempts`` the notification is dead-lettered.
"""

from __future__ import annotations

import asyncio
import smtplib
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from email.message import EmailMessage
from typing import Protocol

import httpx

from services.common.events import Notification, NotificationChannel
from services.common.logging import get_logger, mask_personal_text
from services.notifier.config import NotifierSettings
from services.notifier.domain import mask_address
from services.notifier.metrics import DELIVERY_SECONDS, NOTIFICATIONS

log = get_logger(__name__)


class PermanentDeliveryError(Exception):
    """The gateway refused the message for good (4xx): retrying cannot help."""


class DeliveryChannel(Protocol):
    name: str

    async def send(self, notification: Notification) -> None: ...

    async def close(self) -> None: ...


class HttpGatewayChannel:
    """An SMS gateway: POST JSON; the notification id is the idempotency key so the gateway can dedupe."""

    def __init__(self, name: str, url: str, timeout: float) -> None:
        self.name, self.url = name, url
        self.client = httpx.AsyncClient(timeout=timeout)

    def payload(self, n: Notification) -> dict:
        return {"id": n.notification_id, "to": n.to, "text": n.text, "template": n.template,
                "tracking_number": n.tracking_number}

    async def send(self, notification: Notification) -> None:
        response = await self.client.post(self.url, json=self.payload(notification),
                                          headers={"Idempotency-Key": notification.notification_id})
        if response.status_code >= 500 or response.status_code == 429:
            response.raise_for_status()
        if response.status_code >= 400:
            raise PermanentDeliveryError(f"gateway refused with HTTP {response.status_code}")

    async def close(self) -> None:
        await self.client.aclose()


class WeChatTemplateChannel(HttpGatewayChannel):
    """WeChat template messages (the official-account API's shape)."""

    def __init__(self, url: str, template_id: str, timeout: float) -> None:
        super().__init__("wechat", url, timeout)
        self.template_id = template_id

    def payload(self, n: Notification) -> dict:
        return {"touser": n.to, "template_id": self.template_id, "client_msg_id": n.notification_id,
                "data": {"first": {"value": n.text}, "keyword1": {"value": n.tracking_number}}}


class EmailChannel:
    """SMTP in a thread (smtplib blocks); the Message-ID carries the notification id for dedupe."""

    name = "email"

    def __init__(self, host: str, port: int, sender: str, timeout: float) -> None:
        self.host, self.port, self.sender, self.timeout = host, port, sender, timeout

    def _send(self, n: Notification) -> None:
        message = EmailMessage()
        message["From"], message["To"] = self.sender, n.to
        message["Subject"] = f"问政诉求 {n.tracking_number}"
        message["Message-ID"] = f"<{n.notification_id}@wenzheng>"
        message.set_content(n.text)
        try:
            with smtplib.SMTP(self.host, self.port, timeout=self.timeout) as smtp:
                smtp.send_message(message)
        except smtplib.SMTPRecipientsRefused as exc:
            raise PermanentDeliveryError("recipient refused") from exc

    async def send(self, notification: Notification) -> None:
        await asyncio.to_thread(self._send, notification)

    async def close(self) -> None:
        return None


class LogChannel:
    """Local runs: the message goes to the log, with the address masked."""

    name = "log"

    async def send(self, notification: Notification) -> None:
        log.info("notification_logged", notification_id=notification.notification_id,
                 kind=notification.kind.value, recipient=mask_address(notification.to),
                 text=mask_personal_text(notification.text))

    async def close(self) -> None:
        return None


def channels_from_settings(settings: NotifierSettings) -> dict[str, DeliveryChannel]:
    """Every notification channel maps to a sender; one without an endpoint falls back to the log."""
    fallback = LogChannel()
    channels: dict[str, DeliveryChannel] = {c.value: fallback for c in NotificationChannel}
    if settings.sms_url:
        channels["sms"] = HttpGatewayChannel("sms", settings.sms_url, settings.http_timeout_seconds)
    if settings.wechat_url:
        channels["wechat"] = WeChatTemplateChannel(settings.wechat_url, settings.wechat_template_id,
                                                   settings.http_timeout_seconds)
    if settings.smtp_host:
        channels["email"] = EmailChannel(settings.smtp_host, settings.smtp_port, settings.smtp_sender,
                                         settings.http_timeout_seconds)
    return channels


@dataclass
class Delivery:
    notification: Notification
    partition: int
    attempts: int = 0
    outcome: asyncio.Future[None] | None = field(default=None, repr=False)  # set once delivered or given up

    def settle(self, error: BaseException | None = None) -> None:
        """Its outcome is recorded (or, with ``error``, could not be: the poll is then not committed)."""
        if self.outcome is not None and not self.outcome.done():
            if error is None:
                self.outcome.set_result(None)
            else:
                self.outcome.set_exception(error)


# Hooks the dispatcher calls with the outcomes.
Outcome = Callable[[Delivery, Exception | None], Awaitable[None]]


class Dispatcher:
    def __init__(self, channels: dict[str, DeliveryChannel], settings: NotifierSettings, *, delivered: Outcome,
                 failed: Outcome) -> None:
        self.channels = channels
        self.settings = settings
        self.delivered, self.failed = delivered, failed
        self.queues: dict[str, asyncio.Queue[Delivery]] = {
            name: asyncio.Queue(settings.queue_size) for name in channels}
        self.in_flight: set[str] = set()
        self.tasks: list[asyncio.Task] = []

    def start(self) -> None:
        for name in self.queues:
            for _ in range(self.settings.senders_per_channel):
                self.tasks.append(asyncio.create_task(self._sender(name), name=f"sender-{name}"))

    async def stop(self) -> None:
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        for channel in {id(c): c for c in self.channels.values()}.values():
            await channel.close()

    async def deliver(self, deliveries: list[Delivery]) -> None:
        """Queue them all (waiting for room) and return once each is delivered or given up (dead-lettered)."""
        loop = asyncio.get_running_loop()
        for delivery in deliveries:
            delivery.outcome = loop.create_future()
            await self.queues[delivery.notification.channel.value].put(delivery)
            self.in_flight.add(delivery.notification.notification_id)
        await asyncio.gather(*(d.outcome for d in deliveries if d.outcome is not None))

    def backoff(self, attempts: int) -> float:
        return min(self.settings.backoff_max_seconds, self.settings.backoff_base_seconds * 2 ** (attempts - 1))

    async def _sender(self, name: str) -> None:
        queue, channel = self.queues[name], self.channels[name]
        while True:
            delivery = await queue.get()
            try:
                await self._attempt(name, channel, delivery)
            except Exception as exc:  # the sender survives a failed hook; the delivery consumer replays the poll
                log.warning("delivery_hook_failed", notification_id=delivery.notification.notification_id,
                            error=type(exc).__name__)
                self._settle(delivery, exc)

    async def _attempt(self, name: str, channel: DeliveryChannel, delivery: Delivery) -> None:
        """One attempt: settled once its outcome is recorded, or scheduled again after a backoff."""
        nid = delivery.notification.notification_id
        delivery.attempts += 1
        started = time.perf_counter()
        try:
            await channel.send(delivery.notification)
        except Exception as exc:
            DELIVERY_SECONDS.labels(name).observe(time.perf_counter() - started)
            if isinstance(exc, PermanentDeliveryError) or delivery.attempts >= self.settings.max_attempts:
                NOTIFICATIONS.labels(name, "dead_lettered").inc()
                await self.failed(delivery, exc)
                self._settle(delivery)
                return
            NOTIFICATIONS.labels(name, "retried").inc()
            log.info("delivery_retry", notification_id=nid, channel=name, attempts=delivery.attempts,
                     error=type(exc).__name__)
            asyncio.get_running_loop().call_later(self.backoff(delivery.attempts), self._requeue, delivery)
            return
        DELIVERY_SECONDS.labels(name).observe(time.perf_counter() - started)
        NOTIFICATIONS.labels(name, "delivered").inc()
        await self.delivered(delivery, None)
        self._settle(delivery)

    def _settle(self, delivery: Delivery, error: BaseException | None = None) -> None:
        self.in_flight.discard(delivery.notification.notification_id)
        delivery.settle(error)

    def _requeue(self, delivery: Delivery) -> None:
        queue = self.queues[delivery.notification.channel.value]
        try:
            queue.put_nowait(delivery)
        except asyncio.QueueFull:  # wait for room: the delivery consumer does not commit past it meanwhile
            self.tasks.append(asyncio.create_task(queue.put(delivery)))
