"""What a post costs each process, for the benchmarks: database commands (from every service's
``wenzheng_<service>_db_commands_total``) and CPU time (psutil), read before and after a load."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

import httpx
import psutil

DB_COMMANDS = re.compile(r"^wenzheng_[a-z]+_db_commands_total(?:\{[^}]*\})?\s+([0-9.eE+-]+)\s*$", re.MULTILINE)


def db_commands_in(metrics_text: str) -> int:
    """The database commands a process has sent, summed over its operations."""
    return int(sum(float(value) for value in DB_COMMANDS.findall(metrics_text)))


async def db_commands(url: str) -> int | None:
    """The commands counted by the service at ``url`` (None when its /metrics does not answer)."""
    try:
        async with httpx.AsyncClient(timeout=5) as client:
            response = await client.get(f"{url}/metrics")
    except httpx.HTTPError:
        return None
    return db_commands_in(response.text) if response.status_code == 200 else None


def cpu_seconds(process: psutil.Process, children: bool = True) -> float:
    """User + system CPU of the process and, unless told not to, its children (uvicorn's workers)."""
    total = sum(process.cpu_times()[:2])
    for child in process.children(recursive=True) if children else ():
        try:
            total += sum(child.cpu_times()[:2])
        except psutil.Error:
            continue
    return total


@dataclass
class Reading:
    cpu_seconds: float
    db_commands: int | None


def cost_per_post(before: Reading, after: Reading, accepted: int) -> dict[str, float | int | None]:
    """CPU milliseconds and database commands per accepted post between two readings."""
    per = max(accepted, 1)
    commands = None if before.db_commands is None or after.db_commands is None \
        else after.db_commands - before.db_commands
    return {"cpu_seconds": round(after.cpu_seconds - before.cpu_seconds, 2),
            "cpu_ms_per_post": round(1000 * (after.cpu_seconds - before.cpu_seconds) / per, 3),
            "db_commands": commands,
            "db_commands_per_post": None if commands is None else round(commands / per, 3)}


def retry_after_seconds(headers: Mapping[str, str], default: float = 1.0) -> float:
    """A 503's or 429's Retry-After, in seconds (the header's integer form; the date form is not used here).
    ``headers``: any client's case-insensitive response headers (httpx's or aiohttp's)."""
    try:
        return max(0.0, float(headers.get("Retry-After", default)))
    except ValueError:
        return default
