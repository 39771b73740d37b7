"""Notifier settings (env prefix ``WENZHENG_NOTIFIER_``; the HTTP port is ``WENZHENG_PORT``)."""

from __future__ import annotations

from datetime import timedelta

from pydantic import AliasChoices, Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class LadderSettings(BaseSettings):
    """The alert ladder's thresholds, in working days unless named otherwise."""

    model_config = SettingsConfigDict(env_prefix="WENZHENG_NOTIFIER_", extra="ignore", frozen=True)

    reminder_working_days_before: int = Field(1, ge=1, le=10)
    unsigned_after_working_days: int = Field(1, ge=1, le=10)
    escalate_after_working_days: int = Field(5, ge=1, le=30)
    overdue_grace_seconds: float = Field(
        30, ge=0, description="a reply made just before the deadline may still be in flight")
    hotspot_min_posts: int = Field(5, ge=2)
    hotspot_window_days: int = Field(7, ge=1)

    @property
    def overdue_grace(self) -> timedelta:
        return timedelta(seconds=self.overdue_grace_seconds)

    @property
    def hotspot_window(self) -> timedelta:
        return timedelta(days=self.hotspot_window_days)


class NotifierSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="WENZHENG_NOTIFIER_", extra="ignore")

    port: int = Field(8002, validation_alias=AliasChoices("WENZHENG_PORT", "WENZHENG_NOTIFIER_PORT"))
    group_id: str = Field("wenzheng-notifier", description="consumer group of the notifier workers")
    state_prefix: str | None = Field(
        None, description="name prefix of the state's changelog topics (default: the group id)")
    transactional_id: str | None = Field(
        None, description="unique per running replica and the same after its restart, so that the restarted "
                          "worker fences its killed predecessor and aborts its open transaction at once; "
                          "default group-host-port")
    source: str = "/wenzheng/notifier"
    scan_interval_seconds: float = Field(1.0, gt=0, description="how often the alert ladder is evaluated")
    scan_max_cases: int = Field(
        5000, ge=1, description="cases evaluated per scan step: the consumer gets the lock between steps")
    hotspot_scan_seconds: float = Field(10.0, gt=0)
    sweep_interval_seconds: float = Field(
        30.0, gt=0, description="release staff reminders held for quiet hours and expire old waits for a contact "
                                 "(scans the pending notifications in memory)")
    metrics_refresh_seconds: float = Field(5.0, gt=0)
    session_timeout_ms: int = Field(10000, ge=6000)

    # Delivery: a channel without an endpoint falls back to the log channel (local runs).
    sms_url: str | None = None
    wechat_url: str | None = None
    wechat_template_id: str = "wenzheng-case-status"
    smtp_host: str | None = None
    smtp_port: int = 25
    smtp_sender: str = "noreply@wenzheng.gov.cn"
    force_channel: str | None = Field(None, description="send every notification on this channel (e.g. log)")
    http_timeout_seconds: float = Field(5.0, gt=0)
    max_attempts: int = Field(5, ge=1)
    backoff_base_seconds: float = Field(0.5, gt=0)
    backoff_max_seconds: float = Field(60.0, gt=0)
    queue_size: int = Field(1000, ge=1, description="per channel; the delivery consumer waits for room")
    delivery_batch: int = Field(
        50, ge=1, description="notifications per poll of the delivery consumer: its offsets are committed once "
                              "they all have an outcome, so at most this many are sent again after a crash")
    senders_per_channel: int = Field(4, ge=1)
    pending_contact_max_age_hours: float = Field(
        72, gt=0, description="a notification still without a contact after this long is dropped")
    pending_per_case_max: int = Field(10, ge=1)
