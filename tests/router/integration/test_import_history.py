"""``import-history``: a file without the label column is refused whole with a message naming the columns
it has; otherwise every row is taken or skipped with its reason (CSV and .xlsx), and a second import of the
same file adds nothing."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
from openpyxl import Workbook

from services.common.mongo import new_client
from services.common.reference import load_reference
from services.router.admin import import_history
from services.router.cli import main
from services.router.history import read_table
from services.router.store import RouterStore

ROWS = [
    ["编号", "标题", "内容", "类别"],
    ["A1", "路灯不亮", "东门路口路灯坏了一个月", "城市管理"],  # Chinese name
    ["A2", "物业乱收费", "小区物业擅自上调物业费", "urban_construction"],  # id
    ["A3", "", "", "城市管理"],  # empty text
    ["A4", "欠薪", "工地老板拖欠工资三个月", ""],  # empty label
    ["A5", "噪音", "KTV半夜噪音扰民", "其他"],  # unknown label
    ["A6", "路灯不亮", "东门路口路灯坏了一个月", "城市管理"],  # duplicate of A1
    ["A7", "公交", "公交车班次太少", "交通运输"],
    ["A8", "公交", "公交车班次太少", "城乡建设"],  # conflicts with A7: both left out
    ["A9", "医保", "异地就医报销怎么办理", "医疗"],  # mapped by the label map
]


def write_csv(path: Path, rows: list[list[str]]) -> Path:
    with path.open("w", encoding="utf-8-sig", newline="") as handle:
        csv.writer(handle).writerows(rows)
    return path


def write_xlsx(path: Path, rows: list[list[str]]) -> Path:
    book = Workbook()
    for row in rows:
        book.active.append(row)
    book.save(path)
    return path


def test_a_file_without_the_label_column_is_refused_with_a_clear_message(tmp_path, capsys):
    path = write_csv(tmp_path / "old.csv", [row[:3] for row in ROWS])
    code = main(["import-history", str(path), "--text-column", "标题", "--text-column", "内容",
                 "--label-column", "类别"])
    err = capsys.readouterr().err
    assert code == 2
    assert "no label column '类别'" in err and "编号" in err and "nothing imported" in err


@pytest.mark.parametrize("writer", [write_csv, write_xlsx], ids=["csv", "xlsx"])
def test_every_row_is_taken_or_skipped_with_its_reason(tmp_path, capsys, writer):
    path = writer(tmp_path / f"old.{'csv' if writer is write_csv else 'xlsx'}", ROWS)
    (tmp_path / "map.yaml").write_text("医疗: health\n", encoding="utf-8")
    rejects = tmp_path / "rejects.csv"
    code = main(["import-history", str(path), "--text-column", "标题", "--text-column", "内容",
                 "--label-column", "类别", "--id-column", "编号", "--label-map", str(tmp_path / "map.yaml"),
                 "--rejects", str(rejects), "--dry-run"])
    out = capsys.readouterr()
    report = json.loads(out.out)
    assert code == 0 and report["rows"] == 9
    assert report["taken"] == 3  # A1, A2, A9
    skipped = {reason: v["rows"] for reason, v in report["skipped"].items()}
    assert skipped == {"empty_text": [4], "empty_label": [5], "unknown_label": [6], "duplicate": [7],
                       "conflicting_labels": [8, 9]}
    assert report["skipped"]["unknown_label"]["labels"] == {"其他": 1}
    assert report["taken"] + report["skipped_total"] == report["rows"]
    assert "共 9 行：导入 3 行，跳过 6 行" in out.err
    with rejects.open(encoding="utf-8-sig") as handle:
        assert [row["row"] for row in csv.DictReader(handle)] == ["4", "5", "6", "7", "8", "9"]


@pytest.mark.integration
async def test_importing_stores_the_cases_once(tmp_path, mongo_url, run_id):
    client = new_client(mongo_url)
    name = f"wenzheng_router_history_{run_id}"
    try:
        store = RouterStore(client[name])
        table = read_table(write_csv(tmp_path / "old.csv", ROWS))
        taxonomy = load_reference().taxonomy
        kwargs = {"file": "old.csv", "text_columns": ["标题", "内容"], "label_column": "类别", "taxonomy": taxonomy,
                  "label_map": {"医疗": "卫生健康"}}
        first = await import_history(store, table, **kwargs)
        assert (first["taken"], first["new"], first["already_imported"]) == (3, 3, 0)
        again = await import_history(store, table, **kwargs)
        assert (again["taken"], again["new"], again["already_imported"]) == (3, 0, 3)
        stored = sorted((d["label"], d["row"]) for d in await store.history_for_training())
        assert stored == [("health", 10), ("urban_construction", 3), ("urban_management", 2)]
    finally:
        await client.drop_database(name)
        await client.close()
