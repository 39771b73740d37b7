"""Structured JSON logging with structlog; personal data is scrubbed before anything is written.

Call sites should not log personal data in the first place; the scrubber is the safety net.
"""

from __future__ import annotations

import logging
import re
import sys
from typing import Any

import structlog

PERSONAL_KEYS = frozenset({"phone", "contact_phone", "name", "to", "email", "wechat_openid", "id_card"})
_MOBILE = re.compile(r"(?<!\d)1[3-9]\d{9}(?!\d)")
_ID_CARD = re.compile(r"(?<![0-9Xx])\d{17}[0-9Xx](?![0-9Xx])")


def mask_personal_text(text: str) -> str:
    """Mask mainland mobile numbers and ID card numbers in free text (posts, replies, log lines)."""
    text = _ID_CARD.sub(lambda m: m.group()[:4] + "*" * 10 + m.group()[-4:], text)
    return _MOBILE.sub(lambda m: m.group()[:3] + "****" + m.group()[-4:], text)


def scrub_personal_data(_logger: Any, _method: str, event_dict: dict[str, Any]) -> dict[str, Any]:
    for key in list(event_dict):
        value = event_dict[key]
        if key in PERSONAL_KEYS and value is not None:
            event_dict[key] = "[redacted]"
        elif isinstance(value, str):
            event_dict[key] = mask_personal_text(value)
    return event_dict


def configure_logging(service: str, level: str = "INFO", as_json: bool = True) -> None:
    logging.basicConfig(format="%(message)s", stream=sys.stderr, level=level.upper(), force=True)
    for noisy in ("aiokafka", "kafka", "faust", "mode", "uvicorn.access", "pymongo"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, logging.getLogger().level))
    renderer = structlog.processors.JSONRenderer(ensure_ascii=False) if as_json else (
        structlog.dev.ConsoleRenderer(colors=False))
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            scrub_personal_data,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelName(level.upper())),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=False,
    )
    structlog.contextvars.bind_contextvars(service=service)


def get_logger(name: str) -> Any:
    return structlog.get_logger(name)
