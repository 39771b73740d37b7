"""The real platform as processes (intake, router, notifier, stats and the portal, as `make run` starts them)
with demo people, and one Debian Chromium driven by Playwright, shared by a module's browser tests.

Each page a test visits gets a screenshot under var/screens/ and an axe-core check (axe from npm, served
by the portal under /static/vendor/, injected into the page): no critical or serious violation."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from harness.platform import ROOT, Platform
from harness.waiting import wait_for  # noqa: F401 (the browser tests' helper)

CHROMIUM = os.environ.get("WENZHENG_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--lang=zh-CN"]
SCREENS = ROOT / "var" / "screens"
WAIT = 60
AXE_BLOCKING = {"critical", "serious"}


@pytest.fixture(scope="module")
def platform(kafka_bootstrap, mongo_url) -> Iterator[Platform]:
    run = Platform(run_id=f"portal{uuid.uuid4().hex[:6]}", base_port=18700, kafka_bootstrap=kafka_bootstrap,
                   mongo_url=mongo_url, extra_env={"WENZHENG_INTAKE_RATE_LIMIT_ENABLED": "false",
                                                   "WENZHENG_STATS_FLUSH_SECONDS": "0.5",
                                                   "WENZHENG_PORTAL_REFERENCE_CACHE_SECONDS": "0",
                                                   # the portal is intake's proxy: its X-Forwarded-For counts
                                                   "WENZHENG_INTAKE_TRUSTED_PROXIES": '["127.0.0.1"]'})
    try:
        run.start_all(timeout=180)
        yield run
    finally:
        run.stop_all()


@pytest.fixture(scope="module")
def people(platform: Platform) -> dict[str, str]:
    """username -> password of the demo people (a staff member per unit, a lead, a supervisor, an admin)."""
    out = platform.dir / "people.json"
    env = platform.env() | {"WENZHENG_INTAKE_PASSWORD_TIME_COST": "1", "WENZHENG_INTAKE_PASSWORD_MEMORY_KIB": "1024",
                            "WENZHENG_INTAKE_PASSWORD_PARALLELISM": "1"}
    subprocess.run([sys.executable, "-m", "services.intake", "demo-accounts", "--out", str(out), "--all-units"],
                   check=True, env=env, cwd=ROOT, capture_output=True, timeout=300)
    accounts = json.loads(out.read_text(encoding="utf-8"))["accounts"]
    return {name: (entry["password"] if isinstance(entry, dict) else entry) for name, entry in accounts.items()}


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    if not Path(CHROMIUM).exists():
        pytest.fail(f"no Chromium at {CHROMIUM}: `make test` installs Debian's chromium (set WENZHENG_CHROMIUM)")
    with sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        try:
            yield chromium
        finally:
            chromium.close()


def axe_check(page, name: str) -> None:
    """Inject axe-core (served by the portal from node_modules, so the page's CSP allows it) and run it."""
    page.add_script_tag(url="/static/vendor/axe.min.js")
    result = page.evaluate("""async () => {
        const r = await axe.run(document, {resultTypes: ['violations']});
        return r.violations.map(v => ({id: v.id, impact: v.impact, help: v.help,
                                       nodes: v.nodes.slice(0, 3).map(n => n.target.join(' '))}));
    }""")
    blocking = [v for v in result if v["impact"] in AXE_BLOCKING]
    assert not blocking, f"axe on {name}: {json.dumps(blocking, ensure_ascii=False, indent=1)}"


def shot(page, name: str, *, axe: bool = True, full_page: bool = True) -> Path:
    SCREENS.mkdir(parents=True, exist_ok=True)
    path = SCREENS / f"{name}.png"
    page.screenshot(path=str(path), full_page=full_page)
    if axe:
        axe_check(page, name)
    return path


def api(platform: Platform, method: str, path: str, *, token: str | None = None, expect: int | None = 200,
        **kwargs) -> httpx.Response:
    headers = {"authorization": f"Bearer {token}"} if token else {}
    response = httpx.request(method, platform.url("intake") + path, headers=headers, timeout=30, **kwargs)
    if expect is not None:
        assert response.status_code == expect, f"{method} {path}: {response.status_code} {response.text}"
    return response


def token_of(platform: Platform, people: dict[str, str], username: str) -> str:
    return api(platform, "POST", "/v1/auth/login", json={"username": username,
                                                         "password": people[username]}).json()["token"]
