"""MongoDB access with pymongo's ``AsyncMongoClient`` (motor is deprecated).

Each service owns one database (``wenzheng_<service>``); nobody else writes it. Only features that
both MongoDB 7 and the local FerretDB server support are used (see DESIGN.md §3).
"""

from __future__ import annotations

import functools
from collections.abc import Iterator, Sequence
from typing import Any, TypeVar

from prometheus_client import Counter
from pymongo import AsyncMongoClient, monitoring
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.errors import DuplicateKeyError

from services.common.config import common_settings
from services.common.metrics import metric_name

DUPLICATE_KEY = 11000  # the server's error code for a duplicate key, in a bulk write's writeErrors
# The local FerretDB uses its _id index for `_id: {$in: [...]}` up to this many ids
# (deploy/local/ferretdb/id-pushdown.patch); longer lists scan the table, so batch reads go in chunks.
IDS_PER_QUERY = 1000

T = TypeVar("T")


def id_chunks(items: Sequence[T], size: int = IDS_PER_QUERY) -> Iterator[list[T]]:
    """``items`` in consecutive slices of at most ``size``, one `$in` query (or bulk write) each."""
    for start in range(0, len(items), size):
        yield list(items[start:start + size])


class CommandCounter(monitoring.CommandListener):
    """Counts every command a client sends, by operation (``insert``, ``find``, ``update``, ``getMore``...):
    the figure that names the database's share of the cost of a post (`make bench` divides it by posts)."""

    def __init__(self, counter: Counter) -> None:
        self.counter = counter

    def started(self, event: monitoring.CommandStartedEvent) -> None:
        self.counter.labels(event.command_name).inc()

    def succeeded(self, event: monitoring.CommandSucceededEvent) -> None:
        pass

    def failed(self, event: monitoring.CommandFailedEvent) -> None:
        pass


@functools.cache
def db_commands_counter(service: str) -> Counter:
    """``wenzheng_<service>_db_commands_total{operation}``: one per service and process."""
    return Counter(metric_name(service, "db_commands"), "Database commands sent, by operation", ["operation"])


def new_client(url: str | None = None, *, service: str | None = None, **overrides: Any) -> AsyncMongoClient:
    """A client for ``url``; with ``service`` its commands are counted in that service's metrics."""
    options: dict[str, Any] = {
        "serverSelectionTimeoutMS": 5000,
        "tz_aware": True,
        "retryWrites": False,  # FerretDB has no retryable writes; our writes are idempotent anyway
        "appname": f"wenzheng-{service}" if service else "wenzheng",
    }
    if service:
        options["event_listeners"] = [CommandCounter(db_commands_counter(service))]
    options.update(overrides)
    return AsyncMongoClient(url or common_settings().mongo_url, **options)


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
