"""``python -m services.notifier worker``: the alert ladder and citizen notification worker."""

from __future__ import annotations

import asyncio
import sys


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] != "worker":
        print("usage: python -m services.notifier worker", file=sys.stderr)
        return 2
    from services.common.config import common_settings
    from services.common.logging import configure_logging
    from services.notifier.agents import NotifierWorker

    settings = common_settings()
    configure_logging("notifier", settings.log_level, settings.log_json)
    async def run() -> None:
        await NotifierWorker().run()  # aiokafka clients must be built inside the running loop

    asyncio.run(run())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
