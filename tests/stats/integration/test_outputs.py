"""What people read from stats (issue #15): rates that mean what they say, Chinese names beside every id,
the bulletin and the ledger as CSV (BOM, Chinese headers), HTML (Chinese headings) and Excel.

Against the real MongoDB-wire server: events go through the real projector, the API reads what it stored."""

from __future__ import annotations

import csv
import io
import re
from datetime import UTC, datetime
from typing import Any

import openpyxl
import pytest

from services.common.reference import reference
from services.stats.domain import UNASSIGNED
from services.stats.handlers import Projector
from tests.stats.integration.support import serving_stats
from tests.stats.scripts import scenario

pytestmark = pytest.mark.integration
CJK = re.compile(r"[\u4e00-\u9fff]")


@pytest.fixture(scope="module")
async def api(mongo_url: str):
    cases = scenario()

    async def fill(projector: Projector) -> None:
        await projector.apply([f for script in cases.values() for f in script.facts()])

    async with serving_stats(mongo_url, fill, now=datetime(2026, 11, 27, 4, tzinfo=UTC), min_sample=1) as http:
        yield http, cases


# ------------------------------------------------------------------------------------------ rates


async def test_a_merged_duplicate_counts_once_and_an_invalid_post_is_not_received(api) -> None:
    http, _cases = api
    overview = (await http.get("/v1/stats/overview", params={"month": "2026-11"})).json()
    # received: the flagged case, the one waiting for routing, the moved one; not the duplicate, not the spam
    assert overview["received"] == 3
    assert overview["reply_rate"]["numerator"] == 2 and overview["reply_rate"]["denominator"] == 3
    assert overview["merged"] == 1
    assert overview["invalid"] == 1
    assert {r["code"]: (r["name"], r["count"]) for r in overview["invalid_reasons"]}["spam"] == ("垃圾信息", 1)


async def test_unassigned_is_never_ranked(api) -> None:
    http, _cases = api
    ranking = (await http.get("/v1/stats/departments", params={"month": "2026-11", "sort": "reply_rate"})).json()
    ids = [r["id"] for r in ranking["ranking"] + ranking["below_min_sample"]]
    assert UNASSIGNED not in ids and set(ids) == {"zhanggong_gov", "city_hrss"}
    report = (await http.get("/v1/reports/monthly", params={"month": "2026-11"})).json()
    assert UNASSIGNED not in [r["id"] for r in report["ranking"] + report["below_min_sample"]]
    assert UNASSIGNED not in (await http.get("/v1/reports/monthly", params={"month": "2026-11", "format": "csv"})).text


async def test_a_flag_is_an_attribute_not_a_status(api) -> None:
    http, _cases = api
    closed = (await http.get("/v1/ledger", params={"status": "closed", "flagged": "true"})).json()["items"]
    assert [c["tracking_number"] for c in closed] == ["WZ2611-AAAA-AAAA"]
    assert closed[0]["flagged"] is True and closed[0]["status_name"] == "已办结"


# ------------------------------------------------------------------------------------------ names


def _walk(value: Any, path: str = "") -> list[tuple[str, dict[str, Any]]]:
    out = []
    if isinstance(value, dict):
        out.append((path, value))
        for key, item in value.items():
            out += _walk(item, f"{path}.{key}")
    elif isinstance(value, list):
        for i, item in enumerate(value):
            out += _walk(item, f"{path}[{i}]")
    return out


def assert_every_id_is_named(body: Any, where: str) -> None:
    """Every object carrying a unit or category id carries its Chinese name beside it."""
    units = {u.id for u in reference().units.units} | {UNASSIGNED}
    categories = set(reference().taxonomy.ids)
    for path, obj in _walk(body):
        for id_key, name_key in (("unit", "unit_name"), ("category", "category_name"), ("id", "name")):
            value = obj.get(id_key)
            if isinstance(value, str) and (value in units or value in categories):
                assert CJK.search(obj.get(name_key) or ""), f"{where}{path}: {id_key}={value} has no Chinese name"


async def test_no_stats_output_has_a_bare_id_without_its_name(api) -> None:
    http, _cases = api
    month = {"month": "2026-11"}
    for path, params in [("/v1/stats/overview", month), ("/v1/stats/departments", month),
                         ("/v1/stats/departments/zhanggong_gov", month), ("/v1/stats/categories", month),
                         ("/v1/stats/counties", month), ("/v1/stats/timeseries", {}),
                         ("/v1/reports/monthly", month), ("/v1/ledger", {}), ("/v1/cases", {})]:
        response = await http.get(path, params=params)
        assert response.status_code == 200, (path, response.text)
        assert_every_id_is_named(response.json(), path)
    categories = (await http.get("/v1/stats/categories", params=month)).json()["items"]
    assert {c["id"]: c["name"] for c in categories}["labor_social_security"] == "劳动和社会保障"
    department = (await http.get("/v1/stats/departments/zhanggong_gov", params=month)).json()
    assert department["name"] == "章贡区人民政府" and department["county"] == "章贡区"
    series = (await http.get("/v1/stats/timeseries")).json()["points"]
    assert [p["label"] for p in series] == ["2026年11月"]


async def test_the_csv_files_are_utf8_with_bom_chinese_headers_and_names(api) -> None:
    http, _cases = api
    bulletin = await http.get("/v1/reports/monthly", params={"month": "2026-11", "format": "csv"})
    raw = bulletin.content
    assert raw.startswith(b"\xef\xbb\xbf")
    rows = list(csv.reader(io.StringIO(raw.decode("utf-8-sig"))))
    assert rows[0][:4] == ["排名", "承办单位", "单位编码", "收件数"]
    by_code = {r[2]: r for r in rows[1:]}
    assert by_code["zhanggong_gov"][1] == "章贡区人民政府" and by_code["city_hrss"][1] == "赣州市人力资源和社会保障局"
    assert rows[-1][1] == "合计" and rows[-1][3] == "3"
    ledger = await http.get("/v1/ledger", params={"format": "csv"})
    assert ledger.content.startswith(b"\xef\xbb\xbf")
    table = list(csv.DictReader(io.StringIO(ledger.content.decode("utf-8-sig"))))
    moved = next(r for r in table if r["查询编号"] == "WZ2611-EEEE-EEEE")
    assert moved["承办单位"] == "赣州市人力资源和社会保障局" and moved["诉求类别"] == "劳动和社会保障"
    assert moved["受理时间"] == "2026年11月2日 11:00"  # Shanghai time, not the UTC 03:00
    assert moved["办理期限"] == "2026年11月6日"


async def test_the_bulletin_names_the_office_the_period_and_the_typical_cases(api) -> None:
    http, _cases = api
    report = (await http.get("/v1/reports/monthly", params={"month": "2026-11"})).json()
    assert report["issuer"] == "赣州市人民政府办公室" and report["period_label"] == "2026年11月"
    assert [c["tracking_number"] for c in report["typical_cases"]] == ["WZ2611-AAAA-AAAA"]
    typical = report["typical_cases"][0]
    assert typical["unit_name"] == "章贡区人民政府" and typical["category_name"] == "城市管理"
    page = (await http.get("/v1/reports/monthly", params={"month": "2026-11", "format": "html"})).text
    assert "satisfaction_rate" not in page and "reply_rate" not in page
    headings = re.findall(r"<h[12]>(.*?)</h[12]>", page)
    assert headings and all(CJK.search(h) for h in headings)
    assert "典型案例" in headings and "赣州市人民政府办公室" in page and "2026年11月" in page
    assert "WZ2611-AAAA-AAAA" in page and "章贡区人民政府" in page


async def test_the_excel_bulletin_and_ledger_open_with_the_api_totals(api) -> None:
    http, _cases = api
    report = (await http.get("/v1/reports/monthly", params={"month": "2026-11"})).json()
    response = await http.get("/v1/reports/monthly", params={"month": "2026-11", "format": "xlsx"})
    assert response.headers["content-type"].startswith("application/vnd.openxmlformats")
    book = openpyxl.load_workbook(io.BytesIO(response.content))
    assert book.sheetnames == ["概况", "单位排名", "典型案例", "逾期与督办"]
    ranking = book["单位排名"]
    assert ranking["A1"].value == "赣州市网络问政工作月报（2026年11月）"
    assert "赣州市人民政府办公室" in ranking["A2"].value
    headers = [c.value for c in ranking[3]]
    assert headers[:4] == ["排名", "承办单位", "单位编码", "收件数"]
    rows = [[c.value for c in row] for row in ranking.iter_rows(min_row=4)]
    total = rows[-1]
    assert total[1] == "合计"
    assert total[headers.index("收件数")] == report["totals"]["received"]
    assert total[headers.index("答复数")] == report["totals"]["replied"]
    assert total[headers.index("答复率")] == report["totals"]["reply_rate"]["percent"]
    assert sum(r[headers.index("收件数")] for r in rows[:-1]) == report["totals"]["received"]
    assert ranking.column_dimensions["B"].width >= 20  # a unit's Chinese name fits
    overview = dict((r[0].value, r[1].value) for r in book["概况"].iter_rows(min_row=4))
    assert overview["收件数"] == report["totals"]["received"] and overview["无效件（不计收件）"] == 1
    assert [r[0].value for r in book["典型案例"].iter_rows(min_row=4)] == ["WZ2611-AAAA-AAAA"]

    ledger_json = (await http.get("/v1/ledger", params={"page_size": 200})).json()["items"]
    response = await http.get("/v1/ledger", params={"format": "xlsx"})
    sheet = openpyxl.load_workbook(io.BytesIO(response.content))["台账"]
    assert "台账" in sheet["A1"].value
    headers = [c.value for c in sheet[3]]
    assert headers[:3] == ["查询编号", "状态", "承办单位"]
    data = [[c.value for c in row] for row in sheet.iter_rows(min_row=4)]
    assert len(data) == len(ledger_json) == 5
    assert sorted(r[0] for r in data) == sorted(c["tracking_number"] for c in ledger_json)
    filtered = await http.get("/v1/ledger", params={"format": "xlsx", "unit": "city_hrss", "month": "2026-11"})
    only = openpyxl.load_workbook(io.BytesIO(filtered.content))["台账"]
    assert [r[0].value for r in only.iter_rows(min_row=4)] == ["WZ2611-EEEE-EEEE"]


async def test_bad_ledger_input_is_a_4xx(api) -> None:
    http, _cases = api
    for params, field in [({"format": "pdf"}, "format"), ({"month": "2026-13"}, "month")]:
        response = await http.get("/v1/ledger", params=params)
        assert response.status_code == 422 and response.json()["error"]["field"] == field


async def test_the_documented_shapes_describe_what_the_api_answers(api) -> None:
    from services.stats import shapes

    http, _cases = api
    month = {"month": "2026-11"}
    for path, params, model in [
        ("/v1/stats/overview", month, shapes.Overview), ("/v1/stats/departments", month, shapes.Departments),
        ("/v1/stats/departments/city_hrss", month, shapes.Department),
        ("/v1/stats/categories", month, shapes.Breakdown), ("/v1/stats/counties", month, shapes.Breakdown),
        ("/v1/stats/timeseries", {}, shapes.Timeseries), ("/v1/reports/monthly", month, shapes.Monthly),
        ("/v1/ledger", {}, shapes.LedgerPage),
    ]:
        body = (await http.get(path, params=params)).json()
        parsed = model.model_validate(body)
        declared = set(model.model_fields) | {f.alias for f in model.model_fields.values() if f.alias}
        undocumented = set(body) - declared
        assert not undocumented, f"{path} answers fields its OpenAPI shape does not name: {undocumented}"
        assert parsed is not None
    spec = (await http.get("/openapi.json")).json()
    assert spec["paths"]["/v1/stats/overview"]["get"]["responses"]["200"]["content"]["application/json"]["schema"]
