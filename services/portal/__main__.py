"""``python -m services.portal``: the web pages on WENZHENG_PORT (default 8080)."""

from __future__ import annotations

import logging
import sys

from services.common.config import common_settings
from services.common.logging import configure_logging
from services.portal.config import PortalSettings, http_port


def main() -> int:
    import uvicorn

    from services.portal.api import create_app

    common = common_settings()
    configure_logging("portal", common.log_level, common.log_json)
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per back-end call is noise (and has queries)
    uvicorn.run(create_app(PortalSettings()), host="0.0.0.0", port=http_port(), log_level="warning",
                access_log=False, timeout_graceful_shutdown=10)
    return 0


if __name__ == "__main__":
    sys.exit(main())
