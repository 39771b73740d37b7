"""``python -m services.intake`` serves the API; ``python -m services.intake credentials --ensure PATH``
writes local tokens for every unit, a supervisor and an admin (if the file is missing)."""

from __future__ import annotations

import argparse
import sys

from services.common.config import common_settings
from services.common.logging import configure_logging
from services.intake.config import IntakeSettings, http_port


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m services.intake")
    sub = parser.add_subparsers(dest="command")
    serve = sub.add_parser("serve", help="serve the API (the default)")
    serve.add_argument("--workers", type=int, default=1, help="uvicorn worker processes")
    creds = sub.add_parser("credentials", help="local API tokens")
    creds.add_argument("--ensure", metavar="PATH", required=True, help="write random tokens to PATH if missing")
    args = parser.parse_args(argv)

    if args.command == "credentials":
        from services.common.reference import reference
        from services.intake.auth import ensure_credentials_file

        created = ensure_credentials_file(args.ensure, sorted(u.id for u in reference().units.units))
        print(f"[intake] credentials {'written to' if created else 'already in'} {args.ensure}")
        return 0

    import uvicorn

    common = common_settings()
    configure_logging("intake", common.log_level, common.log_json)
    workers = getattr(args, "workers", 1)
    if workers > 1:
        uvicorn.run("services.intake.__main__:app_factory", factory=True, host="0.0.0.0", port=http_port(),
                    workers=workers, log_level="warning", access_log=False)
    else:
        uvicorn.run(app_factory(), host="0.0.0.0", port=http_port(), log_level="warning", access_log=False)
    return 0


def app_factory():  # uvicorn's factory hook (each worker builds its own app)
    from services.intake.api import create_app

    common = common_settings()
    configure_logging("intake", common.log_level, common.log_json)
    return create_app(IntakeSettings())


if __name__ == "__main__":
    sys.exit(main())
