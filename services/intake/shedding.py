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
    loop_lag_seconds: float = 0.0  # how late the event loop ran a timer lately: the wait before any handler


@dataclass(frozen=True)
class ShedBounds:
    max_in_flight_posts: int
    max_queued_writes: int
    max_write_seconds: float
    max_outbox_age_seconds: float
    max_loop_lag_seconds: float = float("inf")


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
    if load.loop_lag_seconds > bounds.max_loop_lag_seconds:
        return "loop_lag"
    return None


class LoopLag:
    """How late this process's event loop runs a timer: a request waits that long before its handler starts,
    which no reading inside a handler sees (the bench saw handlers finish in 0.5 s while clients waited 2.5 s).
    ``tick`` is called by a task that asks to wake every ``interval``; the reading is the worst lateness of the
    last ``window`` seconds, so one slow tick is remembered long enough to shed the requests queued behind it."""

    def __init__(self, interval: float = 0.05, window: float = 1.0) -> None:
        self.interval = interval
        self.window = window
        self._recent: list[tuple[float, float]] = []  # (woke at, lateness)

    def tick(self, asked_at: float, woke_at: float) -> None:
        lateness = max(0.0, woke_at - asked_at - self.interval)
        self._recent = [(at, late) for at, late in self._recent if at > woke_at - self.window]
        self._recent.append((woke_at, lateness))

    def seconds(self, now: float) -> float:
        return max((late for at, late in self._recent if at > now - self.window), default=0.0)
