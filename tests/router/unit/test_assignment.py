"""Places, units, kinds and working days for categorised posts."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from services.common.reference import Division
from services.router.assignment import Assigner, PlaceFinder, detect_kind


@dataclass
class Location:
    county: str | None = None
    township: str | None = None


@pytest.fixture(scope="module")
def assigner() -> Assigner:
    return Assigner.default()


def test_a_township_named_only_in_the_text_lands_on_its_county(assigner: Assigner):
    text = "尊敬的领导：我是水西镇居民，我们小区的路灯坏了半个月了，晚上出行很不安全"
    result = assigner.assign("urban_management", text, keywords=["路灯"])
    assert (result.county, result.township) == ("章贡区", "水西镇")
    assert result.unit_id == "zhanggong_gov"
    assert result.reasons[0] == "关键词: 路灯"
    assert "地点: 水西镇 → 章贡区 → 章贡区人民政府" in result.reasons


@pytest.mark.parametrize(("text", "county"), [
    ("于都县罗坳镇有工厂夜里排放废气", "于都县"),
    ("瑞金叶坪乡的河里出现死鱼", "瑞金市"),
    ("我住在赣县区梅林镇，附近养猪场很臭", "赣县区"),
    ("赣县的一家工厂偷排污水", "赣县区"),
    ("章贡区沙石镇一家化工厂排污", "章贡区"),
])
def test_counties_are_found_by_name_alias_or_township(assigner: Assigner, text: str, county: str):
    assert assigner.assign("ecology_environment", text).county == county


def test_a_county_bureau_is_preferred_to_the_county_government(assigner: Assigner):
    result = assigner.assign("labor_social_security", "兴国县潋江镇某工地拖欠农民工工资三个月")
    assert result.unit_id == "xingguo_hrss"
    assert result.candidates[:3] == ("xingguo_hrss", "xingguo_gov", "city_hrss")


def test_a_zone_is_more_precise_than_its_district(assigner: Assigner):
    result = assigner.assign("education_culture_sports", "章贡区经开区湖边镇的学校学位不够")
    assert result.county == "赣州经济技术开发区"
    assert result.unit_id == "zone_ganzhou_etdz"
    assert result.candidates[1:3] == ("zhanggong_education", "zhanggong_gov")  # the parent district next


def test_city_wide_matters_go_to_the_enterprise_the_keywords_name(assigner: Assigner):
    power = assigner.assign("utilities_telecom", "章贡区水东镇最近经常停电，电压也不稳")
    assert power.unit_id == "ent_state_grid"
    assert power.working_days == 2  # the unit's sla_days override the category's 5
    assert any("国网赣州供电公司" in r and "停电" in r for r in power.reasons)
    assert assigner.assign("utilities_telecom", "小区停水三天了，自来水还很浑浊").unit_id == "ent_water"
    assert assigner.assign("utilities_telecom", "新房装好了天然气一直不通气").unit_id == "ent_gas"
    assert assigner.assign("utilities_telecom", "联通宽带天天断网").unit_id == "ent_china_unicom"
    assert assigner.assign("utilities_telecom", "移动公司乱扣话费").unit_id == "ent_china_mobile"
    assert assigner.assign("utilities_telecom", "电信的光纤网速太慢").unit_id == "ent_china_telecom"


def test_a_city_wide_matter_without_a_keyword_goes_to_the_city_unit(assigner: Assigner):
    result = assigner.assign("utilities_telecom", "收费太不合理了")
    assert result.unit_id == "city_development_reform"


def test_a_county_matter_without_a_place_goes_to_the_city_department(assigner: Assigner):
    result = assigner.assign("urban_management", "路边的井盖丢了没人管")
    assert result.county is None
    assert result.unit_id == "city_urban_management"
    assert any("未识别到县区" in r for r in result.reasons)


def test_rerouting_excludes_the_units_already_tried(assigner: Assigner):
    first = assigner.assign("urban_management", "水西镇路灯坏了")
    second = assigner.assign("urban_management", "水西镇路灯坏了", exclude={first.unit_id})
    assert (first.unit_id, second.unit_id) == ("zhanggong_gov", "city_urban_management")
    assert any("章贡区人民政府" in r for r in second.reasons)
    last = assigner.assign("urban_management", "水西镇路灯坏了",
                           exclude={"zhanggong_gov", "city_urban_management"})
    assert last.unit_id is None and last.candidates == ()


def test_inactive_units_are_skipped():
    reference = Assigner.default().reference
    units = [u.model_copy(update={"active": False}) if u.id == "yudu_hrss" else u
             for u in reference.units.units]
    patched = type(reference)(reference.taxonomy, reference.units.model_copy(update={"units": units}),
                              reference.gazetteer)
    assert Assigner(patched).assign("labor_social_security", "于都县欠薪").unit_id == "yudu_gov"


def test_a_structured_location_wins_over_the_text(assigner: Assigner):
    result = assigner.assign("transport", "于都县的公交太少", Location(county="瑞金"))
    assert result.county == "瑞金市" and result.unit_id == "ruijin_gov"
    by_township = assigner.assign("transport", "公交太少", Location(township="象湖镇"))
    assert (by_township.county, by_township.township) == ("瑞金市", "象湖镇")
    assert assigner.assign("transport", "公交太少", Location(county="赣州市南康区")).county == "南康区"


def test_working_days_follow_the_kind_of_post(assigner: Assigner):
    inquiry = assigner.assign("civil_affairs_community", "请问于都县低保怎么申请？")
    complaint = assigner.assign("civil_affairs_community", "投诉于都县低保评定不公")
    assert (inquiry.kind, inquiry.working_days) == ("inquiry", 3)
    assert (complaint.kind, complaint.working_days) == ("complaint", 5)


@pytest.mark.parametrize(("text", "kind"), [
    ("请问公积金如何提取？", "inquiry"),
    ("想咨询一下是否可以异地办理", "inquiry"),
    ("我要举报一家黑作坊", "complaint"),
    ("反映一个问题：请问路灯什么时候修？我已经投诉过了", "complaint"),
    ("小区门口的垃圾堆了一个星期", "complaint"),
])
def test_kind_detection(text: str, kind: str):
    assert detect_kind(text) == kind


def test_unknown_category_is_an_error(assigner: Assigner):
    with pytest.raises(KeyError):
        assigner.assign("weather", "下雨了")


# --- place finding on a small gazetteer with a township name shared by two counties -------------------------

@pytest.fixture()
def finder() -> PlaceFinder:
    return PlaceFinder([
        Division(name="甲县", kind="county", aliases=["甲"], townships=["新村镇", "东山镇"]),
        Division(name="乙县", kind="county", aliases=["乙"], townships=["新村镇", "西河乡"]),
        Division(name="甲县高新区", kind="zone", parent="甲县", aliases=["高新区"], townships=["园区街道"]),
    ])


def test_a_shared_township_alone_is_ambiguous(finder: PlaceFinder):
    assert finder.find("新村镇的路灯坏了").county is None


def test_a_shared_township_with_its_county_named_resolves(finder: PlaceFinder):
    place = finder.find("我是乙县人，新村镇的路灯坏了")
    assert (place.county, place.township) == ("乙县", "新村镇")


def test_an_unambiguous_township_beats_a_county_named_elsewhere(finder: PlaceFinder):
    assert finder.find("西河乡的路坏了").county == "乙县"


def test_longest_match_wins(finder: PlaceFinder):
    assert finder.find("甲县高新区园区街道停水").county == "甲县高新区"
    assert finder.lineage("甲县高新区") == ["甲县高新区", "甲县"]
