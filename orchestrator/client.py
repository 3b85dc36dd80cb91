"""
Call the ModelArts API: one method per call, HTTP answers turned into results.

The client knows HTTP and the API and nothing of retries: every failure leaves
as one of the typed errors in :mod:`orchestrator.errors`, which says itself
whether it is worth retrying.
"""

from __future__ import annotations

import email.utils
import json
import re
import ssl
import time
from collections.abc import Callable, Mapping
from contextvars import ContextVar
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import aiohttp
from aiohttp.connector import Connection
from yarl import URL

from orchestrator import __version__
from orchestrator.auth import Auth, RequestInfo
from orchestrator.config import Settings
from orchestrator.errors import (
    ApiError,
    AuthError,
    BusyError,
    ConfigError,
    ForbiddenError,
    NotFoundError,
    RejectedError,
    ServerError,
    StaleTokenError,
    ThrottledError,
    TlsError,
    TransportError,
)

USER_AGENT = f"modelarts-sync/{__version__}"
_JSON = {"Content-Type": "application/json"}
# Error bodies are a few hundred bytes; reading more would let a broken proxy
# fill memory with one answer.
MAX_BODY_BYTES = 64 * 1024
ERROR_TEXT_BYTES = 200
# Codes that mean the dataset (or project) is not there, whatever the status.
NOT_FOUND_CODES = frozenset({"ModelArts.4352", "ModelArts.2783", "ModelArts.6623"})
ALREADY_RUNNING_CODE = "ModelArts.4355"
BUSY_CODE = "ModelArts.4409"
SERVER_ERROR_STATUSES = frozenset({500, 502, 503, 504})
# APIG refuses an X-Sdk-Date more than 15 minutes from its own clock.
MAX_CLOCK_SKEW_S = 15 * 60.0
# RFC 9110 says whole seconds; servers in the wild also send fractions.
_SECONDS = re.compile(r"[0-9]{1,9}(\.[0-9]{1,6})?")


@dataclass(frozen=True, slots=True)
class SyncAccepted:
    """
    The server took the sync request (or a sync for the dataset already runs).
    """

    http_status: int
    request_id: str | None
    already_running: bool = False
    error_code: str | None = None


@dataclass(frozen=True, slots=True)
class SyncStatus:
    """
    A dataset's latest sync task as the status API describes it.

    ``state`` is the API's word (``QUEUING``, ``STARTING``, ``RUNNING``,
    ``COMPLETED``, ``FAILED``, ``NOT_EXIST``) or whatever new word it sends;
    an answer without one reads as ``UNKNOWN``. ``duration_s`` comes from
    ``duration_time``, which the API gives in milliseconds.
    """

    state: str
    task_id: str | None = None
    add_sample_count: int | None = None
    deleted_sample_count: int | None = None
    total_sample_count: int | None = None
    duration_s: float | None = None
    error_code: str | None = None
    error_msg: str | None = None
    request_id: str | None = None


@dataclass(frozen=True, slots=True)
class DatasetInfo:
    """
    One dataset as the list API describes it; the fields discovery needs.
    """

    dataset_id: str
    dataset_name: str
    dataset_type: int | None
    status: int | None


@dataclass(frozen=True, slots=True)
class DatasetPage:
    """
    One page of a project's dataset list and the total the server claims.
    """

    total_number: int | None
    datasets: tuple[DatasetInfo, ...]


@dataclass(frozen=True, slots=True)
class _Answer:
    status: int
    headers: Mapping[str, str]
    body: bytes
    sent_auth: Mapping[str, str]


class ModelArtsClient:
    """
    Talk to one ModelArts endpoint over one connection pool.

    Use it as an async context manager; the pool holds at most ``concurrency``
    connections, matching the requests the runner lets fly at once.
    """

    def __init__(
        self,
        endpoint: str,
        auth: Auth,
        *,
        timeout_s: float,
        concurrency: int,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self._endpoint = endpoint.rstrip("/")
        self._auth = auth
        self._timeout = aiohttp.ClientTimeout(total=timeout_s)
        self._concurrency = concurrency
        self._ssl: ssl.SSLContext | bool = ssl_context or True
        self._session: aiohttp.ClientSession | None = None
        self._fixed_auth: Mapping[str, str] | None = None

    async def __aenter__(self) -> ModelArtsClient:
        connector = aiohttp.TCPConnector(
            limit=self._concurrency, limit_per_host=self._concurrency, ssl=self._ssl
        )
        # Credentials that are the same for every request (a token) go out
        # with the session's own headers: nothing to build per request.
        self._fixed_auth = self._auth.fixed_headers()
        fixed = {} if self._fixed_auth is None else {**_JSON, **self._fixed_auth}
        self._session = aiohttp.ClientSession(
            connector=connector,
            timeout=self._timeout,
            request_class=_TimedRequest,
            headers={"User-Agent": USER_AGENT, **fixed},
            raise_for_status=False,
        )
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def close(self) -> None:
        """
        Close the connection pool.
        """
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def sync_data(
        self,
        project_id: str,
        dataset_id: str,
        *,
        on_sent: Callable[[], None] | None = None,
    ) -> SyncAccepted:
        """
        Ask ModelArts to re-read one dataset's input location.

        ``ModelArts.4355`` (a sync task already exists) is an accepted answer
        with ``already_running`` set: the data is being synced either way.

        Raises:
            ApiError: a subclass saying how the call failed.
        """
        path = sync_path(project_id, dataset_id)
        answer = await self._request("POST", path, project_id, on_sent=on_sent)

        request_id = answer.headers.get("X-Request-Id")
        if 200 <= answer.status < 300:
            return SyncAccepted(http_status=answer.status, request_id=request_id)

        error = await self._error_for(answer, project_id)
        if error.error_code == ALREADY_RUNNING_CODE:
            return SyncAccepted(
                http_status=answer.status,
                request_id=error.request_id,
                already_running=True,
                error_code=ALREADY_RUNNING_CODE,
            )
        raise error

    async def sync_status(
        self,
        project_id: str,
        dataset_id: str,
        *,
        on_sent: Callable[[], None] | None = None,
    ) -> SyncStatus:
        """
        Read the state of a dataset's latest sync task.

        Raises:
            ApiError: a subclass saying how the call failed.
        """
        path = (
            f"/v2/{_segment(project_id)}/datasets/{_segment(dataset_id)}"
            "/sync-data/status"
        )
        answer = await self._request("GET", path, project_id, on_sent=on_sent)
        if not 200 <= answer.status < 300:
            raise await self._error_for(answer, project_id)

        document = _json_object(answer, "sync status")
        return SyncStatus(
            state=_first_text(document, "status") or "UNKNOWN",
            task_id=_first_text(document, "task_id"),
            add_sample_count=_count(document.get("add_sample_count")),
            deleted_sample_count=_count(document.get("deleted_sample_count")),
            total_sample_count=_count(document.get("total_sample_count")),
            duration_s=_duration_s(document.get("duration_time")),
            error_code=_first_text(document, "error_code"),
            error_msg=_first_text(document, "error_msg"),
            request_id=answer.headers.get("X-Request-Id"),
        )

    async def list_datasets(
        self,
        project_id: str,
        *,
        offset: int,
        limit: int,
        on_sent: Callable[[], None] | None = None,
    ) -> DatasetPage:
        """
        Read one page of a project's datasets; ``offset`` is passed through as is.

        Entries without a usable id are left out: nothing could be done with them.

        Raises:
            ApiError: a subclass saying how the call failed.
        """
        path = f"/v2/{_segment(project_id)}/datasets?offset={offset}&limit={limit}"
        answer = await self._request("GET", path, project_id, on_sent=on_sent)
        if not 200 <= answer.status < 300:
            raise await self._error_for(answer, project_id)

        document = _json_object(answer, "dataset list")
        entries = document.get("datasets")
        datasets = []
        for entry in entries if isinstance(entries, list) else ():
            info = _dataset_info(entry)
            if info is not None:
                datasets.append(info)
        return DatasetPage(_count(document.get("total_number")), tuple(datasets))

    async def _request(
        self,
        method: str,
        path: str,
        project_id: str,
        *,
        on_sent: Callable[[], None] | None = None,
    ) -> _Answer:
        """
        Send one signed request and read a bounded answer.

        Raises:
            TransportError: no answer arrived (refused, reset, timed out).
        """
        if self._session is None:
            raise RuntimeError("ModelArtsClient used outside 'async with'")

        url = URL(self._endpoint + path, encoded=True)
        body = b""
        headers: dict[str, str] | None = None
        sent_auth = self._fixed_auth
        if sent_auth is None:
            headers = dict(_JSON)
            sent_auth = await self._auth.headers(
                RequestInfo(method, url, project_id, body, headers)
            )
            headers.update(sent_auth)
        sent = _SendState(on_sent)

        # For a POST aiohttp writes the same bytes (Content-Length: 0 included)
        # from None as from b"", without the task per request it starts to
        # write an empty payload; a GET keeps b"" and so its Content-Length: 0.
        data = body if body or method != "POST" else None
        watching = _SENDING.set(sent)
        try:
            async with self._session.request(
                method, url, data=data, headers=headers
            ) as response:
                answer_body = await response.content.read(MAX_BODY_BYTES)
                return _Answer(
                    response.status, response.headers, answer_body, sent_auth
                )
        except TimeoutError as exc:
            raise TransportError(
                f"{method} {path}: no answer within the request timeout",
                ambiguous=sent.happened,
            ) from exc
        except aiohttp.ClientSSLError as exc:
            raise TlsError(
                f"{method} {path}: TLS handshake with {exc.host} failed: "
                f"{_tls_reason(exc)}; if the server uses a private CA, "
                "point ca_bundle at its certificate"
            ) from exc
        except aiohttp.ClientConnectorError as exc:
            raise TransportError(
                f"{method} {path}: cannot connect to {exc.host}:{exc.port}: "
                f"{exc.os_error.strerror or exc.os_error}",
                ambiguous=False,
            ) from exc
        except (aiohttp.ClientError, OSError) as exc:
            raise TransportError(
                f"{method} {path}: connection failed: {type(exc).__name__}: {exc}",
                ambiguous=sent.happened,
            ) from exc
        finally:
            _SENDING.reset(watching)

    async def _error_for(self, answer: _Answer, project_id: str) -> ApiError:
        """
        Return the typed error an answer stands for, renewing a stale token first.
        """
        error = _error_for(answer)
        if not isinstance(error, AuthError):
            return error

        skew_s = _clock_skew_s(answer.headers.get("Date"))
        if skew_s is not None and abs(skew_s) > MAX_CLOCK_SKEW_S:
            note = (
                f"this machine's clock is {abs(skew_s) / 60:.0f} minutes "
                f"{'behind' if skew_s > 0 else 'ahead of'} the server's and signed "
                "requests are refused beyond 15: fix the clock (NTP)"
            )
            error.args = (f"{error}; {note}",)
            error.error_msg = f"{error.error_msg}; {note}"
        elif await self._auth.refresh(project_id, answer.sent_auth):
            return StaleTokenError(
                f"{error}; the cached token was dropped, retrying with a new one",
                http_status=error.http_status,
                error_code=error.error_code,
                error_msg=error.error_msg,
                request_id=error.request_id,
                retry_after_s=0.0,
            )

        return error


# The send state of the request the current task is making: aiohttp awaits a
# request's send() in the task that asked for it.
_SENDING: ContextVar[_SendState | None] = ContextVar("sending", default=None)


class _TimedRequest(aiohttp.ClientRequest):
    """
    An aiohttp request that tells its send state once it is on the wire.

    aiohttp's tracing could say so too (``on_request_headers_sent``), but it
    sends every one of its signals for every request whether or not anyone
    listens, and fires that one before the headers are written: about 120 µs
    of CPU per target when measured, a quarter of the run's own cost.
    """

    async def send(self, conn: Connection) -> aiohttp.ClientResponse:
        response = await super().send(conn)
        # With no body, send() returns once the request head has been handed
        # to the transport: the request has left. With a body the writing
        # may still be under way, so this errs toward "may have arrived".
        sent = _SENDING.get()
        if sent is not None:
            sent.mark()
        return response


class _SendState:
    """
    Whether one request has left, and whom to tell when it does.
    """

    __slots__ = ("happened", "on_sent")

    def __init__(self, on_sent: Callable[[], None] | None) -> None:
        self.on_sent = on_sent
        self.happened = False

    def mark(self) -> None:
        self.happened = True
        if self.on_sent is not None:
            self.on_sent()


def client_for(
    settings: Settings, auth: Auth, ssl_context: ssl.SSLContext | None
) -> ModelArtsClient:
    """
    Return the client a run's settings ask for: endpoint, timeout, pool size, TLS.
    """
    return ModelArtsClient(
        settings.endpoint,
        auth,
        timeout_s=settings.timeout_s,
        concurrency=settings.concurrency,
        ssl_context=ssl_context,
    )


def tls_context(ca_bundle: Path | None) -> ssl.SSLContext | None:
    """
    Return a verifying TLS context trusting ``ca_bundle``, or None for the system's.

    There is deliberately no way to turn verification off: a private CA goes in
    ``ca_bundle`` instead.

    Raises:
        ConfigError: the bundle holds no usable certificate.
    """
    if ca_bundle is None:
        return None
    try:
        return ssl.create_default_context(cafile=str(ca_bundle))
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(
            f"ca_bundle {str(ca_bundle)!r}: not a PEM certificate bundle ({exc})"
        ) from exc


def sync_path(project_id: str, dataset_id: str) -> str:
    """
    Return the sync-data request's path for one dataset.
    """
    return f"/v2/{_segment(project_id)}/datasets/{_segment(dataset_id)}/sync-data"


def _segment(value: str) -> str:
    """
    Return ``value`` safe to stand as one URL path segment.
    """
    return quote(value, safe="")


def _error_for(answer: _Answer) -> ApiError:
    """
    Return the typed error an unsuccessful answer stands for.
    """
    code, message, body_request_id = _error_fields(answer.body)
    request_id = answer.headers.get("X-Request-Id") or body_request_id
    status = answer.status
    text = f"HTTP {status}" + (f" {code}" if code else "") + f": {message}"
    fields: dict[str, Any] = {
        "http_status": status,
        "error_code": code,
        "error_msg": message,
        "request_id": request_id,
    }

    if code == BUSY_CODE:
        return BusyError(text, **fields)
    if status == 401:
        return AuthError(text, **fields)
    if status == 403:
        return ForbiddenError(text, **fields)
    if status == 404 or code in NOT_FOUND_CODES:
        return NotFoundError(text, **fields)
    retry_after_s = parse_retry_after(answer.headers.get("Retry-After"))
    if status == 429:
        return ThrottledError(text, retry_after_s=retry_after_s, **fields)
    if status in SERVER_ERROR_STATUSES:
        return ServerError(text, retry_after_s=retry_after_s, **fields)

    return RejectedError(text, **fields)


def _error_fields(body: bytes) -> tuple[str | None, str, str | None]:
    """
    Return the error code, message and request id an error body carries.

    ModelArts and APIG use ``error_code``/``error_msg``; other Huawei Cloud
    services answer ``errorCode``/``errorMsg`` or ``code``/``message``. A body
    that is not such JSON becomes the message, cut to 200 bytes.
    """
    try:
        document = json.loads(body)
    except ValueError:
        document = None
    if not isinstance(document, dict):
        return None, _snippet(body), None

    code = _first_text(document, "error_code", "errorCode", "code")
    message = _first_text(document, "error_msg", "errorMsg", "message")
    request_id = _first_text(document, "request_id", "requestId")

    return code, message or _snippet(body), request_id


def _json_object(answer: _Answer, what: str) -> dict[str, Any]:
    """
    Return a successful answer's JSON object body.

    Raises:
        ServerError: the body is not a JSON object (a proxy's page, a cut body);
            transient, as a retry usually gets the real answer.
    """
    try:
        document = json.loads(answer.body)
    except ValueError:
        document = None
    if not isinstance(document, dict):
        raise ServerError(
            f"HTTP {answer.status}: the {what} answer is not a JSON object: "
            f"{_snippet(answer.body)}",
            http_status=answer.status,
            request_id=answer.headers.get("X-Request-Id"),
        )

    return document


def _dataset_info(entry: object) -> DatasetInfo | None:
    if not isinstance(entry, dict):
        return None
    dataset_id = _first_text(entry, "dataset_id")
    if not dataset_id:
        return None

    return DatasetInfo(
        dataset_id=dataset_id,
        dataset_name=_first_text(entry, "dataset_name") or "",
        dataset_type=_count(entry.get("dataset_type")),
        status=_count(entry.get("status")),
    )


def _count(value: object) -> int | None:
    """
    Return a count the API sent as a number or digits, else None.
    """
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value if value >= 0 else None
    if isinstance(value, str) and value.strip().isdigit():
        return int(value.strip())

    return None


def _duration_s(value: object) -> float | None:
    """
    Return seconds from the API's ``duration_time`` in milliseconds.
    """
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        return None
    try:
        milliseconds = float(value)
    except ValueError:
        return None
    if not milliseconds >= 0 or milliseconds == float("inf"):
        return None

    return round(milliseconds / 1000.0, 3)


def _first_text(document: Mapping[str, Any], *keys: str) -> str | None:
    for key in keys:
        value = document.get(key)
        if isinstance(value, str | int) and not isinstance(value, bool):
            return str(value)[:500]

    return None


def _snippet(body: bytes) -> str:
    text = body[:ERROR_TEXT_BYTES].decode("utf-8", errors="replace").strip()
    return text or "(empty body)"


def _clock_skew_s(date_header: str | None) -> float | None:
    """
    Return how far the server's clock is ahead of ours, from its Date header.
    """
    if not date_header:
        return None
    try:
        server = email.utils.parsedate_to_datetime(date_header)
    except (TypeError, ValueError, IndexError):
        return None
    if server.tzinfo is None:
        return None

    return server.timestamp() - time.time()


def _tls_reason(exc: aiohttp.ClientSSLError) -> str:
    certificate_error = getattr(exc, "certificate_error", None)
    reason = getattr(certificate_error, "verify_message", None) or getattr(
        exc.os_error, "reason", None
    )

    return str(reason or exc.os_error)


def parse_retry_after(value: str | None, *, now: float | None = None) -> float | None:
    """
    Return the seconds a ``Retry-After`` header asks for, or None if unusable.

    Accepts delta-seconds and HTTP dates (RFC 9110); a date in the past is 0.
    """
    if value is None:
        return None
    value = value.strip()
    if _SECONDS.fullmatch(value):
        return float(value)

    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        return None
    seconds = when.timestamp() - (time.time() if now is None else now)

    return max(0.0, seconds)
