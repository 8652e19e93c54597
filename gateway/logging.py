"""Logging: one line per event, JSON for journald and files, readable on a terminal, secrets masked.

structlog events and stdlib records (uvicorn, httpx, aiosqlite) go through the same formatter, so
every line has one shape and every line passes the masking processor just before it is rendered.
"""

from __future__ import annotations

import contextlib
import logging
import logging.handlers
import re
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TextIO

import structlog
from structlog.typing import EventDict, Processor, WrappedLogger

__all__ = ["configure_logging", "get_logger", "mask_secret", "mask_secrets"]

_HANDLER_NAME = "edge-gateway"

# Keys whose whole value is a secret, compared lower-cased. Keys ending in one of the suffixes are
# treated the same (access_token, db_password ...); `token_file` does not end in one, and stays.
_SECRET_KEYS = frozenset(
    {"token", "card", "card_number", "identifier", "qr", "password", "authorization"}
)
_SECRET_SUFFIXES = ("_token", "_password", "_secret")

# A card number inside free text: 12 or more digits in a row (PANs are 12-19; longer runs are
# masked too rather than let a 20-digit loyalty barcode through whole).
_DIGIT_RUN_RE = re.compile(r"(?<!\d)\d{12,}(?!\d)")

_LEVELS = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "error": logging.ERROR,
}


def mask_secret(value: str) -> str:
    """Keep the last 4 characters: "6001000000000001" -> "************0001".

    Values of 4 characters or fewer are masked whole: "****".
    """
    if len(value) <= 4:
        return "****"
    return "*" * (len(value) - 4) + value[-4:]


def _mask_digit_run(match: re.Match[str]) -> str:
    return mask_secret(match.group())


def _is_secret_key(key: str) -> bool:
    lowered = key.lower()
    return lowered in _SECRET_KEYS or lowered.endswith(_SECRET_SUFFIXES)


def _mask_value(key: str, value: Any) -> Any:
    if value is None or isinstance(value, bool):
        return value
    if _is_secret_key(key):
        return mask_secret(value if isinstance(value, str) else str(value))
    if isinstance(value, str):
        return _DIGIT_RUN_RE.sub(_mask_digit_run, value) if len(value) >= 12 else value
    if isinstance(value, Mapping):
        return {k: _mask_value(str(k), v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_mask_value(key, v) for v in value]
    return value


def mask_secrets(logger: WrappedLogger, method_name: str, event_dict: EventDict) -> EventDict:
    """structlog processor: mask secret keys' values, and card numbers in any string value."""
    for key, value in event_dict.items():
        # Numbers and short strings, most of what is logged, cost one type check and a lookup.
        if isinstance(value, int | float) and not _is_secret_key(key):
            continue
        event_dict[key] = _mask_value(key, value)
    return event_dict


def _order_keys(logger: WrappedLogger, method_name: str, event_dict: EventDict) -> EventDict:
    # ts, level, logger, event first, so lines read and grep the same way whatever was bound.
    ordered: EventDict = {}
    for key in ("ts", "level", "logger", "event"):
        if key in event_dict:
            ordered[key] = event_dict.pop(key)
    ordered.update(event_dict)
    return ordered


def _wants_json(fmt: str, stream: TextIO) -> bool:
    if fmt == "json":
        return True
    if fmt == "console":
        return False
    if fmt != "auto":
        raise ValueError(f"unknown log format {fmt!r}; expected auto, json or console")
    try:
        return not stream.isatty()
    except (AttributeError, ValueError):  # closed or not a real stream
        return True


def configure_logging(
    level: str = "info",
    fmt: str = "auto",
    stream: TextIO | None = None,
    file: Path | None = None,
) -> None:
    """Send structlog and stdlib logging to `stream` (stderr by default), or to a rotating
    `file` (the Windows service: no journald there). Safe to call again."""
    if level.lower() not in _LEVELS:
        raise ValueError(f"unknown log level {level!r}; expected one of {', '.join(_LEVELS)}")
    out = stream if stream is not None else sys.stderr
    as_json = _wants_json(fmt, out) or file is not None

    # Run for structlog events when they are made, and for stdlib records when they are formatted.
    timestamper = structlog.processors.TimeStamper(fmt="iso", utc=True, key="ts")
    pre_chain: list[Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_logger_name,
        structlog.stdlib.add_log_level,
        timestamper,
    ]
    renderer: Processor
    if as_json:
        renderer = structlog.processors.JSONRenderer()
    else:
        colors = False
        with contextlib.suppress(AttributeError, ValueError):
            colors = out.isatty()
        renderer = structlog.dev.ConsoleRenderer(colors=colors, timestamp_key="ts")

    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=pre_chain,
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            # Exceptions become text before masking, so a card number in an exception message
            # is masked too; the console renderer prints the text as it is.
            structlog.processors.format_exc_info,
            mask_secrets,
            _order_keys,
            renderer,
        ],
    )
    handler: logging.Handler
    if file is not None:
        file.parent.mkdir(parents=True, exist_ok=True)
        # 10 files of 10 MiB: a month of a busy store, never a full disk.
        handler = logging.handlers.RotatingFileHandler(
            file, maxBytes=10 * 1024 * 1024, backupCount=10, encoding="utf-8"
        )
    else:
        handler = logging.StreamHandler(out)
    handler.set_name(_HANDLER_NAME)
    handler.setFormatter(formatter)

    root = logging.getLogger()
    for old in [h for h in root.handlers if h.get_name() == _HANDLER_NAME]:
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(_LEVELS[level.lower()])
    logging.captureWarnings(True)  # Python warnings become log lines of the same shape

    structlog.configure(
        processors=[
            structlog.stdlib.filter_by_level,
            *pre_chain,
            structlog.stdlib.PositionalArgumentsFormatter(),
            structlog.processors.StackInfoRenderer(),
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        # The chain above is the same on every call, so loggers cached before a reconfiguration
        # stay correct: the level lives on the stdlib root, the renderer in the handler.
        cache_logger_on_first_use=True,
    )


def reopen_log_file() -> bool:
    """Reopen the log file (SIGHUP, after an outside tool such as logrotate moved it).
    Returns whether there was a file to reopen."""
    reopened = False
    for handler in logging.getLogger().handlers:
        if handler.get_name() == _HANDLER_NAME and isinstance(handler, logging.FileHandler):
            with handler.lock or contextlib.nullcontext():
                if handler.stream is not None:
                    handler.stream.close()
                handler.stream = handler._open()
            reopened = True
    return reopened


def get_logger(name: str) -> structlog.stdlib.BoundLogger:
    """A logger named like the module that uses it: `log = get_logger(__name__)`."""
    return structlog.stdlib.get_logger(name)
