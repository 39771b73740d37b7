"""Comparing secrets: always on bytes, in constant time, never raising on what a client sent.

``hmac.compare_digest`` on two ``str`` raises ``TypeError`` for non-ASCII text (a 500 and a dropped
keep-alive connection); every secret the platform checks (rating tokens, gateway tokens, API keys, phone
digits) goes through :func:`same_secret` instead, so a wrong value of any shape is just wrong.
"""

from __future__ import annotations

import hmac


def secret_bytes(value: str | bytes) -> bytes:
    """UTF-8 bytes of any string a client can send (lone surrogates from JSON escapes included)."""
    return value if isinstance(value, bytes) else value.encode("utf-8", "surrogatepass")


def same_secret(given: str | bytes | None, expected: str | bytes | None) -> bool:
    """True only when both are present and equal; constant time in the length of ``expected``."""
    if given is None or expected is None:
        return False
    return hmac.compare_digest(secret_bytes(given), secret_bytes(expected))
