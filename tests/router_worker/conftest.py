"""Fixtures of the router worker's tests: the shipped engine, and a worker on a database of its own."""

from __future__ import annotations

import pytest

from services.common.mongo import new_client
from services.router.agents import RouterWorker
from services.router.config import DEFAULT_MODEL_DIR
from services.router.engine import load_engine
from services.router.policies import RoutingPolicy
from services.router.store import RouterStore


@pytest.fixture(scope="module")
def engine():
    return load_engine(DEFAULT_MODEL_DIR)


@pytest.fixture
async def worker(engine, mongo_url, run_id):
    client = new_client(mongo_url)
    name = f"wenzheng_router_batch_{run_id}"
    yield RouterWorker(engine, RouterStore(client[name]), RoutingPolicy())
    await client.drop_database(name)
    await client.close()
