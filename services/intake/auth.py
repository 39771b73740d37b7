"""Bearer tokens for units, supervisors and admins, from a local credentials file (hashes kept in memory)."""

from __future__ import annotations

import hashlib
import json
import os
import secrets
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

from services.common.secret_compare import secret_bytes


class Role(StrEnum):
    DEPARTMENT = "department"
    SUPERVISOR = "supervisor"
    ADMIN = "admin"


@dataclass(frozen=True)
class Principal:
    role: Role
    name: str  # the unit id for a department, the login for a supervisor
    unit_id: str | None = None

    @property
    def oversees(self) -> bool:
        return self.role in (Role.SUPERVISOR, Role.ADMIN)


def _digest(token: str) -> str:
    return hashlib.sha256(secret_bytes(token)).hexdigest()


class Credentials:
    def __init__(self, principals: dict[str, Principal], open311_keys: set[str]) -> None:
        self._by_hash = principals
        self._open311 = open311_keys

    @classmethod
    def from_mapping(cls, raw: dict) -> Credentials:
        principals: dict[str, Principal] = {}
        if raw.get("admin"):
            principals[_digest(raw["admin"])] = Principal(Role.ADMIN, "admin")
        for name, token in (raw.get("supervisors") or {}).items():
            principals[_digest(token)] = Principal(Role.SUPERVISOR, name)
        for unit_id, token in (raw.get("departments") or {}).items():
            principals[_digest(token)] = Principal(Role.DEPARTMENT, unit_id, unit_id)
        return cls(principals, {_digest(k) for k in raw.get("open311_api_keys") or []})

    @classmethod
    def from_file(cls, path: str | Path) -> Credentials:
        return cls.from_mapping(json.loads(Path(path).read_text(encoding="utf-8")))

    @classmethod
    def empty(cls) -> Credentials:
        return cls({}, set())

    def principal(self, token: str) -> Principal | None:
        return self._by_hash.get(_digest(token))

    def open311_key_ok(self, key: str) -> bool:
        return _digest(key) in self._open311

    def __len__(self) -> int:
        return len(self._by_hash)


def generate_credentials(unit_ids: list[str]) -> dict:
    return {
        "admin": secrets.token_urlsafe(24),
        "supervisors": {"supervisor": secrets.token_urlsafe(24)},
        "departments": {unit_id: secrets.token_urlsafe(24) for unit_id in unit_ids},
        "open311_api_keys": [secrets.token_urlsafe(24)],
    }


def ensure_credentials_file(path: str | Path, unit_ids: list[str]) -> bool:
    """Write random tokens if the file is missing (owner-only permissions); True when it was created."""
    path = Path(path)
    if path.exists():
        return False
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        json.dump(generate_credentials(unit_ids), f, ensure_ascii=False, indent=2)
    return True
