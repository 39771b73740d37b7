"""Past labelled cases from a city's old system (a CSV or Excel export) for retraining.

:func:`read_table` reads the file's header and rows; :func:`plan_import` decides, row by row, what is
taken and why the rest is not, so that every row of the file is accounted for in the report:
taken, or skipped as ``empty_text``, ``empty_label``, ``unknown_label`` (a label that is neither a
category id, nor its Chinese name, nor mapped by ``--label-map``), ``duplicate`` (the same text earlier in
the file with the same label) or ``conflicting_labels`` (the same text with different labels: every copy
is left out). A file without the label column (or a text column) is refused whole, naming the columns it
has. Rows already imported by an earlier run are reported by the store as ``already_imported``.
"""

from __future__ import annotations

import csv
import hashlib
import sys
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from services.common.events import utcnow
from services.router.textdata import DataError, compact

SAMPLE_ROWS = 20  # row numbers listed per reason in the report
REASONS = {
    "empty_text": "正文为空",
    "empty_label": "类别为空",
    "unknown_label": "类别无法识别（不是分类编号或中文名称，也不在映射表中）",
    "duplicate": "与文件中前面一行内容相同",
    "conflicting_labels": "同一内容在文件中有不同类别，全部不导入",
}


@dataclass(frozen=True)
class Table:
    header: list[str]
    rows: list[tuple[int, dict[str, str]]]  # (row number as a spreadsheet shows it, cells by column)


def read_table(path: Path, sheet: str | None = None) -> Table:
    """The header and rows of a CSV (UTF-8, with or without BOM) or of an .xlsx sheet (the first unless
    named); row numbers count the header as row 1."""
    suffix = path.suffix.lower()
    try:
        if suffix == ".csv":
            return _read_csv(path)
        if suffix in {".xlsx", ".xlsm"}:
            return _read_xlsx(path, sheet)
    except OSError as exc:
        raise DataError(f"{path}: cannot read: {exc}") from exc
    raise DataError(f"{path}: a history file is .csv or .xlsx, not {suffix or 'without a suffix'}")


def _read_csv(path: Path) -> Table:
    csv.field_size_limit(sys.maxsize)
    try:
        with path.open(encoding="utf-8-sig", newline="") as handle:
            reader = csv.reader(handle)
            header = [h.strip() for h in next(reader, [])]
            rows = [(number, _cells(header, values)) for number, values in enumerate(reader, start=2)]
    except UnicodeDecodeError as exc:
        raise DataError(f"{path}: not UTF-8 ({exc.reason} at byte {exc.start}); save the export as UTF-8 CSV") from exc
    return Table(header, rows)


def _read_xlsx(path: Path, sheet: str | None) -> Table:
    from openpyxl import load_workbook

    workbook = load_workbook(path, read_only=True, data_only=True)
    try:
        if sheet is not None and sheet not in workbook.sheetnames:
            raise DataError(f"{path}: no sheet {sheet!r}; it has {workbook.sheetnames}")
        values = workbook[sheet] if sheet else workbook.worksheets[0]
        lines = values.iter_rows(values_only=True)
        header = [str(h).strip() if h is not None else "" for h in next(lines, ())]
        rows = [(number, _cells(header, ["" if v is None else str(v) for v in line]))
                for number, line in enumerate(lines, start=2)]
    finally:
        workbook.close()
    return Table(header, rows)


def _cells(header: Sequence[str], values: Sequence[str]) -> dict[str, str]:
    return {name: (values[i] if i < len(values) else "") for i, name in enumerate(header)}


def history_id(text: str) -> str:
    """One imported case per text, whatever file or run it came from."""
    return "h:" + hashlib.sha256(compact(text).encode()).hexdigest()[:24]


@dataclass
class ImportPlan:
    file: str
    rows: int
    taken: list[dict[str, Any]] = field(default_factory=list)
    skipped: dict[str, list[int]] = field(default_factory=dict)  # reason -> row numbers
    unknown_labels: Counter = field(default_factory=Counter)

    def skip(self, reason: str, row: int) -> None:
        self.skipped.setdefault(reason, []).append(row)

    def report(self, already_imported: int | None = None) -> dict[str, Any]:
        skipped = {reason: {"count": len(rows), "meaning": REASONS[reason], "rows": rows[:SAMPLE_ROWS]}
                   for reason, rows in sorted(self.skipped.items())}
        if "unknown_label" in skipped:
            skipped["unknown_label"]["labels"] = dict(self.unknown_labels.most_common())
        report: dict[str, Any] = {"file": self.file, "rows": self.rows, "taken": len(self.taken),
                                  "skipped": skipped, "skipped_total": sum(len(r) for r in self.skipped.values())}
        if already_imported is not None:
            report["new"] = len(self.taken) - already_imported
            report["already_imported"] = already_imported
        return report

    @property
    def accounted(self) -> int:
        return len(self.taken) + sum(len(r) for r in self.skipped.values())


def label_resolver(categories: Mapping[str, str], label_map: Mapping[str, str]):
    """A function from a file's label to a category id (None: unknown): ``label_map`` first (its targets
    may be ids or Chinese names), then the category id, then its Chinese name."""
    by_name = {name: category for category, name in categories.items()}
    for source, target in label_map.items():
        if target not in categories and target not in by_name:
            raise DataError(f"label map: {source!r} → {target!r}, which is no category (ids: {sorted(categories)})")

    def resolve(label: str) -> str | None:
        label = label_map.get(label, label)
        return label if label in categories else by_name.get(label)

    return resolve


def plan_import(table: Table, *, file: str, text_columns: Sequence[str], label_column: str,
                categories: Mapping[str, str], label_map: Mapping[str, str] | None = None,
                id_column: str | None = None, time_column: str | None = None,
                now: datetime | None = None) -> ImportPlan:
    """What importing ``table`` takes and skips; ``categories``: id → Chinese name."""
    wanted = {"label": [label_column], "text": list(text_columns),
              "id": [id_column] if id_column else [], "time": [time_column] if time_column else []}
    for role, columns in wanted.items():
        missing = [c for c in columns if c not in table.header]
        if missing:
            raise DataError(f"{file}: no {role} column {', '.join(repr(c) for c in missing)} "
                            f"(--{role}-column); the file's columns are {table.header}; nothing imported")
    resolve = label_resolver(categories, label_map or {})
    plan = ImportPlan(file, len(table.rows))
    now = now or utcnow()
    candidates: list[tuple[int, str, str, dict[str, str]]] = []
    for number, cells in table.rows:
        text = " ".join(cells[c].strip() for c in text_columns if cells[c].strip())
        raw_label = cells[label_column].strip()
        if not text:
            plan.skip("empty_text", number)
        elif not raw_label:
            plan.skip("empty_label", number)
        elif (category := resolve(raw_label)) is None:
            plan.skip("unknown_label", number)
            plan.unknown_labels[raw_label] += 1
        else:
            candidates.append((number, text, category, cells))
    labels_of: dict[str, set[str]] = {}
    for _, text, category, _ in candidates:
        labels_of.setdefault(history_id(text), set()).add(category)
    seen: set[str] = set()
    for number, text, category, cells in candidates:
        key = history_id(text)
        if len(labels_of[key]) > 1:
            plan.skip("conflicting_labels", number)
        elif key in seen:
            plan.skip("duplicate", number)
        else:
            seen.add(key)
            plan.taken.append({"_id": key, "text": text, "label": category, "source": file, "row": number,
                               "external_id": cells[id_column].strip() if id_column else None,
                               "happened_at": cells[time_column].strip() if time_column else None,
                               "imported_at": now})
    assert plan.accounted == plan.rows, "every row is taken or skipped with a reason"
    return plan


def write_rejects(path: Path, table: Table, plan: ImportPlan) -> None:
    """The skipped rows as they were, with the reason, to fix and import again."""
    reason_of = {row: reason for reason, rows in plan.skipped.items() for row in rows}
    with path.open("w", encoding="utf-8-sig", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["row", "reason", *table.header])
        for number, cells in table.rows:
            if number in reason_of:
                writer.writerow([number, REASONS[reason_of[number]], *(cells[c] for c in table.header)])

