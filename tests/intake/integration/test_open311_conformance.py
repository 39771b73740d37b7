"""Open311 GeoReport v2 conformance, in JSON and XML: every method, driven by the PyPI client ``georeport``
(0.3.1: the GET methods) where it works and by plain HTTP elsewhere (POST requests, tokens, discovery,
errors, extensions), against a real intake process over HTTP (Kafka and MongoDB behind it)."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from urllib.parse import quote

import httpx
import pytest
import xmltodict
from georeport import GeoReport
from requests import HTTPError

from harness.fuzz import running_intake_process
from services.common.config import TopicSettings
from services.common.events import RoutingDecision, make_event
from services.common.kafka import new_producer
from services.common.reference import reference

pytestmark = pytest.mark.integration
JURISDICTION = "ganzhou.gov.cn"
FORMATS = ["json", "xml"]


@pytest.fixture(scope="module")
def server(kafka_bootstrap: str, mongo_url: str, intake_topics: TopicSettings,
           tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict]:
    topic_env = {f"WENZHENG_TOPIC_{k.upper()}": v for k, v in intake_topics.model_dump().items()}
    with running_intake_process(kafka_bootstrap, mongo_url, topic_env, tmp_path_factory.mktemp("open311"),
                                "o311") as running:
        yield {"url": running["url"], "base": f"{running['url']}/open311/v2", "names": intake_topics,
               "bootstrap": kafka_bootstrap, "key": running["credentials"]["open311_api_keys"][0]}


def parse(fmt: str, response: httpx.Response) -> object:
    if fmt == "json":
        assert response.headers["content-type"].startswith("application/json")
        return response.json()
    assert response.headers["content-type"].startswith("text/xml") and response.text.startswith("<?xml")
    return xmltodict.parse(response.text)


def as_list(value: object) -> list:
    """xmltodict gives one element as a dict and several as a list."""
    if value is None:
        return []
    return value if isinstance(value, list) else [value]


def post(server: dict, fmt: str, form: dict[str, str], *, query: dict[str, str] | None = None,
         raw: bytes | None = None, content_type: str = "application/x-www-form-urlencoded") -> httpx.Response:
    url = f"{server['base']}/requests.{fmt}"
    if raw is not None:
        return httpx.post(url, content=raw, params=query, headers={"content-type": content_type}, timeout=30)
    return httpx.post(url, data=form, params=query, timeout=30)


def created(fmt: str, response: httpx.Response) -> dict:
    assert response.status_code == 201, response.text
    body = parse(fmt, response)
    return body[0] if fmt == "json" else body["service_requests"]["request"]


@pytest.mark.parametrize("fmt", FORMATS)
def test_discovery_and_services(server: dict, fmt: str) -> None:
    found = parse(fmt, httpx.get(f"{server['url']}/open311/discovery.{fmt}"))
    document = found if fmt == "json" else found["discovery"]
    endpoints = as_list(document["endpoints"] if fmt == "json" else document["endpoints"]["endpoint"])
    assert endpoints[0]["url"] == server["base"] and endpoints[0]["specification"].endswith("GeoReport_v2")
    formats = endpoints[0]["formats"] if fmt == "json" else as_list(endpoints[0]["formats"]["format"])
    assert set(formats) == {"application/json", "text/xml"}

    client = GeoReport(server["base"], jurisdiction=JURISDICTION, output_format=fmt)
    services = as_list(client.get_service_list())
    codes = {s["service_code"] for s in services}
    assert codes == {c.id for c in reference().taxonomy.categories}
    assert all(s["service_name"] and s["type"] == "realtime" for s in services)
    definition = client.get_service_definition("transport")
    assert definition["service_code"] == "transport"
    with pytest.raises(HTTPError) as missing:
        client.get_service_definition("nothing")
    assert missing.value.response.status_code == 404
    wrong = GeoReport(server["base"], jurisdiction="elsewhere.gov.cn", output_format=fmt)
    with pytest.raises(HTTPError) as elsewhere:
        wrong.get_service_list()
    assert elsewhere.value.response.status_code == 404


@pytest.mark.parametrize("fmt", FORMATS)
def test_post_and_read_requests(server: dict, fmt: str) -> None:
    key = server["key"]
    # a raw UTF-8 body (not percent-encoded), the phone as people write it, api_key in the query string
    raw = ("service_code=urban_management&description=红旗大道井盖缺失，晚上很危险&address_string=章贡区红旗大道"
           "&phone=+86 136-0000-0003&first_name=建华&last_name=王").replace("+", "%2B").encode("utf-8")
    first = created(fmt, post(server, fmt, {}, raw=raw, query={"api_key": key, "jurisdiction_id": JURISDICTION}))
    # an e-mail-only citizen with a position
    second = created(fmt, post(server, fmt, {"api_key": key, "service_code": "transport", "lat": "25.83",
                                             "long": "114.93", "description": "公交站台顶棚破损",
                                             "email": "citizen@example.cn"}))
    ids = [first["service_request_id"], second["service_request_id"]]
    assert all(first.get("token")) and second["service_notice"]

    client = GeoReport(server["base"], jurisdiction=JURISDICTION, output_format=fmt)
    one = client.get_service_request(ids[0])
    assert one["description"] == "红旗大道井盖缺失，晚上很危险"  # decoded right, stored right
    assert one["service_code"] == "urban_management" and one["status"] == "open"
    assert one["service_name"] == reference().category("urban_management").name
    listed = as_list(client.get_service_requests(service_request_id=",".join(ids)))
    assert sorted(r["service_request_id"] for r in listed) == sorted(ids)
    by_code = as_list(client.get_service_requests(service_code="urban_management,transport", status="open,closed"))
    assert set(ids) <= {r["service_request_id"] for r in by_code}
    only_transport = {r["service_request_id"] for r in as_list(client.get_service_requests(service_code="transport"))}
    assert ids[1] in only_transport and ids[0] not in only_transport
    # an empty answer by plain HTTP: georeport 0.3.1 cannot read an empty XML list (<service_requests/>)
    closed = parse(fmt, httpx.get(f"{server['base']}/requests.{fmt}", params={"status": "closed"}))
    closed_list = closed if fmt == "json" else as_list((closed["service_requests"] or {}).get("request"))
    assert ids[0] not in {r["service_request_id"] for r in closed_list}
    start = (datetime.now(UTC) - timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
    recent = as_list(client.get_service_requests(start_date=start, service_code="urban_management"))
    assert ids[0] in {r["service_request_id"] for r in recent}
    for r in listed:  # nothing that identifies the citizen
        text = json.dumps(r, ensure_ascii=False)
        assert "13600000003" not in text and "王" not in text and "citizen@example.cn" not in text

    token = first["token"]
    found = parse(fmt, httpx.get(f"{server['base']}/tokens/{token}.{fmt}"))
    entry = found[0] if fmt == "json" else found["service_requests"]["request"]
    assert entry["service_request_id"] == ids[0] and entry["token"] == token


@pytest.mark.parametrize("fmt", FORMATS)
def test_the_requested_code_stays_when_the_router_chooses_another(server: dict, fmt: str) -> None:
    answer = created(fmt, post(server, fmt, {"api_key": server["key"], "service_code": "transport",
                                             "description": "路边垃圾桶满了没人清", "address_string": "章贡区南门口"}))
    tracking, case_id = answer["service_request_id"], answer["token"]
    asyncio.run(_route(server, case_id, "urban_management", "zhanggong_gov"))
    client = GeoReport(server["base"], output_format=fmt)

    def routed() -> dict | None:
        view = parse(fmt, httpx.get(f"{server['base']}/requests/{tracking}.{fmt}", params={"extensions": "true"}))
        request = view[0] if fmt == "json" else view["service_requests"]["request"]
        return request if request["agency_responsible"] else None

    request = _eventually(routed)
    assert request["service_code"] == "transport"  # what the client asked for
    assert request["extended_attributes"]["routed_service_code"] == "urban_management"
    assert request["agency_responsible"] == reference().unit_name("zhanggong_gov")
    notes = request["notes"] if fmt == "json" else as_list(request["notes"]["note"])
    assert [n["type"] for n in notes][:2] == ["submitted", "assigned"]
    mine = as_list(client.get_service_requests(service_code="transport"))
    assert tracking in {r["service_request_id"] for r in mine}  # a client filtering by its code finds it


@pytest.mark.parametrize("fmt", FORMATS)
def test_errors_and_pages(server: dict, fmt: str) -> None:
    r = post(server, fmt, {"api_key": "wrong", "service_code": "transport", "description": "x", "address_string": "y"})
    assert r.status_code == 403
    errors = parse(fmt, r)
    error = errors[0] if fmt == "json" else errors["errors"]["error"]
    assert int(error["code"]) == 403 and "api_key" in error["description"]
    r = post(server, fmt, {"api_key": server["key"], "service_code": "transport", "description": "x",
                           "address_string": "y", "phone": "12345"})
    assert r.status_code == 400 and "phone" in r.text
    r = post(server, fmt, {"api_key": server["key"], "service_code": "transport", "description": "没有位置"})
    assert r.status_code == 400 and "location" in r.text
    r = httpx.get(f"{server['base']}/requests/WZ0000-AAAA-BBBB.{fmt}")
    assert r.status_code == 404 and parse(fmt, r)
    r = httpx.get(f"{server['base']}/requests.{fmt}", params={"start_date": "2026-11-01T00:00:00"})
    assert r.status_code == 400 and "time zone" in r.text
    page1 = parse(fmt, httpx.get(f"{server['base']}/requests.{fmt}", params={"page": 1, "page_size": 1}))
    page2 = parse(fmt, httpx.get(f"{server['base']}/requests.{fmt}", params={"page": 2, "page_size": 1}))
    first = page1 if fmt == "json" else as_list(page1["service_requests"]["request"])
    second = page2 if fmt == "json" else as_list(page2["service_requests"]["request"])
    assert len(first) == len(second) == 1 and first[0]["service_request_id"] != second[0]["service_request_id"]


def test_a_gbk_form_body_is_decoded_by_its_charset(server: dict) -> None:
    raw = f"api_key={quote(server['key'])}&service_code=transport&description=红绿灯不亮&address_string=南康区".encode(
        "gbk")
    answer = created("json", post(server, "json", {}, raw=raw,
                                  content_type="application/x-www-form-urlencoded; charset=GBK"))
    view = httpx.get(f"{server['base']}/requests/{answer['service_request_id']}.json").json()[0]
    assert view["description"] == "红绿灯不亮" and view["address"] == "南康区"


async def _route(server: dict, case_id: str, category: str, unit_id: str) -> None:
    decision = RoutingDecision(
        decision_id=f"d-{uuid.uuid4().hex[:12]}", case_id=case_id, source_event_id="e", source_version=1,
        routing_round=1, outcome="assigned", category=category, category_name=reference().category_name(category),
        department_id=unit_id, department_name=reference().unit_name(unit_id), working_days=5, confidence=0.9,
        model_version="test", decided_at=datetime.now(UTC))
    producer = new_producer(server["bootstrap"])
    await producer.start()
    try:
        event = make_event(decision, source="urn:test:router")
        await producer.send_and_wait(server["names"].routing_decisions, event.to_json(), key=event.key)
    finally:
        await producer.stop()


def _eventually(check, timeout: float = 60):
    import time
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if result := check():
            return result
        time.sleep(0.2)
    raise AssertionError("gave up waiting")
