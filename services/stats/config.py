"""Stats settings (env prefix ``WENZHENG_STATS_``; the HTTP port is ``WENZHENG_PORT``, default 8003).

Stats holds no secret of its own (its API is public and read-only; the database and broker addresses are the
common settings), so there is nothing here for production to refuse."""

from __future__ import annotations

import os
import socket

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class StatsSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="WENZHENG_STATS_", extra="ignore")

    database: str = Field("wenzheng_stats", description="the MongoDB database stats owns")
    consumer_enabled: bool = True
    consumer_group: str = "wenzheng-stats"
    instance_id: str = Field(default_factory=socket.gethostname, description="names this replica's markers")
    max_batch: int = Field(2000, ge=1, description="events applied per batch (one bulk write round)")
    flush_seconds: float = Field(2.0, gt=0, description="how long new events may wait before the rollups (and so "
                                 "the published rates) include them; longer flushes fewer, bigger batches")
    fold_seconds: float = Field(30.0, ge=0, description="how often flushed rollup increments are added to the "
                                "rollup documents (one update per document for all of them)")
    view_poll_seconds: float = Field(0.5, gt=0, description="how often each replica reads the other replicas' "
                                     "rollup log entries (its own count at once)")
    min_sample: int = Field(30, ge=1, description="cases a unit needs to be ranked, praised or criticised")
    list_size: int = Field(5, ge=1, description="units in the praise and criticism lists")
    metrics_max_units: int = Field(200, ge=1, description="bound on the per-unit gauge label values")
    page_size_max: int = 200
    bulletin_issuer: str = Field("赣州市人民政府办公室", description="the office that issues the monthly bulletin")
    bulletin_title: str = Field("赣州市网络问政工作月报", description="the bulletin's title (the period follows)")
    ledger_export_max: int = Field(50_000, ge=1, description="rows in one CSV/Excel ledger download")
    ledger_query_seconds: float = Field(20.0, gt=0, description="time bound of one filtered ledger read (a scan "
                                        "on the local server); past it the request answers 503 query_timeout")
    source: str = "urn:wenzheng:stats"


def http_port() -> int:
    return int(os.environ.get("WENZHENG_PORT", "8003"))
