"""One clock abstraction, so tests (and a supervisor's "what if") can move time forward."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Protocol


class Clock(Protocol):
    def now(self) -> datetime: ...


class SystemClock:
    def now(self) -> datetime:
        return datetime.now(UTC)


class OffsetClock:
    """The system clock shifted by an offset that can be moved forward (never backward)."""

    def __init__(self, offset: timedelta = timedelta(0)) -> None:
        self.offset = offset

    def now(self) -> datetime:
        return datetime.now(UTC) + self.offset

    def advance(self, delta: timedelta) -> None:
        if delta < timedelta(0):
            raise ValueError("time only moves forward")
        self.offset += delta


class FixedClock:
    """A clock that only moves when told: for pure unit tests."""

    def __init__(self, start: datetime) -> None:
        if start.tzinfo is None:
            raise ValueError("FixedClock needs a timezone-aware start")
        self.current = start.astimezone(UTC)

    def now(self) -> datetime:
        return self.current

    def advance(self, delta: timedelta) -> None:
        self.current += delta

    def set(self, moment: datetime) -> None:
        self.current = moment.astimezone(UTC)


class FileOffsetClock:
    """System clock plus an offset in seconds read from a file: lets an end-to-end test move a running
    service's time forward (``echo 864000 > var/local/clock_offset``). Refused in production."""

    def __init__(self, path: str, refresh_seconds: float = 0.5) -> None:
        self.path = path
        self.refresh_seconds = refresh_seconds
        self._offset = timedelta(0)
        self._read_at = float("-inf")

    def offset(self) -> timedelta:
        import time

        now = time.monotonic()
        if now - self._read_at >= self.refresh_seconds:
            self._read_at = now
            try:
                with open(self.path, encoding="utf-8") as f:
                    self._offset = timedelta(seconds=float(f.read().strip() or 0))
            except (FileNotFoundError, ValueError):
                self._offset = timedelta(0)
        return self._offset

    def now(self) -> datetime:
        return datetime.now(UTC) + self.offset()


def clock_from_environment() -> Clock:
    """``WENZHENG_CLOCK_OFFSET_FILE`` (not in production) selects a :class:`FileOffsetClock`."""
    import os

    path = os.environ.get("WENZHENG_CLOCK_OFFSET_FILE")
    if path and os.environ.get("WENZHENG_ENVIRONMENT", "local") != "production":
        return FileOffsetClock(path)
    return SystemClock()
