"""
Check one config value: the rule functions the config's schema walk applies.

Each takes a value as YAML typed it and returns it checked (and converted:
seconds as floats, "300/min" as a rate and a window), or raises `RuleError`
with the rule, the value to show and, where there is one, the fix. They know
nothing of files and lines: `orchestrator.config` walks the document and adds
where the value came from; command-line overrides go through the same rules.
"""

from __future__ import annotations

import ipaddress
import math
import re
from urllib.parse import urlsplit

from orchestrator.yamldoc import RuleError, short

# "N/T": N requests per T, T a unit with an optional count ("100/10s").
_RATE_PATTERN = re.compile(
    r"\s*(?P<n>\d+(?:\.\d+)?)\s*/\s*(?P<count>\d+(?:\.\d+)?)?\s*"
    r"(?P<unit>s|sec|second|m|min|minute|h|hr|hour)s?\s*"
)
_UNIT_S = {"s": 1.0, "sec": 1.0, "second": 1.0, "m": 60.0, "min": 60.0}
_UNIT_S |= {"minute": 60.0, "h": 3600.0, "hr": 3600.0, "hour": 3600.0}
_RATE_RULE = "must be a number > 0 (per second) or N per period such as '300/min'"
_ENV_PATTERN = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_URL_USERINFO = re.compile(r"(?<=://)[^/?#]*@")
_URL_QUERY = re.compile(r"\?[^#]*")
# An env value longer than this is shown by its length only: it may be a secret.
_LONG_ENV_VALUE = 32


def window_count(per_s: float, window_s: float) -> int:
    """
    Return N in "N per T": how many may start in one window.
    """
    return max(1, math.floor(per_s * window_s + 1e-9))


def ratio(value: object) -> float:
    """
    Check a share of targets, from 0 to 1.
    """
    return _number(value, at_least=0, at_most=1)


def min_targets(value: object) -> int:
    """
    Check how many targets must finish before the halt rule is judged.
    """
    return _whole(value, at_least=1, at_most=1_000_000)


def dataset_name(value: object) -> str:
    """
    Check a dataset name or name glob: text on one line, at most 255 characters.
    """
    if (
        isinstance(value, str)
        and value.strip()
        and len(value) <= 255
        and value.isprintable()
    ):
        return value

    rule = "must be a dataset name: 1-255 printable characters"
    fix = "quote it" if isinstance(value, int | float) else None
    raise RuleError(rule, short(value), fix)


def all_word(value: object) -> str:
    """
    Check the one value ``datasets`` takes.
    """
    if value == "all":
        return "all"
    fix = "use dataset_names: [GLOB, ...] to choose some"
    raise RuleError("must be all", short(value), fix)


def flag_value(value: object) -> bool:
    """
    Check a true/false switch.
    """
    if isinstance(value, bool):
        return value
    raise RuleError("must be true or false", short(value))


def poll_interval(value: object) -> float:
    """
    Check the seconds before the first poll of a sync.
    """
    return _number(value, above=0, at_most=3600)


def wait_timeout(value: object) -> float:
    """
    Check the seconds one sync may take before its target fails.
    """
    return _number(value, above=0)


def rate_limit(value: object) -> tuple[float, float]:
    """
    Check the run's rate; return requests per second and the window T in seconds.

    A bare number is per second (T = 1 s); text is "N/T" such as ``300/min``.
    """
    if not isinstance(value, str):
        return _number(value, above=0), 1.0
    match = _RATE_PATTERN.fullmatch(value)
    if match is None:
        raise RuleError(_RATE_RULE, short(value), _number_hint(value, whole=False))
    count = float(match["n"])
    window_s = float(match["count"] or 1) * _UNIT_S[match["unit"]]
    if count <= 0 or window_s <= 0:
        raise RuleError(_RATE_RULE, short(value))

    return count / window_s, window_s


def burst(value: object) -> int:
    """
    Check how many requests may start back to back after an idle spell.
    """
    return _whole(value, at_least=1, at_most=100_000)


def concurrency(value: object) -> int:
    """
    Check how many requests may be in flight at once.
    """
    return _whole(value, at_least=1, at_most=1000)


def timeout(value: object) -> float:
    """
    Check the seconds one HTTP request may take.
    """
    return _number(value, above=0, at_most=3600)


def deadline(value: object) -> float | None:
    """
    Check the seconds the whole run may take; null means no deadline.
    """
    if value is None:
        return None
    try:
        return _number(value, above=0)
    except RuleError as exc:
        raise RuleError(f"{exc.rule} or null", exc.shown, exc.fix) from None


def shutdown_grace(value: object) -> float:
    """
    Check the seconds requests in flight may finish after a stop signal.
    """
    return _number(value, at_least=0)


def max_attempts(value: object) -> int:
    """
    Check how many requests one target may get, the first one included.
    """
    return _whole(value, at_least=1, at_most=100)


def backoff(value: object) -> float:
    """
    Check a backoff wait in seconds.
    """
    return _number(value, at_least=0)


def budget_ratio(value: object) -> float:
    """
    Check the share of first attempts the run may spend on retries.
    """
    return _number(value, at_least=0, at_most=10)


def budget_floor(value: object) -> int:
    """
    Check the retries the run may spend whatever its size.
    """
    return _whole(value, at_least=0, at_most=1_000_000)


def circuit_failures(value: object) -> int:
    """
    Check how many targets in a row may fail transiently before sending stops.
    """
    return _whole(value, at_least=0, at_most=1_000_000)


def cooldown(value: object) -> float:
    """
    Check the seconds an open circuit waits before its next probe.
    """
    return _number(value, at_least=0, at_most=3600)


def probes(value: object) -> int:
    """
    Check how many failed probes in a row end the run.
    """
    return _whole(value, at_least=1, at_most=1000)


def _number(
    value: object,
    *,
    above: float | None = None,
    at_least: float | None = None,
    at_most: float | None = None,
) -> float:
    """
    Return a finite int or float within bounds, as a float.
    """
    rule = f"must be a number {_bounds(above, at_least, at_most)}"
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise RuleError(rule, short(value), _number_hint(value, whole=False))
    if isinstance(value, float) and not math.isfinite(value):
        raise RuleError(rule, short(value), "infinity and NaN are not allowed")
    if (
        (above is not None and not value > above)
        or (at_least is not None and not value >= at_least)
        or (at_most is not None and not value <= at_most)
    ):
        raise RuleError(rule, short(value))

    try:
        return float(value)
    except OverflowError:
        raise RuleError(rule, short(value), "a float cannot hold it") from None


def _whole(value: object, *, at_least: int, at_most: int) -> int:
    """
    Return an int (not a bool, not a float) within bounds.
    """
    rule = f"must be a whole number {_bounds(None, at_least, at_most)}"
    if isinstance(value, bool) or not isinstance(value, int):
        fix = _number_hint(value, whole=True)
        if isinstance(value, float) and value.is_integer():
            fix = f"write {int(value)}" if at_least <= value <= at_most else None
        raise RuleError(rule, short(value), fix)
    if not at_least <= value <= at_most:
        raise RuleError(rule, short(value))
    return value


def _bounds(above: float | None, at_least: float | None, at_most: float | None) -> str:
    """
    Return bounds as text, such as ``> 0 and <= 3600``.
    """
    parts = []
    if above is not None:
        parts.append(f"> {above:g}")
    if at_least is not None:
        parts.append(f">= {at_least:g}")
    if at_most is not None:
        parts.append(f"<= {at_most:g}")
    return " and ".join(parts)


def _number_hint(value: object, *, whole: bool) -> str | None:
    """
    Suggest the plain number a string spells, if it spells one.

    YAML 1.1 reads ``1e3`` (no dot) as text, and quoted digits are text too.
    """
    if not isinstance(value, str):
        return None
    try:
        number = float(value)
    except ValueError:
        return None
    if not math.isfinite(number) or (whole and not number.is_integer()):
        return None

    plain = int(number) if number.is_integer() and abs(number) < 1e15 else number
    return f"write a plain number such as {plain!r}"


def endpoint(value: object) -> str:
    """
    Return the endpoint URL without a trailing slash.

    Only https, except plain http to a loopback host (the simulator, a tunnel).
    """
    if not isinstance(value, str):
        rule = "must be a URL such as https://modelarts.cn-north-4.myhuaweicloud.com"
        raise RuleError(rule, short(value))
    shown = short(_URL_QUERY.sub("?***", _URL_USERINFO.sub("***@", value)))
    if " " in value or not value.isprintable():
        raise RuleError("must not contain spaces or control characters", shown)
    try:
        parts = urlsplit(value)
        port = parts.port
    except ValueError:
        raise RuleError("must be a valid URL", shown) from None

    scheme = parts.scheme.lower()
    if "@" in parts.netloc:
        fix = "credentials come from environment variables"
        raise RuleError("must not contain user info (user:password@)", shown, fix)
    if scheme not in ("http", "https") or not parts.hostname or port == 0:
        raise RuleError("must be an absolute https:// URL with a host", shown)
    if scheme == "http" and not _is_loopback(parts.hostname):
        rule = (
            "must use https; plain http is allowed only for localhost, 127.0.0.0/8, ::1"
        )
        raise RuleError(rule, shown)
    if parts.path not in ("", "/") or "?" in value or "#" in value:
        fix = (
            f"give only {parts.scheme}://{parts.netloc}; the API path is added per call"
        )
        raise RuleError("must not have a path, query or fragment", shown, fix)

    return value.removesuffix("/")


def _is_loopback(host: str) -> bool:
    """
    Tell whether a URL's host is this machine: localhost, 127.0.0.0/8 or ::1.
    """
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def name(value: object) -> str:
    """
    Check a plain non-empty text value (a user, an account, a path).
    """
    if isinstance(value, str) and value.strip() and len(value) <= 255:
        return value.strip()

    raise RuleError("must be non-empty text of at most 255 characters", short(value))


def env_name(value: object) -> str:
    """
    Check an environment variable's name, never echoing what may be a secret.
    """
    if isinstance(value, str) and _ENV_PATTERN.fullmatch(value):
        return value

    rule = "must name an environment variable (letters, digits, _; no leading digit)"
    if isinstance(value, str) and len(value) > _LONG_ENV_VALUE:
        shown = f"a {len(value)}-character string, not shown in case it is a secret"
        fix = "put the secret in an environment variable and write that variable's name"
        raise RuleError(rule, shown, fix)
    raise RuleError(rule, short(value))
