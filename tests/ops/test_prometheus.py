"""Prometheus config and rules: promtool's own checks and rule unit tests (deploy/prometheus/tests/)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.ops.references import rules

ROOT = Path(__file__).resolve().parents[2]
PROMETHEUS_DIR = ROOT / "deploy" / "prometheus"
CONFIGS = ("prometheus.yml", "prometheus.local.yml")
PROMTOOL = shutil.which("promtool")
needs_promtool = pytest.mark.skipif(
    PROMTOOL is None,
    reason="promtool is not installed (Debian/Ubuntu: apt-get install prometheus; or `make monitor` installs it)",
)


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([PROMTOOL, *args], cwd=PROMETHEUS_DIR, capture_output=True, text=True, timeout=120)


@needs_promtool
@pytest.mark.parametrize("config", CONFIGS)
def test_promtool_accepts_the_config(config):
    result = promtool("check", "config", config)
    assert result.returncode == 0, result.stdout + result.stderr


@needs_promtool
def test_promtool_accepts_the_rules():
    result = promtool("check", "rules", *sorted(str(p.relative_to(PROMETHEUS_DIR)) for p in
                                              (PROMETHEUS_DIR / "rules").glob("*.yml")))
    assert result.returncode == 0, result.stdout + result.stderr


@needs_promtool
def test_rule_unit_tests_pass():
    tests = sorted(str(p.relative_to(PROMETHEUS_DIR)) for p in (PROMETHEUS_DIR / "tests").glob("*.yml"))
    assert tests
    result = promtool("test", "rules", *tests)
    assert result.returncode == 0, result.stdout + result.stderr


def _jobs(config: str) -> dict[str, dict]:
    loaded = yaml.safe_load((PROMETHEUS_DIR / config).read_text(encoding="utf-8"))
    return {job["job_name"]: job for job in loaded["scrape_configs"]}


def test_local_config_scrapes_the_ports_make_run_uses():
    table = (ROOT / "deploy" / "local" / "services.txt").read_text(encoding="utf-8").splitlines()
    ports = {cols[0]: cols[3] for cols in ([c.strip() for c in line.split("|")] for line in table
                                           if line.strip() and not line.startswith("#"))}
    jobs = _jobs("prometheus.local.yml")
    for name, port in ports.items():
        assert jobs[f"wenzheng-{name}"]["static_configs"][0]["targets"] == [f"127.0.0.1:{port}"]


def test_both_configs_name_the_service_jobs_alike_and_load_the_rules():
    compose_jobs = {j for j in _jobs("prometheus.yml") if j.startswith("wenzheng-")}
    assert compose_jobs == set(_jobs("prometheus.local.yml")) == {
        f"wenzheng-{s}" for s in ("intake", "router", "notifier", "stats", "portal")}
    for config in CONFIGS:
        assert yaml.safe_load((PROMETHEUS_DIR / config).read_text(encoding="utf-8"))["rule_files"] == ["rules/*.yml"]


def test_every_alert_says_who_and_what():
    alerts = [rule for _, rule in rules() if "alert" in rule]
    assert {a["alert"] for a in alerts} >= {
        "WenzhengServiceDown", "WenzhengConsumerLagGrowing", "WenzhengNoEventsApplied", "WenzhengDeadLetters",
        "WenzhengHttpErrors", "WenzhengOverdueCasesHigh", "WenzhengReplyRateLow"}
    for alert in alerts:
        assert alert["labels"]["severity"] in ("critical", "warning"), alert["alert"]
        assert alert["labels"]["team"] in ("operations", "supervision"), alert["alert"]
        assert alert["annotations"]["summary"] and alert["annotations"]["description"], alert["alert"]


def test_every_alert_has_a_unit_test():
    tested = set()
    for path in (PROMETHEUS_DIR / "tests").glob("*.yml"):
        for case in yaml.safe_load(path.read_text(encoding="utf-8"))["tests"]:
            tested |= {t["alertname"] for t in case.get("alert_rule_test", [])}
    assert {rule["alert"] for _, rule in rules() if "alert" in rule} <= tested
