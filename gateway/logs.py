"""Structured logs: one JSON object per line on stdout (journald keeps them on a Pi).

Fields passed with `extra=` become keys. Subjects are bed or pseudonymous codes and
secrets are never passed to a logger; keys that look like secrets are masked anyway.
"""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime

_STANDARD = set(logging.LogRecord("", 0, "", 0, "", None, None).__dict__) | {
    "message",
    "color_message",  # uvicorn's copy of the message with terminal colours
}
_SECRET_WORDS = ("password", "secret", "key", "token")


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, object] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for key, value in record.__dict__.items():
            if key in _STANDARD or key.startswith("_"):
                continue
            out[key] = "***" if any(w in key.lower() for w in _SECRET_WORDS) else value
        if record.exc_info:
            out["exception"] = self.formatException(record.exc_info)
        return json.dumps(out, default=str)


def configure_logging(level: str = "INFO") -> None:
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    for noisy in ("bleak", "bumble", "uvicorn.access", "amqtt", "transitions"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
