"""Shared fixtures. Integration tests use the real local Kafka and MongoDB-wire server that `make test`
starts (deploy/local/infra.sh); each test gets its own topics and databases, so runs never collide."""

from __future__ import annotations

import os
import socket
import uuid

import pytest

from services.common.config import TopicSettings
from services.common.topics import create_topics

KAFKA = os.environ.get("WENZHENG_KAFKA_BOOTSTRAP", f"127.0.0.1:{os.environ.get('WENZHENG_KAFKA_PORT', '9092')}")
MONGO = os.environ.get("WENZHENG_MONGO_URL", f"mongodb://127.0.0.1:{os.environ.get('WENZHENG_MONGO_PORT', '27017')}/")


def _reachable(address: str) -> bool:
    host, port = address.split(",")[0].rsplit(":", 1)
    with socket.socket() as s:
        s.settimeout(1)
        return s.connect_ex((host, int(port))) == 0


@pytest.fixture(scope="session")
def kafka_bootstrap() -> str:
    if not _reachable(KAFKA):
        pytest.fail(f"no Kafka broker at {KAFKA}: run the tests with `make test`, which starts it")
    return KAFKA


@pytest.fixture(scope="session")
def mongo_url() -> str:
    host_port = MONGO.split("//", 1)[1].split("/", 1)[0]
    if not _reachable(host_port):
        pytest.fail(f"no MongoDB-wire server at {MONGO}: run the tests with `make test`, which starts it")
    return MONGO


@pytest.fixture
def run_id() -> str:
    return uuid.uuid4().hex[:10]


@pytest.fixture
async def test_topics(kafka_bootstrap: str, run_id: str) -> TopicSettings:
    """The platform's topics under names unique to this test, created with 3 partitions."""
    names = TopicSettings(**{
        key: f"test.{run_id}.{default}" for key, default in TopicSettings().model_dump().items()
    })
    await create_topics(kafka_bootstrap, partitions=3, names=names)
    return names
