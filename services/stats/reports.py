"""What stats publishes for people: the monthly bulletin (月报) and the ledger (台账) as CSV, HTML and Excel.

Pure functions of the report dict (``build_monthly_report``) and of ledger rows (``ledger_row``): Chinese
headers, Chinese names beside every id, Shanghai times. CSV is UTF-8 with a BOM so that Excel reads it.
"""

from __future__ import annotations

import csv
import html
import io
import unicodedata
from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any

from openpyxl import Workbook
from openpyxl.cell.cell import ILLEGAL_CHARACTERS_RE
from openpyxl.styles import Alignment, Font
from openpyxl.utils import get_column_letter

from services.common.events import INVALID_REASON_NAMES, InvalidReason
from services.common.people import RATING_NAMES, STATUS_NAMES, people_deadline, people_time
from services.stats.naming import RATE_NAMES, key_name

BOM = "\ufeff"
XLSX_TYPE = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"

# ------------------------------------------------------------------------------------------ ledger rows

LEDGER_COLUMNS = (
    ("tracking_number", "查询编号"), ("status_name", "状态"), ("unit_name", "承办单位"), ("unit", "单位编码"),
    ("category_name", "诉求类别"), ("category", "类别编码"), ("county", "县区"), ("received", "受理时间"),
    ("deadline", "办理期限"), ("signed", "签收时间"), ("first_reply", "首次答复时间"), ("on_time", "按期答复"),
    ("reply_working_hours", "答复用时（工作小时）"), ("rating_name", "评价"), ("second_handling", "二次办理次数"),
    ("returns", "退单次数"), ("closed", "办结时间"), ("invalid_reason_name", "无效原因"),
    ("merged", "重复件（已合并）"), ("flagged", "典型案例"), ("overdue_alerted", "超期预警"), ("escalated", "升级督办"),
)


def _when(value: str | None) -> str:
    return people_time(datetime.fromisoformat(value)) if value else ""


def _yes(value: Any) -> str:
    return "是" if value else "否"


def invalid_reason_name(code: str | None) -> str | None:
    return INVALID_REASON_NAMES.get(InvalidReason(code)) if code in set(InvalidReason) else code


def ledger_row(doc: dict[str, Any]) -> dict[str, Any]:
    """One ledger case as the API serves it: ids with their names, UTC ISO times on the wire."""
    s = doc.get("s") or {}
    keep = ("tracking_number", "status", "unit", "category", "county", "received_at", "deadline", "signed_at",
            "first_reply_at", "on_time", "rating", "second_handling", "returns", "closed_at", "flagged",
            "flagged_at", "overdue_alerted", "escalated", "awaiting_reply", "invalid_reason")
    out = {k: s.get(k) for k in keep}
    out.update(
        case_id=doc["_id"],
        unit_name=key_name("unit", s.get("unit")),
        category_name=key_name("category", s.get("category")),
        status_name=STATUS_NAMES.get(s.get("status") or "", s.get("status")),
        rating_name=RATING_NAMES.get(s.get("rating") or ""),
        invalid_reason_name=invalid_reason_name(s.get("invalid_reason")),
        merged=bool(s.get("merged_into")),
        reply_working_hours=None if s.get("reply_tenths") is None else s["reply_tenths"] / 10,
    )
    return out


def _ledger_cells(row: dict[str, Any]) -> list[Any]:
    """A ledger row as people read it: Shanghai times, 是/否, names."""
    human = dict(row)
    human.update(received=_when(row["received_at"]), signed=_when(row["signed_at"]),
                 first_reply=_when(row["first_reply_at"]), closed=_when(row["closed_at"]),
                 deadline=people_deadline(datetime.fromisoformat(row["deadline"])) if row["deadline"] else "",
                 on_time="" if row["on_time"] is None else _yes(row["on_time"]), flagged=_yes(row["flagged"]),
                 merged=_yes(row["merged"]), overdue_alerted=_yes(row["overdue_alerted"]),
                 escalated=_yes(row["escalated"]))
    return ["" if human.get(key) is None else human[key] for key, _title in LEDGER_COLUMNS]


def ledger_csv(rows: Iterable[dict[str, Any]]) -> str:
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow([title for _key, title in LEDGER_COLUMNS])
    writer.writerows(_ledger_cells(r) for r in rows)
    return BOM + out.getvalue()


def ledger_xlsx(rows: Sequence[dict[str, Any]], title: str) -> bytes:
    title = ILLEGAL_CHARACTERS_RE.sub("", title)  # a filter value may hold control characters a sheet cannot
    book = Workbook()
    sheet = book.active
    sheet.title = "台账"
    _table(sheet, title, None, [t for _k, t in LEDGER_COLUMNS], [_ledger_cells(r) for r in rows])
    return _save(book)


# ------------------------------------------------------------------------------------------ the bulletin

BULLETIN_COLUMNS = ("排名", "承办单位", "单位编码", "收件数", "答复数", "答复率", "按期答复率", "评价数", "满意数",
                    "满意率", "满意率95%置信下限", "逾期未答复", "答复用时中位数（工作小时）", "退单数", "二次办理数")
TOTAL_LABEL = "合计"


def _pct(ratio: dict[str, Any]) -> str:
    return ratio["percent"] or ""


def _bulletin_cells(row: dict[str, Any], rank: Any, name: str, code: str, low: Any) -> list[Any]:
    median = row["median_reply_working_hours"]
    return [rank, name, code, row["received"], row["replied"], _pct(row["reply_rate"]), _pct(row["on_time_rate"]),
            row["rated"], row["satisfied"], _pct(row["satisfaction_rate"]), low, row["overdue_open"],
            "" if median is None else median, row["returns"], row["second_handling"]]


def bulletin_rows(report: dict[str, Any]) -> list[list[Any]]:
    """The ranking table of the bulletin: ranked units, then the units below the minimum sample, then the total."""
    def low(row: dict[str, Any]) -> Any:
        value = row["satisfaction_rate"]["wilson_low"]
        return "" if value is None else value

    rows = [_bulletin_cells(r, r.get("rank", ""), r["name"], r["id"], low(r))
            for r in [*report["ranking"], *report["below_min_sample"]]]
    if report.get("unassigned"):
        rows.append(_bulletin_cells(report["unassigned"], "", f"{report['unassigned']['name']}（不参与排名）", "", ""))
    rows.append(_bulletin_cells(report["totals"], "", TOTAL_LABEL, "", ""))
    return rows


def bulletin_csv(report: dict[str, Any]) -> str:
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(BULLETIN_COLUMNS)
    writer.writerows(bulletin_rows(report))
    return BOM + out.getvalue()


TYPICAL_COLUMNS = ("查询编号", "诉求类别", "承办单位", "县区", "状态", "受理时间", "列为典型时间")
OVERDUE_COLUMNS = ("查询编号", "诉求类别", "承办单位", "升级督办", "已答复")


def _typical_cells(case: dict[str, Any]) -> list[Any]:
    return [case["tracking_number"], case["category_name"] or "", case["unit_name"] or "", case["county"] or "",
            case["status_name"] or "", case["received_label"], case["flagged_label"]]


def _overdue_cells(case: dict[str, Any]) -> list[Any]:
    return [case["tracking_number"], case["category_name"] or "", case["unit_name"] or "", _yes(case["escalated"]),
            _yes(case["replied"])]


def summary_lines(report: dict[str, Any]) -> list[tuple[str, Any]]:
    t = report["totals"]
    median = t["median_reply_working_hours"]
    return [
        ("收件数", t["received"]), ("答复数", t["replied"]), ("答复率", _pct(t["reply_rate"])),
        ("按期答复率", _pct(t["on_time_rate"])), ("评价数", t["rated"]), ("满意数（含基本满意）", t["satisfied"]),
        ("满意率", _pct(t["satisfaction_rate"])), ("逾期未答复", t["overdue_open"]),
        ("答复用时中位数（工作小时）", "" if median is None else median), ("退单数", t["returns"]),
        ("二次办理数", t["second_handling"]), ("重复件（已合并，不计收件）", t["merged"]),
        ("无效件（不计收件）", t["invalid"]),
        *((f"　其中：{r['name']}", r["count"]) for r in report["invalid_reasons"] if r["count"]),
        ("典型案例", len(report["typical_cases"])),
    ]


def bulletin_xlsx(report: dict[str, Any]) -> bytes:
    book = Workbook()
    subtitle = f"发布单位：{report['issuer']}　统计周期：{report['period_label']}　排序：{report['sort_name']}" \
               f"（按95%威尔逊置信下限，最少样本{report['min_sample']}件）"
    overview = book.active
    overview.title = "概况"
    _table(overview, report["title"], subtitle, ["指标", "数值"], [list(line) for line in summary_lines(report)])
    _table(book.create_sheet("单位排名"), report["title"], subtitle, list(BULLETIN_COLUMNS), bulletin_rows(report))
    _table(book.create_sheet("典型案例"), f"{report['title']}　典型案例", subtitle, list(TYPICAL_COLUMNS),
           [_typical_cells(c) for c in report["typical_cases"]])
    _table(book.create_sheet("逾期与督办"), f"{report['title']}　逾期与督办件", subtitle, list(OVERDUE_COLUMNS),
           [_overdue_cells(c) for c in report["overdue_and_escalated"]])
    return _save(book)


def _display_width(value: Any) -> int:
    text = "" if value is None else str(value)
    return sum(2 if unicodedata.east_asian_width(ch) in "WF" else 1 for ch in text)


def _table(sheet: Any, title: str, subtitle: str | None, headers: list[str], rows: list[list[Any]]) -> None:
    """Title row (merged, bold), an optional subtitle row, the header row, the rows; widths fit the text."""
    columns = len(headers)
    sheet.append([title])
    sheet.merge_cells(start_row=1, start_column=1, end_row=1, end_column=max(columns, 1))
    sheet.cell(1, 1).font = Font(bold=True, size=14)
    sheet.cell(1, 1).alignment = Alignment(horizontal="center")
    sheet.append([subtitle or ""])
    sheet.merge_cells(start_row=2, start_column=1, end_row=2, end_column=max(columns, 1))
    sheet.append(headers)
    for col in range(1, columns + 1):
        sheet.cell(3, col).font = Font(bold=True)
    for row in rows:
        sheet.append(row)
    sheet.freeze_panes = "A4"
    for col in range(1, columns + 1):
        cells = [headers[col - 1], *(r[col - 1] for r in rows if col - 1 < len(r))]
        width = max(_display_width(c) for c in cells)
        sheet.column_dimensions[get_column_letter(col)].width = min(max(width + 2, 8), 60)


def _save(book: Workbook) -> bytes:
    out = io.BytesIO()
    book.save(out)
    return out.getvalue()


# ------------------------------------------------------------------------------------------ HTML


def _bars(rows: list[dict[str, Any]], sort: str) -> str:
    width, bar_h = 700, 18
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{bar_h * len(rows) + 10}" '
             f'role="img" aria-label="{html.escape(RATE_NAMES[sort])}">']
    for i, row in enumerate(rows):
        ratio = row[sort]
        value = ratio["value"] or 0.0
        y = i * bar_h + 5
        parts.append(f'<text x="0" y="{y + 13}" font-size="12">{html.escape(row["name"])}</text>')
        parts.append(f'<rect x="230" y="{y}" width="{value * 360:.1f}" height="{bar_h - 4}" fill="#2b6cb0"/>')
        if ratio["wilson_low"] is not None:
            lo, hi = 230 + ratio["wilson_low"] * 360, 230 + ratio["wilson_high"] * 360
            parts.append(f'<line x1="{lo:.1f}" x2="{hi:.1f}" y1="{y + 7}" y2="{y + 7}" stroke="#000"/>')
        parts.append(f'<text x="600" y="{y + 13}" font-size="12">{ratio["percent"] or "–"}（{ratio["denominator"]}件）'
                     "</text>")
    parts.append("</svg>")
    return "".join(parts)


def _html_table(headers: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    esc = html.escape
    head = "".join(f"<th>{esc(str(h))}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{esc(str(c))}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body or '<tr><td colspan=99>无</td></tr>'}</tbody></table>"


def bulletin_html(report: dict[str, Any]) -> str:
    sort, esc = report["sort"], html.escape
    sort_name = report["sort_name"]

    def items(rows: list[dict[str, Any]]) -> str:
        return "".join(f"<li>{esc(r['name'])}：{esc(r[sort]['percent'] or '–')}（{r[sort]['denominator']}件）</li>"
                       for r in rows) or "<li>无</li>"

    summary = _html_table(["指标", "数值"], summary_lines(report))
    return f"""<!doctype html><html lang="zh-CN"><head><meta charset="utf-8">
<title>{esc(report['title'])}</title>
<style>body{{font-family:"PingFang SC","Microsoft YaHei","Noto Sans CJK SC",sans-serif;max-width:900px;margin:2em auto}}
table{{border-collapse:collapse;margin-bottom:1em}}td,th{{border:1px solid #ccc;padding:2px 6px}}
@media print{{a{{display:none}}}}</style></head><body>
<h1>{esc(report['title'])}</h1>
<p>发布单位：{esc(report['issuer'])}　统计周期：{esc(report['period_label'])}
（{esc(report['period_range_label'])}）　生成日期：{esc(report['generated_for_label'])}</p>
<h2>总体情况</h2>{summary}
<h2>单位排名（{esc(sort_name)}，按95%威尔逊置信下限，最少样本{report['min_sample']}件）</h2>
{_bars(report['ranking'], sort)}
{_html_table(BULLETIN_COLUMNS, bulletin_rows(report))}
<h2>表扬</h2><ul>{items(report['praise'])}</ul>
<h2>批评</h2><ul>{items(report['criticise'])}</ul>
<h2>典型案例</h2>{_html_table(TYPICAL_COLUMNS, [_typical_cells(c) for c in report['typical_cases']])}
<h2>逾期与督办件</h2>{_html_table(OVERDUE_COLUMNS, [_overdue_cells(c) for c in report['overdue_and_escalated']])}
</body></html>"""
