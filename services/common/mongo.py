"""MongoDB access with pymongo's ``AsyncMongoClient`` (motor is deprecated).

Each service owns one database (``wenzheng_<service>``); nobody else writes it. Only features that
both MongoDB 7 and the local FerretDB server support are used (see DESIGN.md §3).
"""

from __future__ import annotations

from typing import Any

from pymongo import AsyncMongoClient
from pymongo.asynchronous.database import AsyncDatabase

from services.common.config import common_settings


def new_client(url: str | None = None, **overrides: Any) -> AsyncMongoClient:
    options: dict[str, Any] = {
        "serverSelectionTimeoutMS": 5000,
        "tz_aware": True,
        "retryWrites": False,  # FerretDB has no retryable writes; our writes are idempotent anyway
        "appname": "wenzheng",
    }
    options.update(overrides)
    return AsyncMongoClient(url or common_settings().mongo_url, **options)


def service_database(client: AsyncMongoClient, service: str, suffix: str = "") -> AsyncDatabase:
    """The database a service owns; ``suffix`` isolates test runs."""
    return client[f"wenzheng_{service}{suffix}"]


async def ping(client: AsyncMongoClient) -> bool:
    try:
        await client.admin.command("ping")
        return True
    except Exception:
        return False
