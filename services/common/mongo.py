"""MongoDB access with pymongo's ``AsyncMongoClient`` (motor is deprecated).

Each service owns one database (``wenzheng_<service>``); nobody else writes it. Only features that
both MongoDB 7 and the local FerretDB server support are used (see DESIGN.md §3).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any, TypeVar

from pymongo import AsyncMongoClient
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import DuplicateKeyError

from services.common.config import common_settings

DUPLICATE_KEY = 11000  # the server's error code for a duplicate key, in a bulk write's writeErrors
# The local FerretDB uses its _id index for `_id: {$in: [...]}` up to this many ids
# (deploy/local/ferretdb/id-pushdown.patch); longer lists scan the table, so batch reads go in chunks.
IDS_PER_QUERY = 1000

T = TypeVar("T")


def id_chunks(items: Sequence[T], size: int = IDS_PER_QUERY) -> Iterator[list[T]]:
    """``items`` in consecutive slices of at most ``size``, one `$in` query (or bulk write) each."""
    for start in range(0, len(items), size):
        yield list(items[start:start + size])


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


async def upsert_one(collection: AsyncCollection, query: dict[str, Any], update: dict[str, Any]) -> None:
    """An upsert that survives a race: two upserts of a missing document can both try to insert it, and the
    loser fails with a duplicate key. The document exists by then, so the same update once more applies."""
    try:
        await collection.update_one(query, update, upsert=True)
    except DuplicateKeyError:
        await collection.update_one(query, update, upsert=True)
