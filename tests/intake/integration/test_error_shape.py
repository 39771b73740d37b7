"""Intake answers every 4xx in the one envelope, body limits and parse errors included; Open311 in its own
GeoReport shape."""

from __future__ import annotations

import json

from tests.intake.conftest import Intake, a_post


def _error(response) -> dict:
    body = response.json()
    assert set(body) == {"error"} and {"code", "message", "field"} <= set(body["error"]), body
    return body["error"]


async def test_posts_refuse_bad_bodies_in_the_envelope(intake: Intake) -> None:
    huge = json.dumps(a_post(body="长" * 40000), ensure_ascii=False)
    r = await intake.client.post("/v1/posts", content=huge, headers={"content-type": "application/json"})
    assert r.status_code == 413 and _error(r)["limit_bytes"] == intake.app.state.runtime.settings.max_body_bytes
    r = await intake.client.post("/v1/posts", content='{"title": "x", "location": {"county": }}',
                                 headers={"content-type": "application/json"})
    assert r.status_code == 422 and _error(r)["code"] == "invalid_json" and _error(r)["field"] == "location.county"
    nested = '{"title": ' + "[" * 40 + "]" * 40 + "}"
    r = await intake.client.post("/v1/posts", content=nested, headers={"content-type": "application/json"})
    assert r.status_code == 422 and _error(r)["code"] == "json_too_deep" and _error(r)["field"].startswith("title")
    r = await intake.client.post("/v1/posts", json=a_post(location={"lat": "north"}))
    assert r.status_code == 422 and _error(r)["field"] == "location.lat"
    r = await intake.client.post("/v1/posts", json=a_post(attachments=["ftp://x"]))
    assert r.status_code == 422 and _error(r)["field"] == "attachments[0]"
    r = await intake.client.get("/v1/nowhere")
    assert r.status_code == 404 and _error(r)["code"] == "not_found"


async def test_open311_keeps_its_own_error_shape_for_limits(intake: Intake) -> None:
    key = intake.credentials["open311_api_keys"][0]
    form = {"api_key": key, "service_code": "transport", "description": "长" * 30000, "address_string": "x"}
    r = await intake.client.post("/open311/v2/requests.json", data=form)
    assert r.status_code == 413 and r.json()[0]["code"] == 413
    r = await intake.client.post("/open311/v2/requests.xml", data=form)
    assert r.status_code == 413 and r.text.startswith("<?xml") and "<code>413</code>" in r.text
