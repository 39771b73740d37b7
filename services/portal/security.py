"""The portal's own session (a signed HttpOnly cookie holding the intake token), CSRF tokens on every
form, and the security headers of every answer."""

from __future__ import annotations

import hmac
import secrets
from dataclasses import dataclass, field
from typing import Any

from itsdangerous import BadSignature, URLSafeTimedSerializer

COOKIE = "wz_session"
CSRF_FIELD = "csrf_token"
MAX_RATING_TOKENS = 5

CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; "
       "font-src 'self'; connect-src 'self'; object-src 'none'; base-uri 'self'; form-action 'self'; "
       "frame-ancestors 'none'")
SECURITY_HEADERS = {
    "content-security-policy": CSP,
    "x-content-type-options": "nosniff",
    "referrer-policy": "same-origin",
    "x-frame-options": "DENY",
    "permissions-policy": "camera=(), microphone=(), geolocation=(self)",
    "cross-origin-opener-policy": "same-origin",
}


@dataclass
class Session:
    """What the cookie holds. ``token`` and ``person`` only once a staff member has signed in."""

    csrf: str = field(default_factory=lambda: secrets.token_urlsafe(24))
    token: str | None = None
    person: dict[str, Any] | None = None
    expires_at: str | None = None
    rating_tokens: dict[str, str] = field(default_factory=dict)
    changed: bool = False

    @property
    def signed_in(self) -> bool:
        return bool(self.token and self.person)

    @property
    def roles(self) -> set[str]:
        return set((self.person or {}).get("roles") or [])

    def sign_in(self, token: str, person: dict[str, Any], expires_at: str | None) -> None:
        self.token, self.person, self.expires_at = token, person, expires_at
        self.csrf = secrets.token_urlsafe(24)  # a new token at every sign-in (no fixation)
        self.changed = True

    def sign_out(self) -> None:
        self.token = self.person = self.expires_at = None
        self.csrf = secrets.token_urlsafe(24)
        self.changed = True

    def remember_rating_token(self, tracking: str, token: str) -> None:
        tokens = {k: v for k, v in self.rating_tokens.items() if k != tracking}
        tokens[tracking] = token
        self.rating_tokens = dict(list(tokens.items())[-MAX_RATING_TOKENS:])
        self.changed = True

    def dump(self) -> dict[str, Any]:
        data: dict[str, Any] = {"c": self.csrf}
        if self.token:
            data.update(t=self.token, p=self.person, e=self.expires_at)
        if self.rating_tokens:
            data["r"] = self.rating_tokens
        return data

    @classmethod
    def load(cls, data: dict[str, Any]) -> Session:
        return cls(csrf=str(data.get("c") or secrets.token_urlsafe(24)), token=data.get("t"), person=data.get("p"),
                   expires_at=data.get("e"), rating_tokens=dict(data.get("r") or {}))


class SessionCodec:
    def __init__(self, secret: str, max_age_seconds: int) -> None:
        self.serializer = URLSafeTimedSerializer(secret, salt="wenzheng-portal-session")
        self.max_age = max_age_seconds

    def decode(self, cookie: str | None) -> Session:
        if not cookie:
            return Session(changed=True)
        try:
            data = self.serializer.loads(cookie, max_age=self.max_age)
        except BadSignature:  # forged, or older than max_age (SignatureExpired is a BadSignature)
            return Session(changed=True)
        return Session.load(data if isinstance(data, dict) else {})

    def encode(self, session: Session) -> str:
        return self.serializer.dumps(session.dump())


def csrf_ok(session: Session, submitted: str | None) -> bool:
    return bool(submitted) and hmac.compare_digest(session.csrf.encode(), str(submitted).encode())


def safe_next(target: str | None, default: str) -> str:
    """Only a path on this site: never another host (open redirects)."""
    if not target or not target.startswith("/") or target.startswith("//") or "\\" in target:
        return default
    return target
