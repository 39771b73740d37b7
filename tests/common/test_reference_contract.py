"""The one reference-data contract (issue #15): Chinese names, the deadline policy and service areas (the
import rules between services are in tests/test_architecture.py)."""

from __future__ import annotations

import re
import shutil
from pathlib import Path
from types import SimpleNamespace

import pytest

from services.common.reference import (
    POLICY_WORKING_DAYS,
    REFERENCE_DIR,
    ReferenceDataError,
    load_reference,
    reference,
)
from services.router.assignment import Assigner

CJK = re.compile(r"^[\u4e00-\u9fff（）·]+$")
SERVICES = Path(__file__).resolve().parents[2] / "services"


def test_every_unit_and_category_has_a_chinese_name() -> None:
    data = reference()
    assert all(CJK.match(u.name) for u in data.units.units), [u.id for u in data.units.units if not CJK.match(u.name)]
    assert all(CJK.match(c.name) for c in data.taxonomy.categories)
    assert data.unit_name("zhanggong_gov") == "章贡区人民政府"
    assert data.category_name("labor_social_security") == "劳动和社会保障"


def test_units_know_their_county_and_deadlines_follow_the_policy() -> None:
    data = reference()
    assert data.county_of("zhanggong_gov") == "章贡区" and data.county_of("city_hrss") is None
    low, high = POLICY_WORKING_DAYS
    for unit in data.units.units:
        if unit.sla_days is not None and not low <= unit.sla_days <= high:
            assert unit.id in data.units.deadline_exceptions
    assert data.working_days("urban_management", "inquiry") == 3
    assert data.working_days("urban_management", "complaint") == 5
    assert data.working_days("utilities_telecom", "complaint", "ent_water") == 2


@pytest.fixture
def reference_copy(tmp_path: Path) -> Path:
    for path in REFERENCE_DIR.glob("*.yaml"):
        shutil.copy(path, tmp_path / path.name)
    return tmp_path


def _edit(path: Path, old: str, new: str) -> None:
    text = path.read_text(encoding="utf-8")
    assert old in text
    path.write_text(text.replace(old, new, 1), encoding="utf-8")


def test_a_deadline_outside_the_policy_is_an_error_unless_listed(reference_copy: Path) -> None:
    units = reference_copy / "units.yaml"
    _edit(units, "  ent_gas: 燃气安全类诉求承诺2个工作日内答复\n", "")
    with pytest.raises(ReferenceDataError, match=r"ent_gas.*sla_days.*outside the 3-5 day policy"):
        load_reference(reference_copy)


def test_a_category_deadline_outside_the_policy_is_an_error(reference_copy: Path) -> None:
    taxonomy = reference_copy / "taxonomy.yaml"
    _edit(taxonomy, "kind_days: {inquiry: 3, complaint: 5}", "kind_days: {inquiry: 3, complaint: 10}")
    with pytest.raises(ReferenceDataError, match=r"kind_days\.complaint"):
        load_reference(reference_copy)


def test_a_service_area_must_name_known_places(reference_copy: Path) -> None:
    _edit(reference_copy / "units.yaml", "serves: [章贡区,", "serves: [火星区,")
    with pytest.raises(ReferenceDataError, match="火星区"):
        load_reference(reference_copy)


def test_the_city_water_group_is_only_chosen_for_places_it_serves() -> None:
    assigner = Assigner(reference())
    far = assigner.assign("utilities_telecom", "寻乌县晨光镇沙坝村自来水停水三天了，水压也低",
                          SimpleNamespace(county="寻乌县", township="晨光镇"))
    assert far.unit_id != "ent_water" and "ent_water" not in far.candidates
    assert far.unit_id == "xunwu_gov"
    assert any("赣州市水务集团不服务寻乌县" in r for r in far.reasons)
    near = assigner.assign("utilities_telecom", "章贡区水西镇自来水停水三天了", SimpleNamespace(county="章贡区",
                                                                                  township="水西镇"))
    assert near.unit_id == "ent_water" and near.working_days == 2


def test_the_public_reference_lists_what_each_unit_serves() -> None:
    data = reference().as_public_dict()
    units = {u["id"]: u for u in data["units"]}
    assert "寻乌县" not in units["ent_water"]["serves"] and "章贡区" in units["ent_water"]["serves"]
    assert units["zhanggong_gov"]["serves"] == ["章贡区"] and units["zhanggong_gov"]["county"] == "章贡区"
    assert len(units["city_hrss"]["serves"]) == len(data["counties"])
    assert {c["code"] for c in data["categories"]} == set(reference().taxonomy.ids)
