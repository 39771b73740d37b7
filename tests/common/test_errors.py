"""The one error shape: a small app with the common handlers and body limits (pure, in-process ASGI)."""

from __future__ import annotations

import json

import httpx
import pytest
from fastapi import FastAPI
from pydantic import BaseModel

from services.common.errors import ApiError, BodyLimits, document_errors, install_error_handlers, json_error_path


class Inner(BaseModel):
    lat: float


class Thing(BaseModel):
    name: str
    where: Inner
    tags: list[int] = []


def make_app() -> FastAPI:
    app = FastAPI()
    install_error_handlers(app)

    @app.post("/things")
    async def create(thing: Thing) -> dict:
        if thing.name == "taken":
            raise ApiError(409, "name_taken", "that name is taken", "name")
        return {"ok": True}

    @app.get("/metrics")
    async def metrics() -> str:
        return "x 1\n"

    app.add_middleware(BodyLimits, max_bytes=2048, max_depth=5)
    document_errors(app, text_paths={"/metrics": "text/plain"})
    return app


@pytest.fixture
async def client():
    transport = httpx.ASGITransport(app=make_app())
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as http:
        yield http


def _error(response: httpx.Response) -> dict:
    body = response.json()
    assert set(body) == {"error"} and {"code", "message", "field"} <= set(body["error"]), body
    return body["error"]


async def test_validation_errors_name_the_json_path(client) -> None:
    r = await client.post("/things", json={"name": "a", "where": {"lat": "north"}})
    assert r.status_code == 422 and _error(r)["field"] == "where.lat"
    r = await client.post("/things", json={"name": "a", "where": {"lat": 1}, "tags": [1, "x"]})
    assert _error(r)["field"] == "tags[1]" and _error(r)["code"] == "validation_error"
    r = await client.post("/things", json={"name": "taken", "where": {"lat": 1}})
    assert r.status_code == 409 and _error(r) == {"code": "name_taken", "message": "that name is taken",
                                                  "field": "name"}


async def test_unparsable_json_names_the_path_not_an_offset(client) -> None:
    raw = '{"name": "a", "where": {"lat": 1,, }}'
    r = await client.post("/things", content=raw, headers={"content-type": "application/json"})
    assert r.status_code == 422 and _error(r)["code"] == "invalid_json"
    assert _error(r)["field"] == "where" and "line 1" in _error(r)["message"]
    r = await client.post("/things", content=b'{"name": "\xff"}', headers={"content-type": "application/json"})
    assert r.status_code == 422 and _error(r)["code"] == "invalid_json"


async def test_over_deep_json_is_refused_at_its_path(client) -> None:
    deep = {"name": "a", "where": {"lat": 1}, "tags": [[[[[[1]]]]]]}
    r = await client.post("/things", json=deep)
    assert r.status_code == 422 and _error(r)["code"] == "json_too_deep"
    assert _error(r)["field"] == "tags[0][0][0][0]"  # the array that opens the sixth level
    r = await client.post("/things", content="[" * 100000, headers={"content-type": "application/json"})
    assert r.status_code == 413  # bigger than the limit: refused before anything is parsed


async def test_over_size_bodies_are_refused_with_the_limit(client) -> None:
    big = json.dumps({"name": "a" * 5000, "where": {"lat": 1}})
    r = await client.post("/things", content=big, headers={"content-type": "application/json"})
    assert r.status_code == 413 and _error(r)["code"] == "body_too_large" and _error(r)["limit_bytes"] == 2048

    async def chunks():  # no Content-Length: counted while it streams in
        for _ in range(10):
            yield b" " * 1000

    r = await client.post("/things", content=chunks(), headers={"content-type": "application/json"})
    assert r.status_code == 413 and _error(r)["field"] == "body"


async def test_unknown_routes_and_methods_answer_the_envelope(client) -> None:
    r = await client.get("/nope")
    assert r.status_code == 404 and _error(r)["code"] == "not_found"
    r = await client.delete("/things")
    assert r.status_code == 405 and _error(r)["code"] == "method_not_allowed" and r.headers["allow"] == "POST"


async def test_the_openapi_documents_the_envelope(client) -> None:
    spec = (await client.get("/openapi.json")).json()
    answers = spec["paths"]["/things"]["post"]["responses"]
    assert {"413", "422"} <= set(answers)
    assert answers["422"]["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/ErrorBody"}
    assert "HTTPValidationError" not in spec["components"]["schemas"]
    assert list(spec["paths"]["/metrics"]["get"]["responses"]["200"]["content"]) == ["text/plain"]


def test_json_error_path() -> None:
    text = '{"a": [1, {"b": tru}]}'
    assert json_error_path(text, text.index("tru")) == "a[1].b"
    assert json_error_path("nonsense", 0) == "body"
