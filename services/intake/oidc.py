"""What an OpenID Connect sign-in must prove before anyone is signed in (pure: no I/O).

The callback hands the identity provider's id_token here with the provider's JWKS and what the start of the
sign-in issued: the token must be signed by one of the provider's keys (RS/ES/PS only: never ``none`` or a
shared-secret HMAC), come from the configured issuer, be meant for this client, be fresh and carry the nonce."""

from __future__ import annotations

import base64
import hashlib
import json
from datetime import datetime
from typing import Any

from authlib.jose import JsonWebKey, JsonWebToken
from authlib.jose.errors import JoseError

ID_TOKEN_ALGORITHMS = ["RS256", "RS384", "RS512", "PS256", "ES256", "ES384"]
_jwt = JsonWebToken(ID_TOKEN_ALGORITHMS)


class IdTokenRefused(Exception):
    """Why an id_token does not sign anybody in (the message is safe to show)."""


def s256_challenge(code_verifier: str) -> str:
    """PKCE (RFC 7636) S256: base64url(sha256(verifier)) without padding."""
    digest = hashlib.sha256(code_verifier.encode("ascii")).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


def token_kid(id_token: str) -> str | None:
    """The key id in the token's header, to tell whether the cached JWKS is stale (key rotation)."""
    try:
        header = id_token.split(".", 1)[0]
        return json.loads(base64.urlsafe_b64decode(header + "=" * (-len(header) % 4))).get("kid")
    except (ValueError, AttributeError):
        return None


def has_key(jwks: dict[str, Any], kid: str | None) -> bool:
    return any(key.get("kid") == kid for key in jwks.get("keys", []) if isinstance(key, dict))


def verify_id_token(id_token: str, jwks: dict[str, Any], *, issuer: str, client_id: str, nonce: str,
                    now: datetime, leeway: int = 60) -> dict[str, Any]:
    """The id_token's claims if it is genuine, for us, fresh and answers this sign-in; else IdTokenRefused."""
    try:
        keys = JsonWebKey.import_key_set(jwks)
        claims = _jwt.decode(id_token, keys, claims_options={
            "iss": {"essential": True, "value": issuer},
            "aud": {"essential": True, "value": client_id},
            "sub": {"essential": True},
            "exp": {"essential": True},
            "iat": {"essential": True},
            "nonce": {"essential": True, "value": nonce},
        })
        claims.validate(now=int(now.timestamp()), leeway=leeway)
    except (JoseError, ValueError, TypeError, KeyError) as exc:
        raise IdTokenRefused(f"the identity provider's id_token is not valid: {_reason(exc)}") from exc
    audiences = claims["aud"] if isinstance(claims["aud"], list) else [claims["aud"]]
    if len(audiences) > 1 and claims.get("azp") != client_id:
        raise IdTokenRefused("the identity provider's id_token is not valid: azp is not this client")
    if claims["iat"] > now.timestamp() + leeway:
        raise IdTokenRefused("the identity provider's id_token is not valid: issued in the future")
    return dict(claims)


def _reason(exc: Exception) -> str:
    error = getattr(exc, "error", None)
    description = getattr(exc, "description", None)
    return str(description or error or type(exc).__name__)[:200]
