"""People for tests: create accounts through intake's accounts service and sign them in through the API,
so every test acts as a named person with a role (never a shared unit token)."""

from __future__ import annotations

from typing import Any

import httpx

from services.intake.accounts import Role

TEST_PASSWORD = "correct-horse-battery-staple-42"
# cheap argon2id for tests (the production defaults take ~0.1 s a hash); still argon2id
CHEAP_HASHING = {"password_time_cost": 1, "password_memory_kib": 1024, "password_parallelism": 1}


async def create_person(accounts: Any, username: str, roles: list[Role | str], unit_id: str | None = None, *,
                        password: str = TEST_PASSWORD, display_name: str | None = None, **extra: Any) -> str:
    """A new account (no temporary password to change); returns its id."""
    view, _ = await accounts.create_person(None, username=username, display_name=display_name or f"测试{username}",
                                           roles=[Role(r) for r in roles], unit_id=unit_id, password=password,
                                           must_change_password=False, **extra)
    return view["id"]


async def sign_in(client: httpx.AsyncClient, username: str, password: str = TEST_PASSWORD) -> dict[str, str]:
    """Bearer headers for ``username``, from ``POST /v1/auth/login``."""
    response = await client.post("/v1/auth/login", json={"username": username, "password": password})
    assert response.status_code == 200, response.text
    return {"Authorization": f"Bearer {response.json()['token']}"}


def sign_in_sync(base_url: str, username: str, password: str) -> dict[str, str]:
    response = httpx.post(f"{base_url}/v1/auth/login", json={"username": username, "password": password}, timeout=30)
    assert response.status_code == 200, response.text
    return {"Authorization": f"Bearer {response.json()['token']}"}


def unit_staff_username(unit_id: str) -> str:
    return f"staff.{unit_id.replace('_', '-')}"
