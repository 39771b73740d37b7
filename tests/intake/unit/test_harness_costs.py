"""The benchmarks' cost readings: commands summed from a service's metrics text, per-post arithmetic."""

from __future__ import annotations

import httpx

from harness.costs import Reading, cost_per_post, db_commands_in, retry_after_seconds

METRICS = """# HELP wenzheng_intake_db_commands_total Database commands sent, by operation
# TYPE wenzheng_intake_db_commands_total counter
wenzheng_intake_db_commands_total{operation="insert"} 12.0
wenzheng_intake_db_commands_total{operation="find"} 30.0
wenzheng_intake_db_commands_created{operation="find"} 1.7e+09
wenzheng_intake_posts_total{channel="web"} 40.0
"""


def test_commands_are_summed_over_operations_and_nothing_else() -> None:
    assert db_commands_in(METRICS) == 42


def test_cost_per_post() -> None:
    cost = cost_per_post(Reading(1.0, 100), Reading(3.0, 180), accepted=40)
    assert cost == {"cpu_seconds": 2.0, "cpu_ms_per_post": 50.0, "db_commands": 80, "db_commands_per_post": 2.0}
    assert cost_per_post(Reading(0, None), Reading(1, None), 10)["db_commands_per_post"] is None


def test_retry_after() -> None:
    assert retry_after_seconds(httpx.Response(503, headers={"Retry-After": "2"}).headers) == 2
    assert retry_after_seconds(httpx.Response(503).headers) == 1
    assert retry_after_seconds(httpx.Response(503, headers={"Retry-After": "soon"}).headers) == 1
