"""
What the simulator keeps of each request: a `Received` record and its JSON log line.

Every request ends as one record, in memory and, with a log path, as one JSON line
of `Received.as_dict` (bench/run.py reads its ``kind`` and ``arrived_s``): that
record is what tests judge a client by. Secret headers are redacted in both.

Records are completed when a request finishes, so log lines follow finishing order;
``Received.seq`` is the arrival order. A hung request is logged when its hang
begins, with ``finished_s`` null, so that another process reading the log sees it.
The log is written from the event loop with a flush per line; lines are small and a
loopback benchmark spends far more time in HTTP parsing.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from aiohttp import web
from multidict import CIMultiDict, CIMultiDictProxy

from orchestrator.errors import ConfigError
from orchestrator.faultplan import Fault

Kind = Literal["sync", "status", "list", "show", "token", "other"]
Outcome = Literal["answered", "reset", "hung", "throttled", "abandoned"]
REDACTED = "<redacted>"

_SECRET_HEADERS = ("X-Auth-Token", "Authorization", "X-Security-Token")


@dataclass(frozen=True, slots=True)
class Received:
    """
    One request as the server saw it, and how the server dealt with it.

    Times come from the simulator's clock (``time.monotonic`` unless injected).
    ``status`` is None when no answer was sent: ``reset``, ``hung``, or
    ``abandoned`` (the client left, or the server stopped, before the answer).
    ``throttled`` is the server's own rate limit; a scripted 429 is ``answered``.
    ``seq`` numbers arrivals from 0; ``fault`` names the scripted fault applied.
    """

    arrived_s: float
    finished_s: float
    method: str
    path: str
    kind: Kind
    project_id: str | None
    dataset_id: str | None
    status: int | None
    outcome: Outcome
    error_code: str | None
    request_id: str
    headers: Mapping[str, str]
    body_size: int
    seq: int = 0
    query: str = ""
    fault: str | None = None

    def as_dict(self) -> dict[str, Any]:
        """
        Return the record as plain JSON-ready values.
        """
        return {
            "seq": self.seq,
            "arrived_s": self.arrived_s,
            "finished_s": self.finished_s,
            "method": self.method,
            "path": self.path,
            "query": self.query,
            "kind": self.kind,
            "project_id": self.project_id,
            "dataset_id": self.dataset_id,
            "status": self.status,
            "outcome": self.outcome,
            "error_code": self.error_code,
            "fault": self.fault,
            "request_id": self.request_id,
            "headers": dict(self.headers),
            "body_size": self.body_size,
        }


@dataclass(slots=True)
class Exchange:
    """
    The server's working notes on one request, turned into a `Received` at the end.
    """

    seq: int
    arrived_s: float
    kind: Kind
    project_id: str | None
    dataset_id: str | None
    latency_s: float
    request_id: str = field(default_factory=lambda: uuid.uuid4().hex)
    body_size: int = 0
    status: int | None = None
    outcome: Outcome = "abandoned"
    error_code: str | None = None
    fault: Fault | None = None
    logged: bool = False


class RequestLog:
    """
    The request log: one JSON line per record, appended and flushed as written.
    """

    def __init__(self, path: Path) -> None:
        """
        Open ``path`` for appending; raise ConfigError when it cannot be opened.
        """
        try:
            self._file = path.open("a", encoding="utf-8")
        except OSError as exc:
            message = f"{path}: cannot open the request log: {exc.strerror}"
            raise ConfigError(message) from exc

    def write(self, record: Received, *, hung: bool = False) -> None:
        """
        Append one record's line; a ``hung`` one has no finish time yet.
        """
        line = record.as_dict()
        if hung:
            line["finished_s"] = None
        self._file.write(json.dumps(line) + "\n")
        self._file.flush()

    def close(self) -> None:
        """
        Close the file; nothing may be written after.
        """
        self._file.close()


def redacted(headers: Mapping[str, str]) -> CIMultiDictProxy[str]:
    """
    Return a copy of request headers with every secret one replaced.
    """
    copy = CIMultiDict(headers)
    for name in _SECRET_HEADERS:
        if name in copy:
            copy[name] = REDACTED

    return CIMultiDictProxy(copy)


def record(request: web.BaseRequest, exchange: Exchange, finished_s: float) -> Received:
    """
    Return the record of a request from the server's notes on it.
    """
    return Received(
        arrived_s=exchange.arrived_s,
        finished_s=finished_s,
        method=request.method,
        path=request.path,
        kind=exchange.kind,
        project_id=exchange.project_id,
        dataset_id=exchange.dataset_id,
        status=exchange.status,
        outcome=exchange.outcome,
        error_code=exchange.error_code,
        request_id=exchange.request_id,
        headers=redacted(request.headers),
        body_size=exchange.body_size,
        seq=exchange.seq,
        query=request.query_string,
        fault=None if exchange.fault is None else exchange.fault.label,
    )
