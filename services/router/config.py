"""Router settings (``WENZHENG_ROUTER_*``; the HTTP port is ``WENZHENG_PORT``)."""

from __future__ import annotations

from pathlib import Path

from pydantic import AliasChoices, Field
from pydantic_settings import BaseSettings, SettingsConfigDict

DEFAULT_MODEL_DIR = Path(__file__).with_name("models") / "default"
TRAINING_DATA_DIR = Path(__file__).with_name("training_data")
DEFAULT_TRAINING_FILES = [TRAINING_DATA_DIR / "examples.csv", TRAINING_DATA_DIR / "handwritten.csv"]
# Each of the 4,320 template posts counts a tenth of a hand-written one: they keep every category covered,
# and the ~1,000 hand-written posts, closer to what citizens write, decide (the README has the figures).
SHIPPED_FILE_WEIGHTS = {"examples.csv": 0.1}


class RouterSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="WENZHENG_ROUTER_", extra="ignore")

    app_id: str = Field("wenzheng-router", description="faust app id = consumer group and table prefix")
    port: int = Field(8001, validation_alias=AliasChoices("WENZHENG_PORT", "WENZHENG_ROUTER_PORT"))
    database: str = "wenzheng_router"
    model_dir: Path = DEFAULT_MODEL_DIR
    data_dir: Path = Field(Path("var/router"), description="faust's local data (tables are rebuilt from Kafka)")
    triage_confidence: float = Field(0.45, ge=0, le=1, description="below this the case goes to triage")
    max_returns: int = Field(2, ge=1, description="after this many returns the case goes to triage")
    duplicate_window_days: int = Field(7, ge=1)
    duplicate_similarity: float = Field(0.6, ge=0, le=1, description="character-bigram Jaccard")
    batch_size: int = Field(100, ge=1, description="at most this many events are routed together")
    batch_wait_seconds: float = Field(0.01, gt=0, description="how long to gather events for a batch")
    training_files: list[Path] = Field(default_factory=lambda: list(DEFAULT_TRAINING_FILES),
                                       description="the shipped examples a retrain starts from")
    model_poll_seconds: float = Field(30, gt=0, description="how often a worker checks which model should route")
    quality_flush_seconds: float = Field(10, gt=0, description="how often a worker adds its quality counts")
    retrain_every_hours: float = Field(0, ge=0, description="scheduled retrain (0: off); promotes only if not worse")
    partitions: int = Field(6, validation_alias=AliasChoices("WENZHENG_TOPIC_PARTITIONS", "WENZHENG_ROUTER_PARTITIONS"))
    corrections_batch_size: int = Field(500, ge=1, description="at most this many corrections per database write")
    corrections_flush_seconds: float = Field(5, gt=0, description="how long corrections gather before a write")
