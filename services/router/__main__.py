"""``python -m services.router worker`` runs the routing worker;
``python -m services.router train|evaluate ...`` trains or evaluates the text model."""

from __future__ import annotations

import sys

COMMANDS = ("train", "evaluate", "retrain", "import-history", "models", "promote", "rollback", "shadow")


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] in COMMANDS:
        from services.router.cli import main as cli_main

        return cli_main(argv)
    if argv and argv[0] == "worker":
        from services.common.config import common_settings
        from services.common.logging import configure_logging
        from services.router.agents import create_app

        settings = common_settings()
        configure_logging("router", settings.log_level, settings.log_json)
        app = create_app()
        sys.argv = [sys.argv[0], "worker", "--loglevel", "warn", *argv[1:]]
        app.main()
        return 0
    print(f"usage: python -m services.router worker | {' | '.join(COMMANDS)} ...", file=sys.stderr)
    return 2


if __name__ == "__main__":
    raise SystemExit(main())
