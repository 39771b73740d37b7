"""The response shapes of the stats API, for its OpenAPI document (the portal is built against them).

Documentation only: the routes return plain dicts (the rates are cached and shared), these models describe
them. Every unit or category id comes with its Chinese ``name``; times are UTC ISO 8601, ``*_label`` fields
are the same moments for people (Asia/Shanghai, ``2026年11月2日``)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class _Shape(BaseModel):
    model_config = ConfigDict(extra="allow", populate_by_name=True)


class Ratio(_Shape):
    value: float | None = Field(description="numerator / denominator, 4 decimals; null without cases")
    percent: str | None = Field(description="e.g. 92.02%")
    numerator: int
    denominator: int
    wilson_low: float | None = Field(description="95% Wilson interval, lower bound")
    wilson_high: float | None


class Rates(_Shape):
    received: int = Field(description="received cases: merged duplicates and invalid posts excluded")
    replied: int
    reply_rate: Ratio
    on_time_rate: Ratio
    rated: int
    satisfied: int = Field(description="satisfied + basically satisfied")
    satisfaction_rate: Ratio
    overdue_open: int
    median_reply_working_hours: float | None
    returns: int
    second_handling: int
    second_handling_rated: int
    second_handling_satisfied: int
    overdue_alerted: int
    escalated: int
    closed: int
    merged: int = Field(description="duplicates merged into another case (counted once, with the primary)")
    invalid: int = Field(description="posts closed as invalid (not received)")
    invalid_by_reason: dict[str, int] = Field(description="invalid posts by invalid_reason code")
    notices_issued: int = Field(description="督办 notices issued to the unit on these cases")
    notices_answered: int = Field(description="督办 notices the unit answered")
    callbacks: int = Field(description="回访 calls the office recorded on these cases")


class Period(_Shape):
    from_: str | None = Field(alias="from")
    to: str | None
    month: str | None = None
    all_time: bool | None = None


class InvalidReasonCount(_Shape):
    code: str
    name: str
    count: int


class Overview(Rates):
    period: Period
    invalid_reasons: list[InvalidReasonCount]


class NamedRates(Rates):
    id: str = Field(description="unit id, category code or county name")
    name: str = Field(description="its Chinese name")
    county: str | None = Field(None, description="units only: the unit's county (null for city-level units)")
    rank: int | None = Field(None, description="ranked rows only")


class Departments(_Shape):
    period: Period
    sort: str
    min_sample: int
    method: str
    ranking: list[NamedRates]
    below_min_sample: list[NamedRates]


class Department(NamedRates):
    period: Period


class Breakdown(_Shape):
    period: Period
    items: list[NamedRates]


class Point(Rates):
    period: str = Field(description="YYYY-MM or YYYY-MM-DD")
    label: str = Field(description="2026年11月 or 2026年11月2日")


class Timeseries(_Shape):
    granularity: str
    period: Period
    points: list[Point]


class CaseBrief(_Shape):
    tracking_number: str
    unit: str | None
    unit_name: str | None
    category: str | None
    category_name: str | None
    county: str | None
    status: str | None
    status_name: str | None
    received_at: str | None
    received_label: str
    flagged_at: str | None
    flagged_label: str


class LateCase(CaseBrief):
    escalated: bool
    replied: bool


class Brief(_Shape):
    id: str
    name: str
    rank: int | None
    received: int


class Unassigned(Rates):
    name: str = Field(description="未分派")


class Monthly(_Shape):
    month: str
    period: Period
    period_label: str = Field(description="2026年11月")
    period_range_label: str = Field(description="2026年11月1日至2026年11月30日")
    title: str
    issuer: str = Field(description="the issuing office")
    generated_for: str
    generated_for_label: str
    sort: str
    sort_name: str
    min_sample: int
    totals: Rates
    ranking: list[NamedRates]
    below_min_sample: list[NamedRates]
    unassigned: Unassigned | None = Field(description="cases nobody is responsible for yet: never ranked")
    praise: list[Brief]
    criticise: list[Brief]
    invalid_reasons: list[InvalidReasonCount]
    typical_cases: list[CaseBrief] = Field(description="典型案例 flagged in the month")
    overdue_and_escalated: list[LateCase]
    second_handling: dict[str, int]
    supervision: Supervision = Field(description="督办 notices and 回访 callbacks of the month's cases")


class UnitSupervision(_Shape):
    id: str
    name: str | None
    notices_issued: int
    notices_answered: int
    callbacks: int


class Supervision(_Shape):
    notices_issued: int
    notices_answered: int
    callbacks: int
    by_unit: list[UnitSupervision]


class LedgerRow(_Shape):
    case_id: str
    tracking_number: str | None
    status: str | None
    status_name: str | None
    unit: str | None
    unit_name: str | None
    category: str | None
    category_name: str | None
    county: str | None
    received_at: str | None
    deadline: str | None
    signed_at: str | None
    first_reply_at: str | None
    on_time: bool | None
    reply_working_hours: float | None
    rating: str | None
    rating_name: str | None
    second_handling: int | None
    returns: int | None
    closed_at: str | None
    invalid_reason: str | None
    invalid_reason_name: str | None
    merged: bool
    flagged: bool | None
    flagged_at: str | None
    overdue_alerted: bool | None
    escalated: bool | None
    awaiting_reply: bool | None


class LedgerPage(_Shape):
    page: int
    page_size: int
    items: list[LedgerRow]


def documented(model: type[BaseModel], *media: str) -> dict[int | str, dict]:
    """``responses=`` for a route: the JSON model, plus other media types it can answer with."""
    content = {m: {} for m in media}
    return {200: {"model": model, **({"content": content} if content else {})}}
