"""``train`` and ``evaluate`` on small CSVs, each printing one JSON object."""

from __future__ import annotations

import csv
import json
from collections import Counter
from pathlib import Path

import pytest

from services.router.classifier import load_model
from services.router.cli import main, shipped_examples
from services.router.config import DEFAULT_MODEL_DIR, DEFAULT_TRAINING_FILES, SHIPPED_FILE_WEIGHTS

POSTS = [
    ("路灯", "小区门口路灯坏了", "urban_management"), ("井盖", "路上井盖丢了", "urban_management"),
    ("摊贩", "流动摊贩占道经营", "urban_management"), ("欠薪", "老板拖欠工资三个月", "labor_social_security"),
    ("社保", "公司不交社保", "labor_social_security"), ("工伤", "工伤认定太慢", "labor_social_security"),
    ("停电", "最近经常停电", "utilities_telecom"), ("停水", "小区停水三天", "utilities_telecom"),
    ("宽带", "宽带老是断网", "utilities_telecom"),
]


def write_csv(path: Path, header: list[str], rows: list[tuple[str, ...]]) -> Path:
    with path.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(rows)
    return path


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> dict:
    assert main(list(argv)) == 0
    out = capsys.readouterr().out.strip().splitlines()
    assert len(out) == 1
    return json.loads(out[0])


@pytest.fixture()
def data(tmp_path: Path) -> Path:
    return write_csv(tmp_path / "posts.csv", ["title", "body", "label"], POSTS * 3)


def test_train_joins_text_columns_and_reports_cross_validation(tmp_path: Path, data: Path, capsys):
    result = run(capsys, "train", "--data", str(data), "--text-column", "title", "--text-column", "body",
                 "--label-column", "label", "--out", str(tmp_path / "model"), "--cv", "3")
    assert result["training_size"] == 27
    assert result["metrics"]["cross_validation"]["folds"] == 3
    model = load_model(tmp_path / "model")
    stored = model.info["metrics"]["cross_validation"]
    assert stored["macro_f1"] == result["metrics"]["cross_validation"]["macro_f1"]
    assert model.predict(["停电停电"]) == ["utilities_telecom"]


def test_evaluate_prints_the_scores_and_the_speed(tmp_path: Path, data: Path, capsys):
    run(capsys, "train", "--data", str(data), "--text-column", "title", "--text-column", "body",
        "--out", str(tmp_path / "model"))
    result = run(capsys, "evaluate", "--model", str(tmp_path / "model"), "--data", str(data),
                 "--text-column", "title", "--text-column", "body", "--label-column", "label")
    assert {"macro_f1", "accuracy", "per_label_f1", "n", "posts_per_second"} <= set(result)
    assert result["n"] == 27 and result["macro_f1"] == 1.0 and result["posts_per_second"] > 0


def test_evaluate_with_a_label_map_and_the_keyword_baseline(tmp_path: Path, capsys):
    data = write_csv(tmp_path / "other.csv", ["text", "cat"],
                     [("路灯坏了", "市政"), ("拖欠工资", "人社"), ("天气", "其他")])
    label_map = tmp_path / "map.yaml"
    label_map.write_text("市政: urban_management\n人社: labor_social_security\n", encoding="utf-8")
    result = run(capsys, "evaluate", "--keywords-only", "--data", str(data), "--text-column", "text",
                 "--label-column", "cat", "--label-map", str(label_map))
    assert result["per_label_f1"]["urban_management"] == 1.0
    assert result["labels_unknown_to_model"] == ["其他"]
    assert result["model_version"].startswith("keywords-")


def test_evaluate_can_leave_out_rows_seen_in_training(tmp_path: Path, capsys):
    post = "我们小区门口的路灯坏了半个月了，晚上出行很不安全，希望尽快维修。"
    seen = write_csv(tmp_path / "seen.csv", ["content"], [(post.replace("半个月", "半 个月"),),
                                                          (post.replace("希望尽快维修", "请尽快修好"),)])
    data = write_csv(tmp_path / "eval.csv", ["text", "label"],
                     [(post, "urban_management"), ("拖欠工资", "labor_social_security"),
                      ("井盖丢了好几天", "urban_management")])
    result = run(capsys, "evaluate", "--keywords-only", "--data", str(data), "--text-column", "text",
                 "--exclude-overlap", str(seen), "--exclude-text-column", "content")
    assert (result["n"], result["excluded_overlap"]) == (2, 1)


def test_corrections_override_training_rows(tmp_path: Path, data: Path, capsys):
    corrections = write_csv(tmp_path / "corrections.csv", ["text", "label"],
                            [("宽带 宽带老是断网", "urban_management")] * 3)
    result = run(capsys, "train", "--data", str(data), "--text-column", "title", "--text-column", "body",
                 "--out", str(tmp_path / "model"), "--corrections", str(corrections))
    assert result["training_size"] == 27 - 3 + 3
    assert load_model(tmp_path / "model").info["data"]["corrections"] == 3


def test_train_merges_files_and_leaves_out_posts_seen_before(tmp_path: Path, data: Path, capsys):
    post = "我们小区门口的路灯坏了半个月了，晚上出行很不安全，希望尽快维修。"
    first = write_csv(tmp_path / "first.csv", ["text", "label"], [(post, "urban_management")])
    second = write_csv(tmp_path / "second.csv", ["title", "body", "label"], [
        ("", post.replace("维修", "修理"), "urban_management"),  # a near duplicate of first
        ("停水", "小区停水三天了", "utilities_telecom"),
        ("停水", "小区停水三天了", "urban_management"),  # the same text with another label
        *POSTS,
    ])
    result = run(capsys, "train", "--data", str(first), "--data", str(second), "--text-column", "text",
                 "--text-column", "title", "--text-column", "body", "--out", str(tmp_path / "model"),
                 "--neighbours", "3")
    assert result["training_size"] == 1 + len(POSTS)
    assert result["dropped"] == {"duplicates_of_earlier_files": 1, "conflicting_labels": 2}
    assert load_model(tmp_path / "model").info["data"]["files"] == ["first.csv", "second.csv"]


def test_a_missing_column_is_an_error_naming_it(data: Path, tmp_path: Path, capsys):
    assert main(["evaluate", "--keywords-only", "--data", str(data), "--text-column", "content"]) == 2
    assert "content" in capsys.readouterr().err


def test_a_weighted_file_counts_less_and_the_weights_are_recorded(tmp_path: Path, capsys):
    sure = write_csv(tmp_path / "sure.csv", ["text", "label"], [*[(t + b, c) for t, b, c in POSTS],
                                                                ("路灯不亮了晚上很黑", "urban_management")])
    doubtful = write_csv(tmp_path / "doubtful.csv", ["text", "label"], [("路灯坏了晚上很暗", "utilities_telecom")] * 6)
    query = "路灯坏了晚上很黑"
    common = ["train", "--data", str(sure), "--data", str(doubtful), "--text-column", "text", "--neighbours", "0",
              "--keyword-weight", "0", "--head-weight", "1", "--head-chars", "20"]
    run(capsys, *common, "--out", str(tmp_path / "plain"))
    run(capsys, *common, "--out", str(tmp_path / "weighted"), "--weight", "doubtful.csv=0.05")
    assert load_model(tmp_path / "plain").classify(query).category == "utilities_telecom"
    weighted = load_model(tmp_path / "weighted")
    assert weighted.classify(query).category == "urban_management"
    assert weighted.info["data"]["weights"] == {"doubtful.csv": 0.05}
    assert (weighted.params.head_weight, weighted.params.head_chars) == (1.0, 20)

    assert main([*common, "--out", str(tmp_path / "x"), "--weight", "other.csv=0.5"]) == 2
    assert "other.csv" in capsys.readouterr().err
    assert main([*common, "--out", str(tmp_path / "x"), "--weight", "doubtful.csv"]) == 2
    assert "FILE=WEIGHT" in capsys.readouterr().err


def test_a_retrain_weighs_the_shipped_files_as_the_default_model_was_trained():
    rows = shipped_examples(DEFAULT_TRAINING_FILES)
    by_weight = Counter(weight for _, _, weight in rows)
    assert set(by_weight) == {SHIPPED_FILE_WEIGHTS["examples.csv"], 1.0} and by_weight[1.0] >= 1000
    default = load_model(DEFAULT_MODEL_DIR)
    assert default.info["data"]["weights"] == SHIPPED_FILE_WEIGHTS
    assert default.info["training_size"] == len(rows)
