"""Grafana provisioning: dashboards are generated, well-formed and use the provisioned datasource."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from scripts.ops.dashboards import stale_files
from tests.ops.references import dashboards, panels

ROOT = Path(__file__).resolve().parents[2]
PROVISIONING = ROOT / "deploy" / "grafana" / "provisioning"
DATASOURCES = yaml.safe_load((PROVISIONING / "datasources" / "prometheus.yml").read_text(encoding="utf-8"))
DATASOURCE_UIDS = {d["uid"] for d in DATASOURCES["datasources"]}
BOARDS = list(dashboards())


def test_dashboards_are_up_to_date_with_their_generator():
    assert stale_files() == [], "run `python -m scripts.ops.dashboards`"


def test_the_expected_dashboards_exist():
    assert {board["uid"] for _, board in BOARDS} == {"wenzheng-operations", "wenzheng-service-quality"}


def test_the_provider_loads_the_folder_compose_mounts():
    provider = yaml.safe_load((PROVISIONING / "dashboards" / "wenzheng.yml").read_text(encoding="utf-8"))
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text(encoding="utf-8"))
    mount = next(v for v in compose["services"]["grafana"]["volumes"] if v.startswith("./deploy/grafana/dashboards"))
    assert provider["providers"][0]["options"]["path"] == mount.split(":")[1]


@pytest.mark.parametrize(("path", "board"), BOARDS, ids=[p.name for p, _ in BOARDS])
def test_dashboard_is_well_formed(path, board):
    assert board["uid"] and len(board["uid"]) <= 40 and board["title"]
    ids = [panel["id"] for panel in panels(board)]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    for panel in panels(board):
        grid = panel["gridPos"]
        assert 0 <= grid["x"] and grid["x"] + grid["w"] <= 24, panel["title"]
        if panel["type"] == "row":
            continue
        assert panel["datasource"]["uid"] in DATASOURCE_UIDS, panel["title"]
        assert panel["targets"], panel["title"]
        ref_ids = [t["refId"] for t in panel["targets"]]
        assert len(ref_ids) == len(set(ref_ids))
        for target in panel["targets"]:
            assert target["datasource"]["uid"] in DATASOURCE_UIDS
            assert target["expr"].strip()
    for variable in board["templating"]["list"]:
        assert variable["datasource"]["uid"] in DATASOURCE_UIDS


def test_dashboards_cover_what_operators_and_supervisors_need():
    titles = {board["uid"]: " | ".join(p["title"].lower() for p in panels(board)) for _, board in BOARDS}
    for word in ("throughput", "latency", "lag", "5xx", "dead letters", "replicas"):
        assert word in titles["wenzheng-operations"], word
    for word in ("reply rate", "on-time rate", "satisfaction rate", "county", "overdue", "second handling"):
        assert word in titles["wenzheng-service-quality"], word
