"""The reference files load and validate; broken files are reported with the file, row and field."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from services.common.reference import (
    REFERENCE_DIR,
    ReferenceDataError,
    load_gazetteer,
    load_reference,
    load_taxonomy,
    load_units,
)

COUNTIES = ["章贡区", "南康区", "赣县区", "瑞金市", "龙南市", "信丰县", "大余县", "上犹县", "崇义县",
            "安远县", "定南县", "全南县", "宁都县", "于都县", "兴国县", "会昌县", "寻乌县", "石城县"]


@pytest.fixture()
def reference_copy(tmp_path: Path) -> Path:
    for name in ("taxonomy.yaml", "units.yaml", "gazetteer.yaml"):
        shutil.copy(REFERENCE_DIR / name, tmp_path / name)
    return tmp_path


def edit(path: Path, old: str, new: str) -> None:
    text = path.read_text(encoding="utf-8")
    assert old in text, f"fixture text {old!r} not in {path.name}"
    path.write_text(text.replace(old, new, 1), encoding="utf-8")


def test_shipped_reference_data_is_complete_and_consistent():
    reference = load_reference()
    categories = reference.taxonomy.categories
    assert len(categories) == 12
    assert all(len(c.keywords) >= 30 for c in categories)
    assert {c.scope for c in categories} == {"county", "city"}
    assert 100 <= len(reference.units.units) <= 130
    divisions = {d.name: d for d in reference.gazetteer.divisions}
    assert set(COUNTIES) <= set(divisions)
    # every county lists its townships (定南 has seven towns, every other county at least eight)
    assert all(len(divisions[c].townships) >= (7 if c == "定南县" else 8) for c in COUNTIES)
    assert sum(len(d.townships) for d in divisions.values()) >= 280
    governments = {u.jurisdiction for u in reference.units.units if u.kind == "county_gov"}
    assert governments == set(COUNTIES)
    for version in (reference.taxonomy.version, reference.units.version, reference.gazetteer.version):
        assert version


def test_a_bad_enum_value_names_the_file_line_row_and_field(reference_copy: Path):
    edit(reference_copy / "units.yaml", "id: city_health, name: 赣州市卫生健康委员会, kind: city_dept",
         "id: city_health, name: 赣州市卫生健康委员会, kind: bureau")
    with pytest.raises(ReferenceDataError) as error:
        load_units(reference_copy / "units.yaml")
    message = str(error.value)
    assert message.startswith("units.yaml, line ")
    assert "(id 'city_health')" in message and "field 'kind'" in message


def test_a_missing_field_is_reported(reference_copy: Path):
    edit(reference_copy / "taxonomy.yaml", "    city_unit: city_transport\n", "")
    with pytest.raises(ReferenceDataError, match=r"taxonomy\.yaml.*\(id 'transport'\), field 'city_unit'"):
        load_taxonomy(reference_copy / "taxonomy.yaml")


def test_an_unknown_category_of_a_unit_is_reported_by_the_cross_check(reference_copy: Path):
    edit(reference_copy / "units.yaml", "categories: [health]}", "categories: [healthcare]}")
    expected = r"units\.yaml.*field 'categories': unknown category 'healthcare'"
    with pytest.raises(ReferenceDataError, match=expected):
        load_reference(reference_copy)


def test_an_unknown_jurisdiction_is_reported(reference_copy: Path):
    edit(reference_copy / "units.yaml", "jurisdiction: 石城县, categories: *county_all",
         "jurisdiction: 石头县, categories: *county_all")
    with pytest.raises(ReferenceDataError, match=r"\(id 'shicheng_gov'\), field 'jurisdiction'"):
        load_reference(reference_copy)


def test_a_duplicate_unit_id_is_reported(reference_copy: Path):
    edit(reference_copy / "units.yaml", "id: nankang_gov,", "id: zhanggong_gov,")
    with pytest.raises(ReferenceDataError, match="duplicate id 'zhanggong_gov'"):
        load_units(reference_copy / "units.yaml")


def test_a_keyword_under_two_categories_is_rejected(reference_copy: Path):
    edit(reference_copy / "taxonomy.yaml", "keywords: [路灯,", "keywords: [物业费, 路灯,")
    with pytest.raises(ReferenceDataError, match="物业费"):
        load_taxonomy(reference_copy / "taxonomy.yaml")


def test_an_alias_naming_two_divisions_is_rejected(reference_copy: Path):
    edit(reference_copy / "gazetteer.yaml", "aliases: [于都]", "aliases: [于都, 章贡]")
    with pytest.raises(ReferenceDataError, match=r"gazetteer\.yaml.*\(name '于都县'\), field 'aliases'"):
        load_gazetteer(reference_copy / "gazetteer.yaml")


def test_invalid_yaml_names_the_file(reference_copy: Path):
    (reference_copy / "gazetteer.yaml").write_text("divisions: [unclosed", encoding="utf-8")
    with pytest.raises(ReferenceDataError, match=r"gazetteer\.yaml: not valid YAML"):
        load_gazetteer(reference_copy / "gazetteer.yaml")
