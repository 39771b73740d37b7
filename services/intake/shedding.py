"""Load shedding: when intake's own backlog passes a bound, new citizens' posts are refused at once (503 with
``Retry-After``) instead of queueing until every answer takes seconds. Pure: the readings are passed in.

Only new posts are shed. Staff and supervisor commands, reads and the router's decisions go on: they move
cases that are already in, and refusing them would not make the posts any faster.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Load:
    """What this process sees of its own backlog right now."""

    in_flight_posts: int = 0  # posts being handled, this one included
    queued_writes: int = 0  # requests waiting for the outbox's next group
    write_seconds: float = 0.0  # how long the group being stored (or the last one) has taken
    outbox_age_seconds: float = 0.0  # the oldest unpublished event the relay has seen (0: not the relay)


@dataclass(frozen=True)
class ShedBounds:
    max_in_flight_posts: int
    max_queued_writes: int
    max_write_seconds: float
    max_outbox_age_seconds: float


def shed_reason(load: Load, bounds: ShedBounds) -> str | None:
    """Which bound the load passes (a metric label), or None when a post may come in."""
    if load.in_flight_posts > bounds.max_in_flight_posts:
        return "in_flight"
    if load.queued_writes > bounds.max_queued_writes:
        return "queued_writes"
    if load.write_seconds > bounds.max_write_seconds:
        return "write_latency"
    if load.outbox_age_seconds > bounds.max_outbox_age_seconds:
        return "outbox_age"
    return None
