"""Waiting for an eventually-consistent step of the platform, with what was last seen when it times out."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any


def wait_for(check: Callable[[], object], what: str, timeout: float = 60):
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(0.3)
    raise AssertionError(f"timed out waiting for {what}; last seen: {last!r}")


async def wait_until(condition: Callable[[], Any], what: str, timeout: float = 90, every: float = 0.3) -> Any:
    """The same for async tests: poll ``condition`` (sync or async) until truthy; a generous bound for the
    broker or a worker to get there, never a speed assertion."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        value = condition()
        if asyncio.iscoroutine(value):
            value = await value
        if value:
            return value
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(every)
