"""
Configure structlog for the run and keep secrets out of every log line.

Logs go to stderr: JSON lines when it is not a terminal (a scheduler collects
them), console rendering when it is. Event names are dotted, past tense,
without values; values go in fixed keys (see STYLE.md).
"""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import MutableMapping
from typing import Any, Literal, TextIO

import structlog

LogFormat = Literal["auto", "json", "console"]
REDACTED = "<redacted>"
# Keys whose values are secrets whatever they hold, compared lowercased.
SECRET_KEYS = frozenset(
    {
        "authorization",
        "password",
        "secret",
        "secret_key",
        "security_token",
        "sk",
        "token",
        "x-auth-token",
        "x-security-token",
        "x-subject-token",
    }
)
# Shorter values would mask ordinary words; real credentials are far longer.
MIN_SECRET_LENGTH = 6

_secret_values: set[str] = set()
_secret_pattern: re.Pattern[str] | None = None
# The least level each of structlog's filtering wrapper classes lets through.
_MIN_LEVELS: dict[object, int] = {
    structlog.make_filtering_bound_logger(level): level
    for level in (
        logging.NOTSET,
        logging.DEBUG,
        logging.INFO,
        logging.WARNING,
        logging.ERROR,
        logging.CRITICAL,
    )
}


def redact_value(value: str) -> None:
    """
    Mask ``value`` wherever it appears in a log line from now on.
    """
    global _secret_pattern  # one registry for the whole process

    if len(value) < MIN_SECRET_LENGTH or value in _secret_values:
        return
    _secret_values.add(value)
    alternatives = sorted(_secret_values, key=len, reverse=True)
    _secret_pattern = re.compile("|".join(re.escape(v) for v in alternatives))


def scrub(text: str) -> str:
    """
    Return ``text`` with every registered secret masked.
    """
    if _secret_pattern is None:
        return text

    return _secret_pattern.sub(REDACTED, text)


def _scrub_value(value: Any) -> Any:
    if isinstance(value, str):
        return scrub(value)
    if isinstance(value, dict):
        return {k: _redact_item(k, v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_scrub_value(v) for v in value]

    return value


def _redact_item(key: object, value: Any) -> Any:
    if isinstance(key, str) and key.lower() in SECRET_KEYS:
        return REDACTED

    return _scrub_value(value)


def redact_secrets(
    logger: Any, method_name: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    """
    Mask secret-named keys and any registered secret value, at any depth.
    """
    for key, value in list(event_dict.items()):
        event_dict[key] = _redact_item(key, value)

    return event_dict


def enabled_for(level: int) -> bool:
    """
    Return whether a log call at ``level`` would be written under the current setup.

    Ask it before a per-target call that is usually filtered out: through a
    module's lazy logger even a dropped call assembles a logger (about 10 us,
    bench/). An unknown wrapper class counts as letting everything through.
    """
    min_level = _MIN_LEVELS.get(structlog.get_config()["wrapper_class"])

    return min_level is None or level >= min_level


def configure(
    *,
    log_format: LogFormat = "auto",
    verbosity: int = 0,
    stream: TextIO | None = None,
) -> None:
    """
    Set up structlog for one process: level from ``verbosity``, format, redaction.

    ``verbosity`` is -1 for ``-q`` (warnings and errors), 0 for info, 1 for debug.
    """
    stream = stream or sys.stderr
    if log_format == "auto":
        log_format = "console" if stream.isatty() else "json"
    level = {-1: logging.WARNING, 0: logging.INFO}.get(verbosity, logging.DEBUG)
    if verbosity < -1:
        level = logging.ERROR

    renderer: structlog.typing.Processor
    if log_format == "json":
        renderer = structlog.processors.JSONRenderer()
    else:
        renderer = structlog.dev.ConsoleRenderer(colors=stream.isatty())
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            redact_secrets,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(level),
        logger_factory=structlog.PrintLoggerFactory(file=stream),
        cache_logger_on_first_use=False,
    )
