"""OpenID Connect sign-in against a small local fake identity provider (discovery, token, userinfo on
127.0.0.1): the IdP's user name claim is mapped to an existing, enabled account; nobody is created."""

from __future__ import annotations

import base64
import json
import threading
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlparse

import pytest

from tests.harness.people import create_person
from tests.intake.conftest import open_intake

pytestmark = pytest.mark.integration
REDIRECT = "https://portal.example.cn/auth/callback"


class FakeIdP:
    """Issues one code per user name (``code-<username>``); checks the client's secret at the token endpoint."""

    def __init__(self, client_id: str, client_secret: str) -> None:
        idp = self
        self.token_calls: list[dict[str, Any]] = []

        class Handler(BaseHTTPRequestHandler):
            def _json(self, status: int, body: dict[str, Any]) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self) -> None:
                if self.path == "/.well-known/openid-configuration":
                    base = idp.issuer
                    self._json(200, {"issuer": base, "authorization_endpoint": f"{base}/authorize",
                                     "token_endpoint": f"{base}/token", "userinfo_endpoint": f"{base}/userinfo"})
                elif self.path == "/userinfo":
                    token = self.headers.get("Authorization", "").removeprefix("Bearer ")
                    if not token.startswith("at-"):
                        self._json(401, {"error": "invalid_token"})
                    else:
                        self._json(200, {"sub": "s-1", "preferred_username": token.removeprefix("at-")})
                else:
                    self._json(404, {})

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", 0))
                form = {k: v[0] for k, v in parse_qs(self.rfile.read(length).decode()).items()}
                basic = base64.b64decode(self.headers.get("Authorization", "Basic ").split(" ", 1)[1] or b"").decode()
                idp.token_calls.append(form)
                if basic != f"{client_id}:{client_secret}" or not form.get("code", "").startswith("code-"):
                    self._json(400, {"error": "invalid_grant"})
                    return
                self._json(200, {"access_token": "at-" + form["code"].removeprefix("code-"), "token_type": "Bearer",
                                 "expires_in": 300})

            def log_message(self, *_args: Any) -> None:
                return None

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.issuer = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

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


async def test_oidc_sign_in_maps_the_username_claim_to_an_account(kafka_bootstrap, mongo_url, intake_topics,
                                                                 idp: FakeIdP) -> None:
    async with open_intake(kafka_bootstrap, mongo_url, intake_topics, f"oidc_{uuid.uuid4().hex[:8]}",
                           oidc_issuer=idp.issuer, oidc_client_id="wenzheng", oidc_client_secret="idp-secret",
                           oidc_redirect_uris=[REDIRECT], relay_enabled=False, consumer_enabled=False) as intake:
        client = intake.client
        providers = (await client.get("/v1/auth/providers")).json()
        assert providers["oidc"] == {"enabled": True, "label": "统一身份认证登录"}
        person_id = await create_person(intake.accounts, "li.si", ["unit_staff"], "zhanggong_gov")

        start = await client.get("/v1/auth/oidc/start", params={"redirect_uri": REDIRECT})
        assert start.status_code == 200, start.text
        url = urlparse(start.json()["authorization_url"])
        query = {k: v[0] for k, v in parse_qs(url.query).items()}
        assert f"{url.scheme}://{url.netloc}{url.path}" == f"{idp.issuer}/authorize"
        assert query["client_id"] == "wenzheng" and query["redirect_uri"] == REDIRECT
        assert query["state"] == start.json()["state"] and "openid" in query["scope"]

        state = start.json()["state"]
        signed = await client.post("/v1/auth/oidc/callback",
                                   json={"code": "code-li.si", "state": state, "redirect_uri": REDIRECT})
        assert signed.status_code == 200, signed.text
        assert signed.json()["person"]["id"] == person_id
        me = await client.get("/v1/auth/me", headers={"Authorization": f"Bearer {signed.json()['token']}"})
        assert me.json()["username"] == "li.si"
        assert idp.token_calls[-1]["redirect_uri"] == REDIRECT

        async def callback(**body: str) -> tuple[int, dict[str, Any]]:
            r = await client.post("/v1/auth/oidc/callback", json={"code": "code-li.si", "state": state,
                                                                  "redirect_uri": REDIRECT, **body})
            return r.status_code, r.json().get("error", {})
        assert await callback(code="code-nobody") == (401, {"code": "invalid_credentials", "field": "code",
                                                            "message": "no enabled account matches this identity"})
        status, error = await callback(code="bad-code")
        assert status == 401 and error["code"] == "invalid_credentials"
        status, error = await callback(state=state[:-2] + "xx")
        assert status == 422 and error["field"] == "state"
        status, error = await callback(redirect_uri="https://evil.example.com/cb")
        assert status == 422 and error["field"] == "redirect_uri"
        other = await client.get("/v1/auth/oidc/start", params={"redirect_uri": "https://evil.example.com/cb"})
        assert other.status_code == 422

        await intake.accounts.store.people.update_one({"_id": person_id}, {"$set": {"disabled": True}})
        status, error = await callback()
        assert status == 401 and error["code"] == "invalid_credentials"
        rows = (await client.get("/v1/admin/audit", params={"person_id": person_id},
                                 headers=intake.admin)).json()["items"]
        assert [r["action"] for r in rows][:1] == ["sign_in_failed"] and "sign_in" in [r["action"] for r in rows]


async def test_oidc_is_off_by_default(intake) -> None:
    r = await intake.client.get("/v1/auth/oidc/start", params={"redirect_uri": REDIRECT})
    assert r.status_code == 404 and r.json()["error"]["code"] == "oidc_disabled"
