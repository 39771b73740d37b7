"""Command-line account set-up: the first admin, and the local demo accounts ``make run`` creates."""

from __future__ import annotations

import json
import secrets
from pathlib import Path
from typing import Any

from services.common.clock import SystemClock
from services.common.config import CommonSettings
from services.common.mongo import new_client
from services.common.reference import reference
from services.intake.accounts import Role, password_problem
from services.intake.accounts_store import AccountsStore
from services.intake.auth import write_private_json
from services.intake.config import IntakeSettings
from services.intake.handlers import ServiceError
from services.intake.people import AccountsService

DEMO_UNITS = ("zhanggong_gov", "nankang_gov", "city_urban_management", "city_transport")


def demo_people(units: list[str]) -> list[dict[str, Any]]:
    """Who the demo has: a staff member per unit, a lead of the first, a supervisor, an admin."""
    people: list[dict[str, Any]] = [
        {"username": f"staff.{u.replace('_', '-')}", "display_name": f"承办人员（{u}）", "roles": [Role.UNIT_STAFF],
         "unit_id": u} for u in units]
    people += [
        {"username": f"lead.{units[0].replace('_', '-')}", "display_name": "单位负责人", "roles": [Role.UNIT_LEAD],
         "unit_id": units[0]},
        {"username": "supervisor", "display_name": "督办员", "roles": [Role.SUPERVISOR], "unit_id": None},
        {"username": "admin", "display_name": "系统管理员", "roles": [Role.ADMIN], "unit_id": None},
    ]
    return people


def _demo_password() -> str:
    while True:
        password = f"wz-{secrets.token_urlsafe(12)}"
        if password_problem(password) is None:
            return password


async def _service(settings: IntakeSettings, common: CommonSettings) -> tuple[AccountsService, Any]:
    client = new_client(common.mongo_url)
    store = AccountsStore(client[settings.database])
    await store.ensure_indexes()
    return AccountsService(store, settings, SystemClock(), reference()), client


async def create_admin(settings: IntakeSettings, common: CommonSettings, username: str, display_name: str,
                       password: str) -> int:
    service, client = await _service(settings, common)
    try:
        view, _ = await service.create_person(None, username=username, display_name=display_name,
                                              roles=[Role.ADMIN], password=password, must_change_password=False)
    except ServiceError as exc:
        print(f"[intake] cannot create the admin: {exc.message}")
        return 1
    finally:
        await client.close()
    print(f"[intake] admin {view['username']} created ({view['id']})")
    return 0


def _read_json(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text(encoding="utf-8")) if path.exists() else {}


async def demo_accounts(settings: IntakeSettings, common: CommonSettings, out: Path, *, all_units: bool = False) -> int:
    """Create the demo people that are missing; their passwords live in ``out`` (0600), reused on later runs.
    A person whose password is not in the file (the file was deleted) gets a new one."""
    existing = _read_json(out)
    accounts: dict[str, Any] = dict(existing.get("accounts") or {})
    service, client = await _service(settings, common)
    unit_ids = sorted(u.id for u in service.reference.units.units if u.active)
    units = unit_ids if all_units else [u for u in DEMO_UNITS if u in unit_ids]
    units = units or unit_ids[:3]
    created = 0
    try:
        for spec in demo_people(units):
            username = spec["username"]
            known = accounts.get(username, {}).get("password")
            doc = await service.store.person_by_username(username)
            if doc is None:
                password = known or _demo_password()
                await service.create_person(None, password=password, must_change_password=False, **spec)
                created += 1
            elif not known or not await service._verify(doc.get("password_hash"), known):
                password = _demo_password()
                await service.store.update_person(doc["_id"], {"password_hash": await service.hash_password(password),
                                                               "must_change_password": False, "disabled": False})
            else:
                password = known
            accounts[username] = {"password": password, "roles": [r.value for r in spec["roles"]],
                                  "unit_id": spec["unit_id"]}
    finally:
        await client.close()
    data = {**existing, "accounts": accounts,
            "open311_api_keys": existing.get("open311_api_keys") or [secrets.token_urlsafe(24)]}
    write_private_json(out, data)
    print(f"[intake] demo accounts: {created} created, {len(accounts)} in {out}")
    return 0
