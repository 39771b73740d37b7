"""A realistic, reproducible stream of case events and alerts with its ground truth computed independently.

Used by the stats tests, the benchmarks and (by the lead) end-to-end chaos checks::

    sim = simulate(2000, seed=7)
    sim.events            # [(topic_key, Event)], per case in version order, cases interleaved
    sim.truth(today)      # the rates every consumer must end up with, by "all" and by unit

Deadlines and replies lie in the past (2025), so "deadline passed" is the same for any ``today`` after 2025.
The truth is computed from the generator's own case records, not through services.stats.domain.

For the stats benchmarks that need a large ledger quickly, :func:`seed_stats_ledger` writes synthetic case
states (a year of them) and the rollups they add up to straight into a stats database with bulk inserts::

    await seed_stats_ledger(db, 1_000_000, units=115)
"""

from __future__ import annotations

import math
import random
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any

from pymongo.asynchronous.database import AsyncDatabase

from services.common.events import (
    Actor,
    Alert,
    AlertKind,
    Audience,
    CaseAssigned,
    CaseClosed,
    CaseFlagged,
    CaseRated,
    CaseReopened,
    CaseReplied,
    CaseReturned,
    CaseSigned,
    CaseSubmitted,
    Channel,
    Event,
    Rating,
    make_event,
)
from services.common.reference import reference
from services.common.workdays import SHANGHAI, default_calendar, local_date
from services.stats.domain import contributions, merge_counters, reply_tenths
from services.stats.store import StatsStore

CATEGORIES = tuple(reference().taxonomy.ids)
COUNTIES = ("章贡区", "南康区", "赣县区", "信丰县", "大余县", "于都县")
SOURCE = "urn:wenzheng:simulate"
START = datetime(2025, 3, 3, 9, 0, tzinfo=SHANGHAI)


@dataclass
class SimCase:
    case_id: str
    tracking_number: str
    received_at: datetime
    unit: str
    category: str
    county: str
    deadline: datetime
    returned_by: list[str] = field(default_factory=list)
    first_reply_at: datetime | None = None
    on_time: bool | None = None
    rating: str | None = None
    rated_round: int = 0
    reopened: bool = False
    awaiting_reply: bool = True
    closed: bool = False
    escalated: bool = False
    overdue_alerted: bool = False


@dataclass
class Simulation:
    cases: list[SimCase]
    events: list[tuple[str, Event]]

    def truth(self, today: date) -> dict[str, dict[str, Any]]:
        """Ground truth by "all" and by unit id: numerators, denominators and the median, exactly."""
        groups: dict[str, list[SimCase]] = {"all": self.cases}
        for case in self.cases:
            groups.setdefault(f"unit:{case.unit}", []).append(case)
        returns: dict[str, int] = {}
        for case in self.cases:
            for unit in case.returned_by:
                returns[f"unit:{unit}"] = returns.get(f"unit:{unit}", 0) + 1
        out = {}
        for name, cases in groups.items():
            replied = [c for c in cases if c.first_reply_at]
            late_unreplied = [c for c in cases if not c.first_reply_at and _last_day(c.deadline) < today]
            rated = [c for c in cases if c.rating]
            tenths = sorted(_tenths(c) for c in replied)
            median = None
            if tenths:
                mid = len(tenths) // 2
                median = tenths[mid] if len(tenths) % 2 else (tenths[mid - 1] + tenths[mid]) / 2
            out[name] = {
                "received": len(cases),
                "replied": len(replied),
                "on_time": sum(1 for c in replied if c.on_time),
                "on_time_denominator": len(replied) + len(late_unreplied),
                "rated": len(rated),
                "satisfied": sum(1 for c in rated if c.rating != Rating.UNSATISFIED.value),
                "overdue_open": sum(1 for c in cases if c.awaiting_reply and not c.closed
                                    and _last_day(c.deadline) < today),
                "median_reply_working_hours": None if median is None else round(median / 10, 2),
                "returns": (sum(len(c.returned_by) for c in cases) if name == "all" else returns.get(name, 0)),
                "second_handling": sum(1 for c in cases if c.reopened),
            }
        return out


def _last_day(deadline: datetime) -> date:
    return (deadline - timedelta(microseconds=1)).astimezone(SHANGHAI).date()


def _tenths(case: SimCase) -> int:
    assert case.first_reply_at is not None
    hours = default_calendar().working_hours_between(case.received_at, case.first_reply_at)
    return math.floor(hours * 10 + 0.5 + 1e-9)


def unit_ids(count: int) -> list[str]:
    """Real units of the reference data first (so outputs carry real names), then made-up ones if more are asked."""
    real = [u.id for u in reference().units.units if u.active]
    return real[:count] + [f"unit_{i:03d}" for i in range(len(real), count)]


def simulate(
    n_cases: int,
    *,
    seed: int = 1,
    units: int = 20,
    days: int = 60,
    replied: int | None = None,
    rated: int | None = None,
    satisfied: int | None = None,
    duplicate_rate: float = 0.0,
) -> Simulation:
    """Generate ``n_cases`` cases. ``replied``/``rated``/``satisfied`` force exact totals (the scenario test);
    ``duplicate_rate`` re-sends that share of events (at-least-once delivery)."""
    rng = random.Random(seed)
    cal = default_calendar()
    unit_list = unit_ids(units)
    reply_p = {u: 0.80 + 0.19 * rng.random() for u in unit_list}
    satisfy_p = {u: 0.70 + 0.29 * rng.random() for u in unit_list}
    order = list(range(n_cases))
    rng.shuffle(order)
    forced_reply = set(order[:replied]) if replied is not None else None
    replied_ids = sorted(order[:replied]) if replied is not None else None
    forced_rated = set(replied_ids[:rated]) if replied_ids is not None and rated is not None else None
    forced_satisfied = (set(sorted(forced_rated)[:satisfied]) if forced_rated is not None and satisfied is not None
                        else None)
    per_case: list[list[tuple[str, Event]]] = []
    cases: list[SimCase] = []
    for i in range(n_cases):
        ids = iter(uuid.UUID(int=rng.getrandbits(128)).hex for _ in range(64))
        received = (START + timedelta(minutes=rng.randrange(days * 24 * 60))).astimezone(UTC)
        unit = rng.choice(unit_list)
        category = rng.choice(CATEGORIES)
        county = rng.choice(COUNTIES)
        case_id = f"sim-{seed}-{i:07d}"
        tracking = f"GZ{seed:02d}{i:08d}"
        wd = rng.choice((3, 5))
        out = _CaseStream(case_id, tracking, ids)
        emit = out.emit
        emit(CaseSubmitted, occurred_at=received, actor=Actor.CITIZEN, channel=Channel.WEB, title="路灯不亮",
             body="小区门口路灯坏了", location=None)
        at = received + timedelta(minutes=5)
        deadline = cal.add_working_days(at, wd)
        case = SimCase(case_id, tracking, received, unit, category, county, deadline)

        def assign(unit_id: str, when: datetime, round_: int, wd: int = wd, category: str = category,
                   county: str = county, ids: Any = ids, emit: Any = emit) -> datetime:
            dl = cal.add_working_days(when, wd)
            emit(CaseAssigned, occurred_at=when, actor=Actor.ROUTER, decision_id=next(ids), category=category,
                 category_name=reference().category_name(category), department_id=unit_id,
                 department_name=reference().unit_name(unit_id), county=county,
                 deadline=dl, working_days=wd, confidence=0.9, model_version="sim", routing_round=round_)
            return dl

        case.deadline = assign(unit, at, 1)
        if rng.random() < 0.05:  # a misroute: returned, routed to another unit
            at += timedelta(hours=rng.randrange(1, 30))
            emit(CaseReturned, occurred_at=at, actor=Actor.DEPARTMENT, department_id=unit, reason="非本单位职责",
                 return_count=1)
            case.returned_by.append(unit)
            unit = rng.choice([u for u in unit_list if u != unit])
            case.unit = unit
            at += timedelta(minutes=10)
            case.deadline = assign(unit, at, 2)
        if rng.random() < 0.9:
            at += timedelta(hours=rng.randrange(1, 20))
            emit(CaseSigned, occurred_at=at, actor=Actor.DEPARTMENT, department_id=unit)
        will_reply = (i in forced_reply) if forced_reply is not None else rng.random() < reply_p[unit]
        if will_reply:
            at += timedelta(minutes=rng.randrange(30, 9 * 24 * 60))
            case.first_reply_at, case.on_time, case.awaiting_reply = at, at <= case.deadline, False
            emit(CaseReplied, occurred_at=at, actor=Actor.DEPARTMENT, department_id=unit, reply="已处理",
                 deadline=case.deadline, on_time=case.on_time)
            will_rate = (i in forced_rated) if forced_rated is not None else rng.random() < 0.3
            if will_rate:
                good = (i in forced_satisfied) if forced_satisfied is not None else rng.random() < satisfy_p[unit]
                rating = rng.choice((Rating.SATISFIED, Rating.BASICALLY_SATISFIED)) if good else Rating.UNSATISFIED
                at += timedelta(hours=rng.randrange(1, 48))
                emit(CaseRated, occurred_at=at, actor=Actor.CITIZEN, department_id=unit, rating=rating)
                case.rating, case.rated_round = rating.value, 1
                if rating == Rating.UNSATISFIED and forced_rated is None and rng.random() < 0.6:
                    at += timedelta(hours=2)
                    case.deadline = cal.add_working_days(at, 5)
                    emit(CaseReopened, occurred_at=at, actor=Actor.SUPERVISOR, department_id=unit, reason="二次办理",
                         handling_round=2, deadline=case.deadline)
                    case.reopened, case.awaiting_reply = True, True
                    if rng.random() < 0.8:
                        at += timedelta(hours=rng.randrange(2, 60))
                        emit(CaseReplied, occurred_at=at, actor=Actor.DEPARTMENT, department_id=unit,
                             reply="再次答复", deadline=case.deadline, on_time=at <= case.deadline, handling_round=2)
                        case.awaiting_reply = False
                        if rng.random() < 0.5:
                            second = rng.choice(list(Rating))
                            at += timedelta(hours=5)
                            emit(CaseRated, occurred_at=at, actor=Actor.CITIZEN, department_id=unit,
                                 rating=second, handling_round=2)
                            case.rating, case.rated_round = second.value, 2
                if case.rating != Rating.UNSATISFIED.value:
                    at += timedelta(minutes=1)
                    emit(CaseClosed, occurred_at=at, actor=Actor.SYSTEM, reason="满意销号", department_id=unit,
                         automatic=True)
                    case.closed = True
        if not case.first_reply_at and rng.random() < 0.6:
            case.overdue_alerted = True
            out.events.append(("alerts", _alert(case, AlertKind.OVERDUE, next(ids))))
            if rng.random() < 0.4:
                case.escalated = True
                out.events.append(("alerts", _alert(case, AlertKind.ESCALATED, next(ids))))
        if rng.random() < 0.02:
            at += timedelta(minutes=3)
            emit(CaseFlagged, occurred_at=at, actor=Actor.SUPERVISOR, note="典型案例")
        cases.append(case)
        per_case.append(out.events)
    return Simulation(cases, _interleave(per_case, rng, duplicate_rate))


class _CaseStream:
    """One case's events, numbered by version."""

    def __init__(self, case_id: str, tracking: str, ids: Any) -> None:
        self.case_id, self.tracking, self.ids = case_id, tracking, ids
        self.version = 0
        self.events: list[tuple[str, Event]] = []

    def emit(self, model: Any, **fields: Any) -> None:
        self.version += 1
        data = model(case_id=self.case_id, tracking_number=self.tracking, version=self.version, **fields)
        self.events.append(("case_events", make_event(data, source=SOURCE, event_id=next(self.ids),
                                                      time=fields["occurred_at"])))


def _alert(case: SimCase, kind: AlertKind, alert_id: str) -> Event:
    alert = Alert(alert_id=f"{kind.value}:{case.case_id}", kind=kind, case_id=case.case_id,
                  tracking_number=case.tracking_number, department_id=case.unit, category=case.category,
                  county=case.county, deadline=case.deadline, audience=[Audience.SUPERVISORS],
                  message="逾期未答复", raised_at=case.deadline + timedelta(hours=1))
    return make_event(alert, source="urn:wenzheng:notifier", event_id=alert_id, time=alert.raised_at)


def _interleave(per_case: list[list[tuple[str, Event]]], rng: random.Random,
                duplicate_rate: float) -> list[tuple[str, Event]]:
    """Cases overlap in time like real traffic; each case's own events stay in order."""
    cursors = [0] * len(per_case)
    live = list(range(len(per_case)))
    out: list[tuple[str, Event]] = []
    window = 200
    while live:
        pick = rng.randrange(min(window, len(live)))
        idx = live[pick]
        item = per_case[idx][cursors[idx]]
        out.append(item)
        if duplicate_rate and rng.random() < duplicate_rate:
            out.append(item)
        cursors[idx] += 1
        if cursors[idx] == len(per_case[idx]):
            live.pop(pick)
    return out


# --------------------------------------------------------------------------------------------------
# A large ledger in seconds: synthetic case states written directly (stats benchmarks)
# --------------------------------------------------------------------------------------------------

LEDGER_START = datetime(2025, 1, 1, tzinfo=SHANGHAI)


def synthetic_state(rng: random.Random, i: int, units: list[str]) -> dict[str, Any]:
    """The ledger state of one case received in 2025: 92% replied, 10% of the replied rated."""
    received = (LEDGER_START + timedelta(minutes=rng.randrange(365 * 24 * 60))).astimezone(UTC)
    deadline = received + timedelta(days=rng.choice((5, 7)))
    deadline = datetime.combine(local_date(deadline), datetime.min.time(), tzinfo=SHANGHAI).astimezone(UTC)
    replied = rng.random() < 0.92
    reply_at = received + timedelta(hours=rng.randrange(1, 200)) if replied else None
    rating = rng.choice(("satisfied", "basically_satisfied", "unsatisfied")) if replied and rng.random() < 0.1 \
        else None
    return {
        "tracking_number": f"GZ{i:010d}", "received_at": received.isoformat(), "unit": rng.choice(units),
        "category": rng.choice(CATEGORIES), "county": rng.choice(COUNTIES), "deadline": deadline.isoformat(),
        "signed_at": None, "first_reply_at": reply_at.isoformat() if reply_at else None,
        "on_time": bool(reply_at and reply_at <= deadline) if replied else None,
        "reply_tenths": reply_tenths(rng.uniform(0.5, 60)) if replied else None, "rating": rating,
        "rated_round": 1 if rating else None, "second_handling": 0, "returns": 0, "returned_by": {},
        "closed_at": None, "flagged": False, "overdue_alerted": False, "escalated": False,
        "awaiting_reply": not replied, "status": "replied" if replied else "assigned", "version": 3,
        "received_day": local_date(received).isoformat(),
    }


StateMaker = Callable[[random.Random, int, list[str]], dict[str, Any]]


async def seed_stats_ledger(db: AsyncDatabase, cases: int, units: int, state: StateMaker = synthetic_state,
                            progress_every: int = 100_000) -> None:
    """Seed a stats database: ``cases`` ledger documents made by ``state`` (bulk inserts of a thousand) and the
    rollups they add up to, computed by the same domain code the projector uses."""
    rng = random.Random(7)
    unit_list = [f"unit_{i:03d}" for i in range(units)]
    rollups: dict[str, dict[str, int]] = {}
    store = StatsStore(db)
    started = time.perf_counter()
    chunk = []
    for i in range(cases):
        s = state(rng, i, unit_list)
        merge_counters(rollups, contributions(s))
        chunk.append({"_id": f"bench-{i:08d}", "rev": 1, "events": [], "s": s})
        if len(chunk) == 1000:
            await store.replace_cases(chunk, existing=set())
            chunk = []
        if i and i % progress_every == 0:
            print(f"seeded {i} cases in {time.perf_counter() - started:.0f} s", flush=True)
    if chunk:
        await store.replace_cases(chunk, existing=set())
    await store.insert_rollups(rollups)
