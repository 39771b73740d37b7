"""People for tests: create accounts through intake's accounts service and sign them in through the API,
so every test acts as a named person with a role (never a shared unit token)."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
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


class _SignInOnUse(Mapping[str, str]):
    """user key -> bearer token, signing the person in the first time their token is asked for (a platform
    has a staff member for each of its ~100 units; most stories need two or three)."""

    def __init__(self, base_url: str, people: dict[str, tuple[str, str]]) -> None:
        self.base_url, self.people, self.tokens = base_url, people, {}

    def __getitem__(self, key: str) -> str:
        if key not in self.tokens:
            username, password = self.people[key]
            self.tokens[key] = sign_in_sync(self.base_url, username, password)["Authorization"].removeprefix("Bearer ")
        return self.tokens[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self.people)

    def __len__(self) -> int:
        return len(self.people)


def platform_tokens(base_url: str, credentials: dict[str, Any]) -> dict[str, Any]:
    """The demo accounts of a running platform, in the shape the platform stories use: a unit's staff member's
    token by unit id, the supervisors' by user name, the admin's, and the Open311 keys."""
    units, supervisors, admins = {}, {}, {}
    for username, account in credentials["accounts"].items():
        if account["roles"] == [Role.UNIT_STAFF.value]:
            units[account["unit_id"]] = (username, account["password"])
        elif Role.SUPERVISOR.value in account["roles"]:
            supervisors[username] = (username, account["password"])
        elif Role.ADMIN.value in account["roles"]:
            admins[username] = (username, account["password"])
    return {"departments": _SignInOnUse(base_url, units), "supervisors": _SignInOnUse(base_url, supervisors),
            "admins": _SignInOnUse(base_url, admins), "open311_api_keys": credentials.get("open311_api_keys", [])}
