"""Fixtures of the router's tests: the shipped engine, a worker routing with it, and (for the integration
tests) the router's store on a database of its own."""

from __future__ import annotations

import pytest

from services.common.mongo import new_client
from services.router.config import DEFAULT_MODEL_DIR
from services.router.domain import RoutingPolicy
from services.router.engine import load_engine
from services.router.handlers import RouterWorker
from services.router.store import RouterStore


@pytest.fixture(scope="module")
def engine():
    return load_engine(DEFAULT_MODEL_DIR)


@pytest.fixture
def worker(engine):
    return RouterWorker(engine, RoutingPolicy())


@pytest.fixture
async def store(mongo_url, run_id):
    client = new_client(mongo_url)
    name = f"wenzheng_router_batch_{run_id}"
    yield RouterStore(client[name])
    await client.drop_database(name)
    await client.close()
