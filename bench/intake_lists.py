"""Intake's lists, counts and public board at 100,000 cases, answered from the in-memory index.

Seeds a fresh intake database with cases shaped by intake's own document builder (1,000 posts built and
redacted by ``IntakeService``, each cloned with new ids, times, units, states and deadlines), inserted with
``insert_many`` in batches; then starts intake in this process (the real app over ASGI, no Kafka: relay,
decision consumer and follower off) and times requests as the portal makes them. Prints the index's load
time, the process's resident memory before and after the load, and p50/p95/p99 per request kind.

    .venv/bin/python -m bench.intake_lists [--cases 100000] [--requests 200]

Times are per request through the app (routing, auth, the index, the page's documents read by _id,
JSON), on a machine shared with Kafka, the database server and other work: note the load average printed.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import os
import random
import statistics
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx

from services.common.clock import SystemClock
from services.common.config import CommonSettings, common_settings
from services.common.events import Channel, Location
from services.common.mongo import new_client
from services.common.reference import reference
from services.common.workdays import default_calendar
from services.intake import domain
from services.intake.accounts import Role
from services.intake.api import create_app
from services.intake.auth import Credentials
from services.intake.config import IntakeSettings
from services.intake.handlers import BoardFilter, IntakeService, NewPost, board_query, new_case_id, new_tracking_number
from services.intake.store import CaseStore, case_from_doc, case_to_fields

PLACES = [("章贡区", "水西镇"), ("南康区", "唐江镇"), ("赣县区", "梅林镇"), ("于都县", "贡江镇"), ("瑞金市", "象湖镇")]
SUBJECTS = ["小区门口路灯坏了半个月，晚上很黑", "楼下烧烤店油烟太大，每天营业到凌晨", "公交站台顶棚破损，下雨漏水",
            "孩子入学报名系统一直打不开", "工地夜间施工噪音扰民", "农村道路坑洼不平，雨天无法通行",
            "医保异地结算手续太复杂", "公司拖欠工资三个月"]
STATES = [domain.CaseStatus.ASSIGNED, domain.CaseStatus.SIGNED, domain.CaseStatus.EXTENDED,
          domain.CaseStatus.REPLIED, domain.CaseStatus.RATED, domain.CaseStatus.REOPENED, domain.CaseStatus.CLOSED,
          domain.CaseStatus.CLOSED, domain.CaseStatus.CLOSED, domain.CaseStatus.TRIAGE]
PASSWORD = "bench-password-1"


def rss_mib() -> float:
    with open("/proc/self/status") as status:
        kib = next(int(line.split()[1]) for line in status if line.startswith("VmRSS:"))
    return kib / 1024


def templates(service: IntakeService, rng: random.Random, count: int) -> list[dict[str, Any]]:
    """Case documents exactly as intake writes them for a new post (redaction included)."""
    docs = []
    for n in range(count):
        county, township = rng.choice(PLACES)
        subject = rng.choice(SUBJECTS)
        post = NewPost(channel=rng.choice(list(Channel)[:3]), title=f"{township}{subject[:20]}",
                       body=f"{county}{township}{subject}。已经反映过多次，希望尽快处理。编号{n}" * rng.randint(1, 3),
                       contact_phone=f"139{rng.randrange(10**8):08d}", name=rng.choice(["张先生", "李女士", None]),
                       location=Location(county=county, township=township, address=f"{rng.randint(1, 300)}号"))
        docs.append(service._new_case_document(post, None, post.fingerprint()))
    return docs


def varied(template: dict[str, Any], rng: random.Random, now: datetime, units: list[Any]) -> dict[str, Any]:
    """A clone of ``template`` as a case somewhere along its life: its own ids, time, unit, state, deadline."""
    case = case_from_doc(template)
    created = now - timedelta(seconds=rng.randrange(365 * 86400))
    created = created.replace(microsecond=created.microsecond // 1000 * 1000)
    unit = rng.choice(units)
    case = dataclasses.replace(
        case, case_id=new_case_id(), tracking_number=new_tracking_number(created), version=3,
        created_at=created, status=rng.choice(STATES), department_id=unit.id, department_name=unit.name,
        category="urban_management", category_name="城市管理",
        deadline=now + timedelta(hours=rng.randint(-240, 240)), flagged=rng.random() < 0.02)
    return {**template, **case_to_fields(case), "_id": case.case_id, "idempotency_key": f"auto:{case.case_id}",
            "updated_at": created, "outbox": [], "outbox_count": 0}


async def seed(settings: IntakeSettings, common: CommonSettings, cases: int) -> float:
    client = new_client(common.mongo_url)
    store = CaseStore(client[settings.database])
    service = IntakeService(store, settings, SystemClock(), reference(), calendar=default_calendar())
    rng = random.Random(14)
    models = templates(service, rng, 1000)
    units = list(reference().units.units)
    now = datetime.now(UTC)
    started = time.monotonic()
    for start in range(0, cases, 1000):
        docs = [varied(rng.choice(models), rng, now, units) for _ in range(min(1000, cases - start))]
        await store.cases.insert_many(docs, ordered=False)
        await store.by_tracking.insert_many([{"_id": d["tracking_number"], "case_id": d["_id"]} for d in docs])
    seconds = time.monotonic() - started
    await client.close()
    return seconds


def percentiles(samples: list[float]) -> str:
    cuts = statistics.quantiles(samples, n=100, method="inclusive")
    return f"p50 {cuts[49]:7.1f} ms  p95 {cuts[94]:7.1f} ms  p99 {cuts[98]:7.1f} ms"


async def timed(client: httpx.AsyncClient, path: str, params: dict[str, Any], headers: dict[str, str],
                requests: int) -> list[float]:
    samples = []
    for _ in range(requests):
        started = time.perf_counter()
        response = await client.get(path, params=params, headers=headers)
        samples.append((time.perf_counter() - started) * 1000)
        assert response.status_code == 200, response.text
    return samples


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--cases", type=int, default=100_000)
    parser.add_argument("--requests", type=int, default=200)
    args = parser.parse_args()
    run = uuid.uuid4().hex[:8]
    common = common_settings().model_copy(update={"environment": "test"})
    settings = IntakeSettings(database=f"wenzheng_intake_bench_{run}", relay_enabled=False, consumer_enabled=False,
                              follow_case_events=False, password_time_cost=1, password_memory_kib=1024,
                              password_parallelism=1, rate_limit_enabled=False, login_rate_per_ip=100_000,
                              attachments_dir=tempfile.mkdtemp(prefix="wz-bench-"), credentials_file="/nonexistent")
    try:
        seeded = await seed(settings, common, args.cases)
        print(f"seeded {args.cases} cases in {seeded:.1f} s")
        app = create_app(settings, common=common, credentials=Credentials.empty())
        before = rss_mib()
        started = time.monotonic()
        async with app.router.lifespan_context(app):
            start_up = time.monotonic() - started
            runtime = app.state.runtime
            print(f"start-up {start_up:.1f} s; RSS {before:.0f} MiB before, {rss_mib():.0f} MiB after "
                  f"(+{rss_mib() - before:.0f} MiB with the index of {len(runtime.store.index)} cases)")
            print(f"index load (one projected scan, batches of 5,000): {runtime.index_load_seconds:.1f} s")
            unit = max(reference().units.units, key=lambda u: u.id == "zhanggong_gov").id
            for username, roles, unit_id in (("bench_unit", [Role.UNIT_STAFF], unit),
                                             ("bench_supervisor", [Role.SUPERVISOR], None)):
                await runtime.accounts.create_person(None, username=username, display_name=username, roles=roles,
                                                     unit_id=unit_id, password=PASSWORD, must_change_password=False)
            transport = httpx.ASGITransport(app=app, client=("10.0.0.9", 5555))
            async with httpx.AsyncClient(transport=transport, base_url="http://intake") as client:
                headers = {}
                for username in ("bench_unit", "bench_supervisor"):
                    token = (await client.post("/v1/auth/login", json={"username": username,
                                                                      "password": PASSWORD})).json()["token"]
                    headers[username] = {"Authorization": f"Bearer {token}"}
                staff, supervisor = headers["bench_unit"], headers["bench_supervisor"]
                kinds: list[tuple[str, str, dict[str, Any], dict[str, str]]] = [
                    ("board", "/v1/public/cases", {}, {}),
                    ("board, county", "/v1/public/cases", {"county": "南康区"}, {}),
                    ("board, keyword", "/v1/public/cases", {"q": "路灯"}, {}),
                    *[(f"unit list, {b.value}", "/v1/cases", {"bucket": b.value}, staff) for b in domain.Bucket],
                    ("unit list, all", "/v1/cases", {}, staff),
                    ("inbox counts, unit", "/v1/inbox/counts", {}, staff),
                    ("inbox counts, city", "/v1/inbox/counts", {}, supervisor),
                    ("notices, city", "/v1/notices", {}, supervisor),
                ]
                print(f"{args.requests} sequential requests each; load average {os.getloadavg()[0]:.2f}")
                for name, path, params, who in kinds:
                    samples = await timed(client, path, params, who, args.requests)
                    print(f"  {name:28s} {percentiles(samples)}")
                index = runtime.store.index
                query_ms = []
                for q in (board_query(BoardFilter()), board_query(BoardFilter(q="路灯")),
                          board_query(BoardFilter(county="南康区"))):
                    started_q = time.perf_counter()
                    index.find(q, offset=0, limit=20)
                    query_ms.append((time.perf_counter() - started_q) * 1000)
                print("  index alone (board plain, keyword, county): "
                      + ", ".join(f"{ms:.2f} ms" for ms in query_ms))
            print(f"load average at the end {os.getloadavg()[0]:.2f}")
    finally:
        client = new_client(common.mongo_url)
        await client.drop_database(settings.database)
        await client.close()


if __name__ == "__main__":
    asyncio.run(main())
