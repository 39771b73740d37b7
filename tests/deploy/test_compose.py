"""docker-compose.yml holds the production shape; it cannot run here, so its contents are checked."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = yaml.safe_load((ROOT / "docker-compose.yml").read_text(encoding="utf-8"))
SERVICES = COMPOSE["services"]
PLATFORM = ("intake", "router", "notifier", "stats", "portal")
SCALED = ("router", "notifier", "stats", "portal")


def test_infrastructure_images():
    assert SERVICES["kafka"]["image"].startswith("apache/kafka:4.")
    assert SERVICES["kafka"]["environment"]["KAFKA_PROCESS_ROLES"] == "broker,controller"
    assert SERVICES["mongo"]["image"] == "mongo:7"
    for name in ("prometheus", "grafana", "kafka-lag-exporter", "kafka-init"):
        assert name in SERVICES


@pytest.mark.parametrize("name", PLATFORM)
def test_every_platform_service_runs_from_the_one_image_with_a_healthcheck(name):
    service = SERVICES[name]
    assert service["image"].startswith("wenzheng/platform:")
    assert service["build"]["dockerfile"] == "deploy/Dockerfile"
    assert service["command"][:3] == ["python", "-m", f"services.{name}"]
    assert "healthcheck" in service
    assert service["environment"]["WENZHENG_KAFKA_BOOTSTRAP"] == "kafka:9092"


def test_intake_secrets_come_from_the_operator_and_are_required():
    environment = SERVICES["intake"]["environment"]
    for variable in ("WENZHENG_INTAKE_SECRET", "WENZHENG_INTAKE_SMS_GATEWAY_TOKEN"):
        assert environment[variable].startswith("${" + variable + ":?"), variable


@pytest.mark.parametrize("name", SCALED)
def test_scaled_services_publish_no_fixed_host_port(name):
    assert "ports" not in SERVICES[name], f"{name} must scale with --scale: no fixed host port"


def test_data_lives_in_named_volumes():
    assert {"kafka-data", "mongo-data"} <= set(COMPOSE["volumes"])


def test_topics_are_created_before_services_start():
    for name in PLATFORM:
        if name == "portal":  # it writes no topic: it waits for the APIs it calls
            assert set(SERVICES[name]["depends_on"]) == {"intake", "stats"}
            continue
        assert SERVICES[name]["depends_on"]["kafka-init"]["condition"] == "service_completed_successfully"


def test_the_portal_calls_intake_and_stats_and_needs_its_secret():
    environment = SERVICES["portal"]["environment"]
    assert environment["WENZHENG_PORTAL_INTAKE_URL"] == "http://intake:8000"
    assert environment["WENZHENG_PORTAL_STATS_URL"] == "http://stats:8000"
    assert environment["WENZHENG_PORTAL_SECRET"].startswith("${WENZHENG_PORTAL_SECRET:?")


def test_the_image_carries_the_npm_packages_the_portal_serves():
    text = (ROOT / "deploy" / "Dockerfile").read_text(encoding="utf-8")
    assert "npm ci" in text and "package-lock.json" in text and "node_modules" in text


def test_dockerfile_installs_the_project():
    text = (ROOT / "deploy" / "Dockerfile").read_text(encoding="utf-8")
    assert "pip install ." in text and "USER " in text


@pytest.mark.skipif(
    shutil.which("docker") is None
    or subprocess.run(["docker", "compose", "version"], capture_output=True).returncode != 0,
    reason="docker compose client not installed",
)
def test_docker_compose_config_is_valid():
    result = subprocess.run(["docker", "compose", "config", "-q"], cwd=ROOT, capture_output=True, text=True,
                            env={"WENZHENG_CREDENTIALS_FILE": str(ROOT / "pyproject.toml"), "PATH": "/usr/bin:/bin",
                                 "WENZHENG_INTAKE_SECRET": "s", "WENZHENG_INTAKE_SMS_GATEWAY_TOKEN": "t",
                                 "WENZHENG_PORTAL_SECRET": "p"})
    assert result.returncode == 0, result.stderr
