"""``python -m services.intake`` serves the API. Other commands:

- ``create-admin --username U [--password-file F]``: the first admin (asks for the password, or reads F);
- ``demo-accounts --out PATH [--all-units]``: local demo people with random passwords, written to PATH
  (owner-only; reused when run again), plus a local Open311 key;
- ``credentials --ensure PATH``: only the local Open311 key file (kept for old scripts)."""

from __future__ import annotations

import argparse
import asyncio
import getpass
import sys
from pathlib import Path

from services.common.config import common_settings
from services.common.logging import configure_logging
from services.intake.config import IntakeSettings, http_port


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m services.intake")
    sub = parser.add_subparsers(dest="command")
    serve = sub.add_parser("serve", help="serve the API (the default)")
    serve.add_argument("--workers", type=int, default=1, help="uvicorn worker processes")
    creds = sub.add_parser("credentials", help="local Open311 key file")
    creds.add_argument("--ensure", metavar="PATH", required=True, help="write a random key to PATH if missing")
    first = sub.add_parser("create-admin", help="create an admin account (the first one)")
    first.add_argument("--username", required=True)
    first.add_argument("--display-name", default="系统管理员")
    first.add_argument("--password-file", help="read the password from this file (default: ask)")
    demo = sub.add_parser("demo-accounts", help="local demo accounts with random passwords")
    demo.add_argument("--out", required=True, help="the git-ignored credentials file to write them to")
    demo.add_argument("--all-units", action="store_true", help="a staff member for every unit, not just a few")
    args = parser.parse_args(argv)

    if args.command == "credentials":
        from services.intake.auth import ensure_credentials_file

        created = ensure_credentials_file(args.ensure)
        print(f"[intake] credentials {'written to' if created else 'already in'} {args.ensure}")
        return 0
    if args.command in ("create-admin", "demo-accounts"):
        from services.intake import setup

        settings, common = IntakeSettings(), common_settings()
        if args.command == "create-admin":
            if args.password_file:
                password = Path(args.password_file).read_text(encoding="utf-8").strip()
            else:
                password = getpass.getpass("password for the new admin: ")
            return asyncio.run(setup.create_admin(settings, common, args.username, args.display_name, password))
        return asyncio.run(setup.demo_accounts(settings, common, Path(args.out), all_units=args.all_units))

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
