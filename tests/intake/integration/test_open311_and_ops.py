"""Open311 GeoReport v2, rate limits, credentials, health and metrics."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import datetime, timedelta
from pathlib import Path

import pytest

from services.common.config import TopicSettings
from tests.intake.conftest import Intake, a_post, open_intake, random_phone

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[3]


async def test_open311_services_and_requests(intake: Intake) -> None:
    services = (await intake.client.get("/open311/v2/services.json")).json()
    codes = [s["service_code"] for s in services]
    assert "urban_management" in codes and all(s["service_name"] for s in services)
    assert (await intake.client.get("/open311/v2/services/transport.json")).json()["service_code"] == "transport"
    assert (await intake.client.get("/open311/v2/services/nope.json")).status_code == 404

    key = intake.credentials["open311_api_keys"][0]
    phone = random_phone()
    form = {"api_key": key, "service_code": "transport", "description": "公交站台顶棚破损，下雨漏水",
            "lat": "25.83", "long": "114.93", "address_string": "红旗大道", "phone": phone, "first_name": "王"}
    r = await intake.client.post("/open311/v2/requests.json", data=form)
    assert r.status_code == 201, r.text
    [created] = r.json()
    request_id = created["service_request_id"]
    assert set(created) == {"service_request_id", "token", "service_notice", "account_id"}
    doc = await intake.case_doc(request_id)
    assert doc["channel"] == "open311" and doc["requested_category"] == "transport"

    [one] = (await intake.client.get(f"/open311/v2/requests/{request_id}.json")).json()
    assert one["status"] == "open" and one["description"] == "公交站台顶棚破损，下雨漏水"
    assert {"status_notes", "agency_responsible", "service_name", "requested_datetime", "updated_datetime",
            "expected_datetime"} <= set(one)
    listed = (await intake.client.get("/open311/v2/requests.json",
                                      params={"service_request_id": request_id, "status": "open"})).json()
    assert [x["service_request_id"] for x in listed] == [request_id]
    closed = (await intake.client.get("/open311/v2/requests.json",
                                      params={"service_request_id": request_id, "status": "closed"})).json()
    assert [x["service_request_id"] for x in closed] == [request_id]  # the spec: ids override the rest
    closed = (await intake.client.get("/open311/v2/requests.json", params={"status": "closed"})).json()
    assert request_id not in [x["service_request_id"] for x in closed]
    assert phone not in json.dumps(listed, ensure_ascii=False) and "王" not in json.dumps(listed, ensure_ascii=False)

    requested = datetime.fromisoformat(one["requested_datetime"])
    assert requested.utcoffset() is not None, "Open311 datetimes carry their zone"
    around = {"service_code": "transport", "start_date": (requested - timedelta(minutes=1)).isoformat(),
              "end_date": (requested + timedelta(minutes=1)).isoformat()}
    found = (await intake.client.get("/open311/v2/requests.json", params=around)).json()
    assert request_id in [x["service_request_id"] for x in found]
    later = {**around, "start_date": (requested + timedelta(seconds=1)).isoformat()}
    found = (await intake.client.get("/open311/v2/requests.json", params=later)).json()
    assert request_id not in [x["service_request_id"] for x in found]
    naive = await intake.client.get("/open311/v2/requests.json", params={"start_date": "2026-11-01T00:00:00"})
    assert naive.status_code == 400 and "time zone" in naive.json()[0]["description"]

    r = await intake.client.post("/open311/v2/requests.json", data={**form, "api_key": "wrong"})
    assert r.status_code == 403 and r.json()[0]["code"] == 403
    r = await intake.client.post("/open311/v2/requests.json", data={**form, "service_code": "nope"})
    assert r.status_code == 400 and "service_code" in r.json()[0]["description"]


async def test_rate_limits_answer_429_with_retry_after(kafka_bootstrap: str, mongo_url: str,
                                                       test_topics: TopicSettings, run_id: str) -> None:
    async with open_intake(kafka_bootstrap, mongo_url, test_topics, f"rl_{run_id}", rate_limit_per_phone=2,
                           rate_limit_per_ip=1000, relay_enabled=False, consumer_enabled=False) as limited:
        phone = random_phone()
        for _ in range(2):
            assert (await limited.client.post("/v1/posts", json=a_post(phone=phone))).status_code == 201
        r = await limited.client.post("/v1/posts", json=a_post(phone=phone))
        assert r.status_code == 429 and int(r.headers["Retry-After"]) >= 1
        assert r.json()["error"]["field"] == "contact_phone"
        assert (await limited.client.post("/v1/posts", json=a_post())).status_code == 201  # another phone


async def test_health_readiness_and_metrics(intake: Intake) -> None:
    assert (await intake.client.get("/healthz")).json() == {"status": "alive"}
    ready = await intake.client.get("/readyz")
    assert ready.status_code == 200, ready.text
    text = (await intake.client.get("/metrics")).text
    for name in ("wenzheng_intake_posts_total", "wenzheng_intake_commands_total",
                 "wenzheng_intake_outbox_backlog_events", "wenzheng_intake_outbox_oldest_age_seconds",
                 "wenzheng_intake_consumer_lag_messages", "http_requests_total"):
        assert name in text


def test_credentials_command_writes_the_open311_key_once(tmp_path: Path) -> None:
    path = tmp_path / "local" / "credentials.json"
    first = subprocess.run([sys.executable, "-m", "services.intake", "credentials", "--ensure", str(path)],
                           cwd=ROOT, capture_output=True, text=True, check=True)
    assert str(path) in first.stdout
    content = json.loads(path.read_text(encoding="utf-8"))
    assert content["open311_api_keys"]  # people sign in with their own accounts now (see test_accounts.py)
    subprocess.run([sys.executable, "-m", "services.intake", "credentials", "--ensure", str(path)],
                   cwd=ROOT, capture_output=True, check=True)
    assert json.loads(path.read_text(encoding="utf-8")) == content  # never overwritten
    assert (path.stat().st_mode & 0o077) == 0


@pytest.mark.parametrize(("missing", "named"), [("WENZHENG_INTAKE_SMS_GATEWAY_TOKEN", "SMS_GATEWAY_TOKEN"),
                                               ("WENZHENG_INTAKE_SECRET", "WENZHENG_INTAKE_SECRET")])
def test_production_refuses_to_start_without_its_secrets(tmp_path: Path, missing: str, named: str) -> None:
    credentials = tmp_path / "credentials.json"
    credentials.write_text(json.dumps({"open311_api_keys": ["an-open311-key-of-some-length"]}))
    env = {"WENZHENG_ENVIRONMENT": "production", "WENZHENG_INTAKE_CREDENTIALS_FILE": str(credentials),
           "WENZHENG_INTAKE_SECRET": "a-production-secret", "WENZHENG_INTAKE_SMS_GATEWAY_TOKEN": "a-gateway-secret",
           "PATH": "/usr/bin:/bin"}
    env[missing] = str(tmp_path / "none.json") if missing.endswith("_FILE") else ""
    result = subprocess.run([sys.executable, "-c", "from services.intake.__main__ import app_factory; app_factory()"],
                            cwd=ROOT, capture_output=True, text=True, env=env)
    assert result.returncode != 0 and "refusing to start" in result.stderr
    assert named in result.stderr
