"""JSON-lines logging with a per-request id.

`JsonFormatter` is referenced from logging.conf (fileConfig). The request id lives in a ContextVar set
by the request middleware, so every record logged while serving a request carries it.
"""

from __future__ import annotations

import datetime as dt
import logging
import logging.config
from contextvars import ContextVar
from pathlib import Path

import orjson

request_id_var: ContextVar[str | None] = ContextVar("request_id", default=None)

# The app's own loggers: LOG_LEVEL applies to each, with or without a LOG_CONFIG file.
APP_LOGGERS = ("app", "app.api", "app.services", "app.models")

_RESERVED = frozenset(
    vars(logging.LogRecord("", 0, "", 0, "", (), None)).keys() | {"message", "asctime", "taskName"}
)


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, request_id, extras, exception."""

    def format(self, record: logging.LogRecord) -> str:
        payload: dict[str, object] = {
            "time": dt.datetime.fromtimestamp(record.created, tz=dt.UTC).isoformat(
                timespec="milliseconds"
            ),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "pid": record.process,
        }
        request_id = request_id_var.get()
        if request_id is not None:
            payload["request_id"] = request_id
        for key, value in record.__dict__.items():
            if key not in _RESERVED and not key.startswith("_"):
                payload[key] = value
        if record.exc_info:
            payload["exc_info"] = self.formatException(record.exc_info)
        return orjson.dumps(payload, default=str).decode()


def configure_logging(level: str = "INFO", config_file: str | None = None) -> None:
    """Use a fileConfig file when given (LOG_CONFIG), else JSON lines on stderr.

    Either way the app's loggers get `level` (LOG_LEVEL, the validated setting, not a second read of
    the environment): the file gives handlers and shape, LOG_LEVEL is the one source of their level.
    """
    if config_file:
        path = Path(config_file)
        if not path.is_file():
            raise FileNotFoundError(f"LOG_CONFIG: {config_file} does not exist")
        logging.config.fileConfig(path, disable_existing_loggers=False)
    else:
        handler = logging.StreamHandler()
        handler.setFormatter(JsonFormatter())
        root = logging.getLogger()
        root.handlers[:] = [handler]
        root.setLevel(level)
    for name in APP_LOGGERS:
        logging.getLogger(name).setLevel(level)
