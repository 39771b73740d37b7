"""OpenID Connect sign-in against a small local fake identity provider on 127.0.0.1 (discovery, JWKS, token,
userinfo) that signs real RS256 id_tokens with a key generated per test: the sign-in needs state (single use,
expiring), nonce and PKCE S256, and an id_token whose signature, iss, aud, exp/iat and nonce all check out;
the IdP's user name claim is then mapped to an existing, enabled account; nobody is created."""

from __future__ import annotations

import base64
import json
import threading
import time
import uuid
from collections.abc import Iterator
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlparse

import pytest
from authlib.jose import JsonWebKey, jwt

from harness.people import create_person
from services.intake.oidc import s256_challenge
from tests.intake.conftest import open_intake

pytestmark = pytest.mark.integration
REDIRECT = "https://portal.example.cn/auth/callback"


def rsa_key(kid: str) -> Any:
    return JsonWebKey.generate_key("RSA", 2048, options={"kid": kid}, is_private=True)


class FakeIdP:
    """A browser "signs in" with ``authorize(query, username)``, which returns a code bound to that request's
    nonce and PKCE challenge; the token endpoint checks the client's secret and the verifier and answers with
    an id_token signed by ``signing_key``; ``overrides`` changes claims (a tampering provider)."""

    def __init__(self, client_id: str, client_secret: str) -> None:
        idp = self
        self.token_calls: list[dict[str, Any]] = []
        self.codes: dict[str, dict[str, str]] = {}
        self.key = rsa_key("k1")
        self.signing_key = self.key
        self.overrides: dict[str, Any] = {}
        self.jwks_fetches = 0

        class Handler(BaseHTTPRequestHandler):
            def _json(self, status: int, body: dict[str, Any]) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self) -> None:
                base = idp.issuer
                if self.path == "/.well-known/openid-configuration":
                    self._json(200, {"issuer": base, "authorization_endpoint": f"{base}/authorize",
                                     "token_endpoint": f"{base}/token", "userinfo_endpoint": f"{base}/userinfo",
                                     "jwks_uri": f"{base}/jwks", "id_token_signing_alg_values_supported": ["RS256"],
                                     "code_challenge_methods_supported": ["S256"]})
                elif self.path == "/jwks":
                    idp.jwks_fetches += 1
                    self._json(200, {"keys": [idp.key.as_dict(is_private=False)]})
                elif self.path == "/userinfo":
                    token = self.headers.get("Authorization", "").removeprefix("Bearer ")
                    if not token.startswith("at-"):
                        self._json(401, {"error": "invalid_token"})
                    else:
                        self._json(200, {"sub": "s-" + token.removeprefix("at-"), "email": "x@example.cn"})
                else:
                    self._json(404, {})

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", 0))
                form = {k: v[0] for k, v in parse_qs(self.rfile.read(length).decode()).items()}
                basic = base64.b64decode(self.headers.get("Authorization", "Basic ").split(" ", 1)[1] or b"").decode()
                idp.token_calls.append(form)
                grant = idp.codes.pop(form.get("code", ""), None)
                if basic != f"{client_id}:{client_secret}" or grant is None:
                    self._json(400, {"error": "invalid_grant"})
                    return
                verifier = form.get("code_verifier")
                if not verifier or s256_challenge(verifier) != grant["code_challenge"]:
                    self._json(400, {"error": "invalid_grant", "error_description": "PKCE verification failed"})
                    return
                if form.get("redirect_uri") != grant["redirect_uri"]:
                    self._json(400, {"error": "invalid_grant"})
                    return
                now = int(time.time())
                claims = {"iss": idp.issuer, "aud": client_id, "sub": "s-" + grant["username"], "iat": now,
                          "exp": now + 300, "nonce": grant["nonce"], "preferred_username": grant["username"],
                          **idp.overrides}
                id_token = jwt.encode({"alg": "RS256", "kid": idp.signing_key.kid}, claims, idp.signing_key)
                self._json(200, {"access_token": "at-" + grant["username"], "token_type": "Bearer",
                                 "expires_in": 300, "id_token": id_token.decode()})

            def log_message(self, *_args: Any) -> None:
                return None

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.issuer = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def authorize(self, authorization_url: str, username: str) -> str:
        """What the IdP's login page does: remember the request's nonce and challenge under a new code."""
        query = {k: v[0] for k, v in parse_qs(urlparse(authorization_url).query).items()}
        assert query["code_challenge_method"] == "S256" and query["response_type"] == "code"
        code = f"code-{uuid.uuid4().hex}"
        self.codes[code] = {"username": username, "nonce": query["nonce"], "redirect_uri": query["redirect_uri"],
                            "code_challenge": query["code_challenge"]}
        return code

    def __enter__(self) -> FakeIdP:
        self.thread.start()
        return self

    def __exit__(self, *_exc: Any) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def idp() -> Iterator[FakeIdP]:
    with FakeIdP("wenzheng", "idp-secret") as server:
        yield server


def _intake(kafka_bootstrap: str, mongo_url: str, intake_topics: Any, idp: FakeIdP) -> Any:
    return open_intake(kafka_bootstrap, mongo_url, intake_topics, f"oidc_{uuid.uuid4().hex[:8]}",
                       oidc_issuer=idp.issuer, oidc_client_id="wenzheng", oidc_client_secret="idp-secret",
                       oidc_redirect_uris=[REDIRECT], relay_enabled=False, consumer_enabled=False)


class Browser:
    """Starts a sign-in at intake, signs in at the IdP and brings the code back to intake's callback."""

    def __init__(self, client: Any, idp: FakeIdP) -> None:
        self.client, self.idp = client, idp

    async def start(self) -> dict[str, Any]:
        r = await self.client.get("/v1/auth/oidc/start", params={"redirect_uri": REDIRECT})
        assert r.status_code == 200, r.text
        return r.json()

    async def callback(self, code: str, state: str, **body: str) -> tuple[int, dict[str, Any]]:
        r = await self.client.post("/v1/auth/oidc/callback",
                                   json={"code": code, "state": state, "redirect_uri": REDIRECT, **body})
        return r.status_code, r.json()

    async def sign_in(self, username: str, **body: str) -> tuple[int, dict[str, Any]]:
        started = await self.start()
        return await self.callback(self.idp.authorize(started["authorization_url"], username), started["state"],
                                   **body)


async def test_oidc_sign_in_maps_the_username_claim_to_an_account(kafka_bootstrap, mongo_url, intake_topics,
                                                                 idp: FakeIdP) -> None:
    async with _intake(kafka_bootstrap, mongo_url, intake_topics, idp) as intake:
        client = intake.client
        browser = Browser(client, idp)
        providers = (await client.get("/v1/auth/providers")).json()
        assert providers["oidc"] == {"enabled": True, "label": "统一身份认证登录"}
        person_id = await create_person(intake.accounts, "li.si", ["unit_staff"], "zhanggong_gov")

        started = await browser.start()
        url = urlparse(started["authorization_url"])
        query = {k: v[0] for k, v in parse_qs(url.query).items()}
        assert f"{url.scheme}://{url.netloc}{url.path}" == f"{idp.issuer}/authorize"
        assert query["client_id"] == "wenzheng" and query["redirect_uri"] == REDIRECT
        assert query["state"] == started["state"] and "openid" in query["scope"]
        assert query["code_challenge_method"] == "S256" and len(query["nonce"]) >= 20
        assert started["state"] not in json.dumps(await intake.accounts.store.oidc_states.find_one({}), default=str)

        code = idp.authorize(started["authorization_url"], "li.si")
        status, signed = await browser.callback(code, started["state"])
        assert status == 200, signed
        assert signed["person"]["id"] == person_id
        me = await client.get("/v1/auth/me", headers={"Authorization": f"Bearer {signed['token']}"})
        assert me.json()["username"] == "li.si"
        sent = idp.token_calls[-1]
        assert sent["redirect_uri"] == REDIRECT and s256_challenge(sent["code_verifier"]) == query["code_challenge"]

        # a state works once: the same callback again (even with a fresh code) is refused
        status, body = await browser.callback(idp.authorize(started["authorization_url"], "li.si"), started["state"])
        assert status == 422 and body["error"]["field"] == "state"

        status, body = await browser.sign_in("nobody")
        assert (status, body["error"]) == (401, {"code": "invalid_credentials", "field": "code",
                                                 "message": "no enabled account matches this identity"})
        started = await browser.start()
        status, body = await browser.callback("bad-code", started["state"])
        assert status == 401 and body["error"]["code"] == "invalid_credentials"
        started = await browser.start()
        status, body = await browser.callback("code-x", started["state"][:-2] + "xx")
        assert status == 422 and body["error"]["field"] == "state"
        status, body = await browser.callback("code-x", started["state"], redirect_uri="https://evil.example.com/cb")
        assert status == 422 and body["error"]["field"] == "redirect_uri"
        other = await client.get("/v1/auth/oidc/start", params={"redirect_uri": "https://evil.example.com/cb"})
        assert other.status_code == 422
        assert idp.jwks_fetches == 1  # the provider's keys are cached

        await intake.accounts.store.people.update_one({"_id": person_id}, {"$set": {"disabled": True}})
        intake.accounts._forget_person(person_id)
        status, body = await browser.sign_in("li.si")
        assert status == 401 and body["error"]["code"] == "invalid_credentials"
        rows = (await client.get("/v1/admin/audit", params={"person_id": person_id},
                                 headers=intake.admin)).json()["items"]
        assert [r["action"] for r in rows][:1] == ["sign_in_failed"] and "sign_in" in [r["action"] for r in rows]


async def _refused(intake: Any, browser: Browser, *, field: str = "code", status: int = 401,
                   **sign_in: Any) -> dict[str, Any]:
    before = (await intake.client.get("/v1/admin/audit", params={"action": "sign_in_failed"},
                                      headers=intake.admin)).json()["total"]
    code, state = sign_in.pop("code", None), sign_in.pop("state", None)
    if code is not None:
        got, body = await browser.callback(code, state)
    else:
        got, body = await browser.sign_in("li.si")
    assert got == status, body
    assert set(body["error"]) == {"code", "message", "field"} and body["error"]["field"] == field
    after = (await intake.client.get("/v1/admin/audit", params={"action": "sign_in_failed"},
                                     headers=intake.admin)).json()["total"]
    assert after == before + 1  # every refusal is audited as a failed sign-in
    return body["error"]


async def test_oidc_refuses_an_id_token_that_does_not_check_out(kafka_bootstrap, mongo_url, intake_topics,
                                                              idp: FakeIdP) -> None:
    async with _intake(kafka_bootstrap, mongo_url, intake_topics, idp) as intake:
        browser = Browser(intake.client, idp)
        await create_person(intake.accounts, "li.si", ["unit_staff"], "zhanggong_gov")
        assert (await browser.sign_in("li.si"))[0] == 200

        idp.signing_key = rsa_key("k1")  # same key id, another key: a forged signature
        assert "signature" in (await _refused(intake, browser))["message"]
        idp.signing_key = rsa_key("k2")  # a key the provider never published (fetched again once, still unknown)
        await _refused(intake, browser)
        idp.signing_key = idp.key

        now = int(time.time())
        for claims in ({"aud": "someone-else"}, {"aud": ["wenzheng", "other"], "azp": "other"},
                       {"iss": "https://evil.example.com"}, {"exp": now - 3600, "iat": now - 7200},
                       {"iat": now + 3600, "exp": now + 7200}, {"nonce": "not-the-one-we-sent"}, {"nonce": None}):
            idp.overrides = {k: v for k, v in claims.items() if v is not None}
            if claims.get("nonce", "") is None:
                idp.overrides["nonce"] = ""
            await _refused(intake, browser)
        idp.overrides = {"exp": now - 30, "iat": now - 330}  # within the leeway
        assert (await browser.sign_in("li.si"))[0] == 200
        idp.overrides = {}
        assert (await browser.sign_in("li.si"))[0] == 200


async def test_oidc_refuses_a_reused_or_expired_state_and_a_wrong_pkce_verifier(kafka_bootstrap, mongo_url,
                                                                             intake_topics, idp: FakeIdP) -> None:
    async with _intake(kafka_bootstrap, mongo_url, intake_topics, idp) as intake:
        browser = Browser(intake.client, idp)
        await create_person(intake.accounts, "li.si", ["unit_staff"], "zhanggong_gov")

        # a code issued for one sign-in's challenge, brought back with another sign-in's state: the verifier
        # intake sends is the other one's, and the provider refuses the exchange
        first, second = await browser.start(), await browser.start()
        code = idp.authorize(first["authorization_url"], "li.si")
        await _refused(intake, browser, code=code, state=second["state"])
        assert s256_challenge(idp.token_calls[-1]["code_verifier"]) != parse_qs(
            urlparse(first["authorization_url"]).query)["code_challenge"][0]
        # the right pairing signs in, and only once
        code = idp.authorize(first["authorization_url"], "li.si")
        status, body = await browser.callback(code, first["state"])
        assert status == 200, body
        status, body = await browser.callback(idp.authorize(first["authorization_url"], "li.si"), first["state"])
        assert status == 422 and body["error"]["field"] == "state"  # reused

        started = await browser.start()
        code = idp.authorize(started["authorization_url"], "li.si")
        intake.clock.advance(timedelta(seconds=intake.settings.oidc_state_seconds + 1))
        error = await _refused(intake, browser, code=code, state=started["state"], field="state", status=422)
        assert "expired" in error["message"]


async def test_oidc_is_off_by_default(intake) -> None:
    r = await intake.client.get("/v1/auth/oidc/start", params={"redirect_uri": REDIRECT})
    assert r.status_code == 404 and r.json()["error"]["code"] == "oidc_disabled"
