"""
Sign requests with Huawei Cloud's AK/SK algorithm, ``SDK-HMAC-SHA256``.

Pure functions: no I/O, no clock (the caller passes ``now``), no HTTP library.
``signing_headers`` gives the headers to add to a request, ``sign`` the value of
its ``Authorization`` header. Both work on the URL exactly as it goes on the wire.

The output matches ``huaweicloudsdkcore`` 3.1.219 byte for byte (the tests prove
it against the SDK). Where the SDK's signer and the published description of the
algorithm differ, this module follows the SDK, since the SDK is what the gateway
is known to accept:

- The path is percent-decoded before it is split and re-encoded, so ``%2F`` is a
  segment separator for signing, ``%41`` signs as ``A`` and a ``%`` that starts no
  escape signs as ``%25``.
- A header whose name contains ``_`` is neither signed nor listed in
  ``SignedHeaders``. Every other header given is signed, ``Content-Type``
  included.
- Values are trimmed of all Unicode whitespace (``str.strip``); inner runs of
  spaces are kept as they are.
- Query pairs are sorted on their decoded text, by code point, before encoding.
- A non-empty body is hashed as the value of an ``X-Sdk-Content-Sha256`` header
  when the request carries one (the SDK adds ``UNSIGNED-PAYLOAD`` itself for
  content types other than JSON and BSON; here the caller adds it if wanted).

Invalid arguments raise ``ValueError``: they are bugs in the caller, not answers
a user can act on. No message or repr ever holds a header value, the AK or the
SK. ``sign`` turns the SK into a keyed HMAC before it does anything else, so a
traceback that shows local variables shows no SK for any later failure.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Mapping
from datetime import UTC, datetime
from urllib.parse import SplitResult, quote, unquote, urlsplit

ALGORITHM = "SDK-HMAC-SHA256"
EMPTY_BODY_SHA256 = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
SDK_DATE_FORMAT = "%Y%m%dT%H%M%SZ"

HEADER_DATE = "X-Sdk-Date"
HEADER_HOST = "Host"
HEADER_PROJECT_ID = "X-Project-Id"
HEADER_SECURITY_TOKEN = "X-Security-Token"  # noqa: S105 a header name, not a secret
HEADER_CONTENT_SHA256 = "X-Sdk-Content-Sha256"

# RFC 9110 token characters: a header name or method outside them is a bug.
_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
# Letters and digits are always kept by quote(); these complete RFC 3986's
# unreserved set, the only characters the algorithm leaves unencoded.
_UNRESERVED = "-_.~"
_DEFAULT_PORTS = {"http": 80, "https": 443}


def sdk_date(now: datetime) -> str:
    """
    Format an aware datetime as the ``X-Sdk-Date`` value, in UTC.

    The gateway rejects a date more than 15 minutes away from its own clock.
    """
    if now.tzinfo is None or now.utcoffset() is None:
        raise ValueError(f"now must be timezone-aware, got naive {now!r}")

    return now.astimezone(UTC).strftime(SDK_DATE_FORMAT)


def signing_headers(
    *,
    url: str,
    now: datetime,
    project_id: str | None,
    security_token: str | None,
) -> dict[str, str]:
    """
    Return the headers a request to ``url`` needs before it is signed.

    ``Host`` is the lowercased host with the port only when it is not the
    scheme's default; send this very value, since it is signed.
    """
    headers = {HEADER_DATE: sdk_date(now), HEADER_HOST: _host(url)}
    if project_id is not None:
        _require_non_empty(project_id, "project_id")
        headers[HEADER_PROJECT_ID] = project_id
    if security_token is not None:
        _require_non_empty(security_token, "security_token")
        headers[HEADER_SECURITY_TOKEN] = security_token

    return headers


def canonical_request(
    method: str, url: str, headers: Mapping[str, str], body: bytes
) -> tuple[str, str]:
    """
    Return the canonical request text and the signed header names (``a;b;c``).

    ``url`` is the URL as sent: its path and query already percent-encoded.
    """
    if not _TOKEN.fullmatch(method):
        raise ValueError(f"method must be an HTTP token, got {method!r}")
    _require_utf8(url, "url")
    parts = urlsplit(url)
    header_block, signed_names = _canonical_headers(headers)

    canonical = "\n".join(
        (
            method.upper(),
            _canonical_path(parts.path),
            _canonical_query(parts.query),
            header_block,
            signed_names,
            _payload_hash(headers, body),
        )
    )

    return canonical, signed_names


def sign(
    *,
    method: str,
    url: str,
    headers: Mapping[str, str],
    body: bytes,
    ak: str,
    sk: str,
) -> str:
    """
    Return the ``Authorization`` header value for a request.

    ``headers`` are all the headers to sign and must already hold ``X-Sdk-Date``
    and ``Host`` (see ``signing_headers``); send exactly these, unchanged.
    """
    # Keying the HMAC first and dropping the name keeps the SK out of every
    # traceback frame from here on; the HMAC object's repr does not show its key.
    mac = _keyed_hmac(sk)
    del sk
    if not ak or not ak.isascii() or not ak.isprintable() or " " in ak:
        raise ValueError("ak must be non-empty printable ASCII without spaces")
    date = _signing_date(headers)
    if _find_header(headers, HEADER_HOST) is None:
        raise ValueError("headers lack Host; add the headers from signing_headers()")

    canonical, signed_names = canonical_request(method, url, headers, body)
    canonical_hash = hashlib.sha256(canonical.encode("utf-8")).hexdigest()
    mac.update(f"{ALGORITHM}\n{date}\n{canonical_hash}".encode())

    return (
        f"{ALGORITHM} Access={ak}, SignedHeaders={signed_names}, "
        f"Signature={mac.hexdigest()}"
    )


def _host(url: str) -> str:
    """
    Return the ``Host`` value for ``url``: host, and port unless the default.
    """
    parts = urlsplit(url)
    if parts.username is not None or parts.password is not None:
        # The message leaves the URL out: user info may hold a password.
        raise ValueError("url must not carry user info (user:password@)")
    if parts.scheme not in _DEFAULT_PORTS or not parts.hostname:
        raise ValueError(f"url must be http(s)://host[:port]/..., got {url!r}")
    if not parts.hostname.isascii():
        raise ValueError(f"url host must be ASCII (punycode), got {parts.hostname!r}")

    host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
    port = _port(parts, url)
    if port is not None and port != _DEFAULT_PORTS[parts.scheme]:
        host = f"{host}:{port}"

    return host


def _port(parts: SplitResult, url: str) -> int | None:
    """
    Return the explicit port of a split URL, or None when it names none.
    """
    try:
        return parts.port
    except ValueError:
        raise ValueError(f"url port must be 0-65535, got {url!r}") from None


def _canonical_path(path: str) -> str:
    """
    Return the path decoded, re-encoded segment by segment, ending in ``/``.
    """
    # An empty path goes on the wire as "/"; the SDK would fail on it instead.
    segments = unquote(path or "/").split("/")
    encoded = "/".join(_encode(segment) for segment in segments)

    return encoded if encoded.endswith("/") else f"{encoded}/"


def _canonical_query(query: str) -> str:
    """
    Return the query's pairs decoded, sorted, re-encoded and joined by ``&``.
    """
    # A key without "=" counts as an empty value, which is how the SDK would
    # have sent it; a literal "+" stays a plus, since the SDK encodes spaces
    # as %20 and never as "+".
    pairs = []
    for item in query.split("&"):
        if item:
            key, _, value = item.partition("=")
            pairs.append((unquote(key), unquote(value)))
    pairs.sort()

    return "&".join(f"{_encode(key)}={_encode(value)}" for key, value in pairs)


def _canonical_headers(headers: Mapping[str, str]) -> tuple[str, str]:
    """
    Return the ``name:value`` lines (each ending in a newline) and signed names.
    """
    trimmed: dict[str, str] = {}
    seen: set[str] = set()
    for name, value in headers.items():
        lower = _header_name(name)
        if lower in seen:
            raise ValueError(f"header {name!r} is given twice (names ignore case)")
        seen.add(lower)
        # The SDK leaves names holding "_" unsigned (gateways may drop them).
        if "_" not in name:
            trimmed[lower] = _header_value(name, value)

    names = sorted(trimmed)
    block = "\n".join(f"{name}:{trimmed[name]}" for name in names) + "\n"

    return block, ";".join(names)


def _header_name(name: str) -> str:
    """
    Return a header name lowercased, refusing one HTTP does not allow.
    """
    if not _TOKEN.fullmatch(name):
        raise ValueError(f"header name must be an HTTP token, got {name!r}")
    if name.lower() == "authorization":
        raise ValueError("headers already hold Authorization; sign a fresh set")

    return name.lower()


def _header_value(name: str, value: str) -> str:
    """
    Return a header value trimmed, refusing one that would break its line.
    """
    _require_utf8(value, f"header {name!r} value")
    stripped = value.strip()
    if "\r" in stripped or "\n" in stripped or "\0" in stripped:
        raise ValueError(f"header {name!r} value holds CR, LF or NUL")

    return stripped


def _payload_hash(headers: Mapping[str, str], body: bytes) -> str:
    """
    Return the body's hex SHA-256, or the hash the request declares for it.
    """
    if not body:
        return EMPTY_BODY_SHA256
    declared = _find_header(headers, HEADER_CONTENT_SHA256)
    if declared is not None and declared.strip():
        return declared.strip()

    return hashlib.sha256(body).hexdigest()


def _signing_date(headers: Mapping[str, str]) -> str:
    """
    Return the request's ``X-Sdk-Date``, checked to be in the exact format.
    """
    value = _find_header(headers, HEADER_DATE)
    if value is None:
        raise ValueError(
            "headers lack X-Sdk-Date; add the headers from signing_headers()"
        )
    try:
        parsed = datetime.strptime(value, SDK_DATE_FORMAT)
    except ValueError:
        parsed = None
    # strptime also takes one-digit fields, which the SDK would re-format
    # before signing while the header keeps them: only the exact form is safe.
    if parsed is None or parsed.strftime(SDK_DATE_FORMAT) != value:
        raise ValueError(f"X-Sdk-Date must look like 20240131T235959Z, got {value!r}")

    return value


def _find_header(headers: Mapping[str, str], name: str) -> str | None:
    """
    Return the value of a header whatever the case of its name, or None.
    """
    wanted = name.lower()
    for key, value in headers.items():
        if key.lower() == wanted:
            return value

    return None


def _keyed_hmac(sk: str) -> hmac.HMAC:
    """
    Return an HMAC-SHA256 keyed with the SK, refusing an empty or broken one.
    """
    _require_non_empty(sk, "sk")
    _require_utf8(sk, "sk")

    return hmac.new(sk.encode("utf-8"), digestmod=hashlib.sha256)


def _encode(text: str) -> str:
    """
    Percent-encode UTF-8 text, keeping only letters, digits and ``-_.~``.
    """
    return quote(text, safe=_UNRESERVED)


def _require_non_empty(value: str, what: str) -> None:
    """
    Refuse an empty string, naming the argument but never its value.
    """
    if not value:
        raise ValueError(f"{what} must not be empty; pass None to leave it out")


def _require_utf8(text: str, what: str) -> None:
    """
    Refuse text with lone surrogates, naming it but never quoting it.
    """
    # UnicodeEncodeError's repr holds the whole text, which may be a secret, so
    # the error is replaced outside the except block (no chained context).
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        position = exc.start
    else:
        return
    raise ValueError(f"{what} is not valid Unicode (lone surrogate at {position})")
