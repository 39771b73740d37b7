"""Integration keys from the local credentials file (hashes kept in memory): the Open311 API keys that
``make run`` generates. People sign in with their own accounts (services/intake/people.py); machine tokens
for integrations are managed by admins in the database. This file only keeps what integrations need locally."""

from __future__ import annotations

import hashlib
import json
import os
import secrets
from pathlib import Path

from services.common.secret_compare import secret_bytes


def _digest(token: str) -> str:
    return hashlib.sha256(secret_bytes(token)).hexdigest()


class Credentials:
    def __init__(self, open311_keys: set[str]) -> None:
        self._open311 = open311_keys

    @classmethod
    def from_mapping(cls, raw: dict) -> Credentials:
        return cls({_digest(k) for k in raw.get("open311_api_keys") or []})

    @classmethod
    def from_file(cls, path: str | Path) -> Credentials:
        return cls.from_mapping(json.loads(Path(path).read_text(encoding="utf-8")))

    @classmethod
    def empty(cls) -> Credentials:
        return cls(set())

    def open311_key_ok(self, key: str) -> bool:
        return _digest(key) in self._open311

    def __len__(self) -> int:
        return len(self._open311)


def write_private_json(path: str | Path, data: dict) -> None:
    """Write ``data`` to ``path`` readable by the owner only (replacing it atomically)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        json.dump(data, f, ensure_ascii=False, indent=2)
    os.replace(tmp, path)


def ensure_credentials_file(path: str | Path) -> bool:
    """Write a random Open311 key if the file is missing (owner-only permissions); True when it was created."""
    path = Path(path)
    if path.exists():
        return False
    write_private_json(path, {"open311_api_keys": [secrets.token_urlsafe(24)]})
    return True
