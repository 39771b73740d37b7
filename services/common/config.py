"""Settings shared by every service, read from ``WENZHENG_*`` environment variables."""

from __future__ import annotations

from functools import lru_cache

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class TopicSettings(BaseSettings):
    """Topic names are settings so that a city can run several platforms on one cluster."""

    model_config = SettingsConfigDict(env_prefix="WENZHENG_TOPIC_", extra="ignore")

    case_events: str = "wenzheng.case-events.v1"
    routing_decisions: str = "wenzheng.routing-decisions.v1"
    alerts: str = "wenzheng.alerts.v1"
    case_contacts: str = "wenzheng.case-contacts.v1"
    notifications: str = "wenzheng.notifications.v1"
    staff_contacts: str = "wenzheng.staff-contacts.v1"
    dead_letter: str = "wenzheng.dead-letter.v1"


class CommonSettings(BaseSettings):
    """What every service needs: where Kafka and MongoDB are, how to log."""

    model_config = SettingsConfigDict(env_prefix="WENZHENG_", extra="ignore")

    kafka_bootstrap: str = Field("127.0.0.1:9092", description="Kafka bootstrap servers, comma separated")
    mongo_url: str = Field("mongodb://127.0.0.1:27017/", description="MongoDB connection string")
    log_level: str = "INFO"
    log_json: bool = True
    environment: str = Field("local", description="local, test or production")
    topic_partitions: int = Field(6, ge=1, description="partitions for topics the platform creates")


@lru_cache
def topics() -> TopicSettings:
    return TopicSettings()


@lru_cache
def common_settings() -> CommonSettings:
    return CommonSettings()
