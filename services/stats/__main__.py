"""``python -m services.stats`` serves the API and consumes; ``python -m services.stats reconcile`` rebuilds
the rollups from the ledger, prints the differences it found and fixes them."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys

from services.common.config import common_settings
from services.common.logging import configure_logging
from services.stats.config import StatsSettings, http_port


async def _reconcile(check_only: bool) -> dict:
    from services.common.mongo import new_client
    from services.stats.handlers import Projector
    from services.stats.store import StatsStore

    settings = StatsSettings()
    client = new_client(common_settings().mongo_url, service="stats")
    try:
        store = StatsStore(client[settings.database])
        return await Projector(store, settings.instance_id).reconcile(fix=not check_only)
    finally:
        await client.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m services.stats")
    sub = parser.add_subparsers(dest="command")
    sub.add_parser("serve", help="serve the API and consume events (the default)")
    rec = sub.add_parser("reconcile", help="rebuild the rollups from the ledger, report and fix differences")
    rec.add_argument("--check", action="store_true", help="report only, change nothing")
    args = parser.parse_args(argv)
    common = common_settings()
    configure_logging("stats", common.log_level, common.log_json)
    if args.command == "reconcile":
        report = asyncio.run(_reconcile(args.check))
        print(json.dumps(report, ensure_ascii=False, indent=2))
        return 0

    import uvicorn

    from services.stats.api import create_app

    uvicorn.run(create_app(StatsSettings()), host="0.0.0.0", port=http_port(), log_level="warning",
                access_log=False, timeout_graceful_shutdown=10)
    return 0


if __name__ == "__main__":
    sys.exit(main())
