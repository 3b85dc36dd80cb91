"""
A ModelArts stand-in on aiohttp.web: the server behind every test, demo and benchmark.

It answers the dataset APIs the orchestrator calls (sync, sync status, list, show) and
an IAM token endpoint, checks ``X-Auth-Token`` like APIG, throttles over a sliding
one-second window and plays scripted faults per dataset. Every request ends as one
`Received` record, in memory and, with ``log_path``, as one JSON line: that record is
what tests judge a client by.

One request passes these steps in order, as APIG and the service behind it would::

    route            unknown path or method -> 404 APIG.0101, nothing else applies
    IAM token        POST /v3/auth/tokens -> 201 (no auth, no limit, no faults)
    credential       a bad signature (plan.access_keys), or a token that is not
                     the current one -> 401 APIG.0301
    rate limit       over the window -> 429 APIG.0308, outcome "throttled"
    fault            ``always`` for the dataset, else its next scripted fault
    normal answer    state changes (a new sync task) happen here, at arrival
    latency          then the answer is sent, or the connection reset, or held

Known limitations, chosen on purpose:

- AK/SK signatures are checked with the project's own signer, recomputed from
  what arrived, for the keys in ``Plan.access_keys``; so the simulator proves that
  the client signs what it sends, not that the signer matches Huawei's (the SDK
  comparison in tests/test_signer.py does that). With ``Plan(token=None)`` and
  no keys, requests are served unchecked.
- Records are completed when a request finishes, so log lines follow finishing order;
  ``Received.seq`` is the arrival order and ``received`` is sorted by it. A hung
  request is logged when its hang begins, with ``finished_s`` null, so that another
  process reading the log sees it; in memory it appears once released.
- The JSON log is written from the event loop with a flush per line; lines are small
  and a loopback benchmark spends far more time in HTTP parsing.
"""

from __future__ import annotations

import asyncio
import email.utils
import json
import re
import signal
import ssl
import time
import uuid
from bisect import insort
from collections import deque
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import web

from orchestrator import simauth, simrecords, simstate
from orchestrator.errors import ConfigError

# Plan, its parts and load_plan are re-exported ("X as X"), so a caller gets the
# server and what drives it from one import.
from orchestrator.faultplan import HANG as HANG
from orchestrator.faultplan import RESET as RESET
from orchestrator.faultplan import Action
from orchestrator.faultplan import Dataset as Dataset
from orchestrator.faultplan import Fault as Fault
from orchestrator.faultplan import Plan as Plan
from orchestrator.faultplan import load_plan as load_plan
from orchestrator.simrecords import Kind, Outcome
from orchestrator.simrecords import Received as Received

_ID = r"[A-Za-z0-9_-]+"
_DATASETS_PATH = re.compile(
    rf"/v2/({_ID})/datasets(?:/({_ID})(/sync-data(?:/status)?)?)?\Z"
)
_KINDS: dict[tuple[str, bool, str | None], Kind] = {
    ("GET", False, None): "list",
    ("GET", True, None): "show",
    ("POST", True, "/sync-data"): "sync",
    ("GET", True, "/sync-data/status"): "status",
}
_IAM_PATH = "/v3/auth/tokens"

# Codes from the ModelArts and APIG error tables; the messages are our own words.
_DEFAULT_ERRORS: dict[int, tuple[str, str]] = {
    400: ("ModelArts.4409", "Too many running tasks in the dataset, try again later"),
    401: ("APIG.0301", "Incorrect IAM authentication information"),
    403: ("APIG.0302", "The IAM user may not call this API"),
    404: simstate.DATASET_MISSING,
    429: ("APIG.0308", "The throttling threshold has been reached"),
    500: ("ModelArts.4360", "The dataset synchronization service failed"),
    501: simstate.TYPE_UNSUPPORTED,
    502: ("APIG.0202", "Backend unavailable"),
    503: ("ModelArts.4360", "The dataset synchronization service is unavailable"),
    504: ("APIG.0201", "Backend timeout"),
}
_NO_API = ("APIG.0101", "The API does not exist or has not been published")
# stop() cuts hangs and latency short itself; this bounds anything else in progress.
_SHUTDOWN_GRACE_S = 0.5


@dataclass(slots=True)
class _Exchange:
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


@dataclass(frozen=True, slots=True)
class _Answer:
    """
    What the server decided to send back, before any latency.
    """

    status: int = 200
    body: bytes = b"{}"
    content_type: str = "application/json"
    error_code: str | None = None
    headers: Mapping[str, str] = field(default_factory=dict)
    action: Action = "answer"
    outcome: Outcome = "answered"


def _error(
    status: int, error: tuple[str, str], outcome: Outcome = "answered"
) -> _Answer:
    code, message = error
    body = json.dumps({"error_code": code, "error_msg": message}).encode()
    return _Answer(status=status, body=body, error_code=code, outcome=outcome)


def _route(method: str, path: str) -> tuple[Kind, str | None, str | None]:
    """
    Return the API a request calls and the project and dataset ids in its path.
    """
    if path == _IAM_PATH:
        return ("token" if method == "POST" else "other"), None, None
    match = _DATASETS_PATH.match(path)
    if match is None:
        return "other", None, None
    project_id, dataset_id, tail = match.groups()

    return (
        _KINDS.get((method, dataset_id is not None, tail), "other"),
        project_id,
        dataset_id,
    )


def _fault_answer(fault: Fault) -> _Answer:
    """
    Return the scripted answer of a fault that carries a status.
    """
    assert fault.status is not None
    headers = {} if fault.retry_after is None else {"Retry-After": fault.retry_after}
    if fault.body is not None:
        body, content_type = fault.body.encode(), fault.content_type or "text/html"
        return _Answer(fault.status, body, content_type, fault.error_code, headers)
    if fault.status < 400 and fault.error_code is None:
        return _Answer(fault.status, headers=headers)

    code, message = _DEFAULT_ERRORS.get(fault.status, (f"SIM.{fault.status}", "Error"))
    code, message = fault.error_code or code, fault.error_msg or message
    body = json.dumps({"error_code": code, "error_msg": message}).encode()
    content_type = fault.content_type or "application/json"
    return _Answer(fault.status, body, content_type, code, headers)


class Simulator:
    """
    The ModelArts stand-in server; use as ``async with Simulator(plan) as sim``.

    State (sync tasks, unconsumed faults, the rate window, records) lives as long as
    the object; a stopped simulator is not restarted. ``clock`` drives arrival
    times, the rate window and sync progress, so tests can move time by hand;
    latency and hangs use the event loop's real time.
    """

    def __init__(
        self,
        plan: Plan | None = None,
        *,
        log_path: Path | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.plan = plan or Plan()
        self.log_path = log_path
        self.max_in_flight = 0
        self._clock = clock
        self._received: list[Received] = []
        self._arrivals = 0
        self._in_flight = 0
        self._idle = asyncio.Event()
        self._idle.set()
        self._stopping = asyncio.Event()
        self._waiters: list[tuple[int, asyncio.Future[None]]] = []
        self._delayed: set[asyncio.Task[Any]] = set()
        self._scripted = {key: deque(f) for key, f in self.plan.faults.items()}
        self._datasets = simstate.DatasetService(self.plan)
        self._admission = simstate.Admission(self.plan.rate_limit_per_s)
        self._credentials = simauth.Credentials(self.plan, self._server_time)
        self._runner: web.ServerRunner | None = None
        self._url: str | None = None
        self._log: simrecords.RequestLog | None = None

    @property
    def url(self) -> str:
        """
        Return the base URL, ``http://127.0.0.1:PORT``; only once started.
        """
        if self._url is None:
            raise RuntimeError("the simulator has not been started")
        return self._url

    @property
    def received(self) -> list[Received]:
        """
        Return a copy of the finished requests' records, in arrival order.
        """
        return list(self._received)

    @property
    def in_flight(self) -> int:
        """
        Return how many requests are being handled right now.
        """
        return self._in_flight

    def sync_requests(self) -> list[Received]:
        """
        Return the records of sync-data POSTs, in arrival order.
        """
        return [r for r in self._received if r.kind == "sync"]

    def set_rate_limit(self, rate_per_s: float | None) -> None:
        """
        Change the server's own rate limit while it runs (None: no limit).
        """
        self._admission.set_rate(rate_per_s)

    def peak_arrivals(self, window_s: float = 1.0, kind: str | None = "sync") -> int:
        """
        Return the most requests of ``kind`` (None: any) that arrived within any
        ``window_s`` span, whatever their outcome: the rate the server really saw.
        """
        times = sorted(r.arrived_s for r in self._received if kind in (None, r.kind))
        peak, first = 0, 0
        for last, arrived_s in enumerate(times):
            while arrived_s - times[first] >= window_s:
                first += 1
            peak = max(peak, last - first + 1)

        return peak

    async def wait_for_requests(self, n: int, timeout_s: float = 10.0) -> None:
        """
        Wait until ``n`` requests have arrived in all (finished or not).

        Raises TimeoutError, saying how many arrived, after ``timeout_s``.
        """
        if self._arrivals >= n:
            return
        waiter = (n, asyncio.get_running_loop().create_future())
        self._waiters.append(waiter)
        try:
            async with asyncio.timeout(timeout_s):
                await waiter[1]
        except TimeoutError:
            message = f"{self._arrivals} of {n} requests arrived in {timeout_s}s"
            raise TimeoutError(message) from None
        finally:
            self._waiters.remove(waiter)

    async def wait_until_idle(self, timeout_s: float = 10.0) -> None:
        """
        Wait until no request is being handled, so every record is complete.
        """
        async with asyncio.timeout(timeout_s):
            await self._idle.wait()

    async def start(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        ssl_context: ssl.SSLContext | None = None,
    ) -> str:
        """
        Listen on ``host:port`` (0: a free port) and return the base URL.

        With ``ssl_context`` it serves HTTPS and the URL says so.

        Raises ConfigError when the address cannot be bound or the log opened.
        """
        if self._runner is not None or self._stopping.is_set():
            raise RuntimeError("a simulator starts once")
        self._open_log()
        try:
            self._runner = runner = await _listen(self._handle, host, port, ssl_context)
        except ConfigError:
            await self.stop()
            raise

        bound_host, bound_port = runner.addresses[0][:2]
        bound_host = f"[{bound_host}]" if ":" in bound_host else bound_host
        scheme = "https" if ssl_context is not None else "http"
        self._url = f"{scheme}://{bound_host}:{bound_port}"
        return self._url

    async def stop(self) -> None:
        """
        Stop at once: release hangs, drop delayed answers, close connections and log.

        Requests cut short this way are recorded as ``hung`` or ``abandoned``.
        Calling it again does nothing.
        """
        self._stopping.set()
        for task in self._delayed:
            task.cancel()
        if self._runner is not None:
            runner, self._runner = self._runner, None
            await runner.cleanup()
        if self._log is not None:
            self._log.close()
            self._log = None

    async def __aenter__(self) -> Simulator:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    def _open_log(self) -> None:
        if self.log_path is not None:
            self._log = simrecords.RequestLog(self.log_path)

    async def _handle(self, request: web.BaseRequest) -> web.StreamResponse:
        exchange = self._arrive(request)
        try:
            return await self._serve(request, exchange)
        finally:
            self._finish(request, exchange)

    def _arrive(self, request: web.BaseRequest) -> _Exchange:
        kind, project_id, dataset_id = _route(request.method, request.path)
        exchange = _Exchange(
            self._arrivals,
            self._clock(),
            kind,
            project_id,
            dataset_id,
            self.plan.latency_s,
        )
        self._arrivals += 1
        self._in_flight += 1
        self._idle.clear()
        self.max_in_flight = max(self.max_in_flight, self._in_flight)
        for n, future in self._waiters:
            if n <= self._arrivals and not future.done():
                future.set_result(None)

        return exchange

    async def _serve(
        self, request: web.BaseRequest, exchange: _Exchange
    ) -> web.StreamResponse:
        body = await request.read()
        exchange.body_size = len(body)
        answer = self._decide(request, exchange, body)
        if answer.action == "hang":
            exchange.outcome = "hung"
            self._log_hang(request, exchange)
            await self._stopping.wait()
            return _drop(request)
        if exchange.latency_s > 0:
            await self._delay(exchange.latency_s)
        if answer.action == "reset":
            exchange.outcome = "reset"
            return _drop(request)

        exchange.status = answer.status
        exchange.error_code = answer.error_code
        exchange.outcome = answer.outcome
        headers = {
            "X-Request-Id": exchange.request_id,
            "Content-Type": answer.content_type,
            "Date": email.utils.formatdate(self._server_time(), usegmt=True),
            **answer.headers,
        }
        return web.Response(status=answer.status, body=answer.body, headers=headers)

    async def _delay(self, latency_s: float) -> None:
        """
        Sleep before answering, in a way stop() can cut short.
        """
        task = asyncio.current_task()
        assert task is not None
        self._delayed.add(task)
        try:
            await asyncio.sleep(latency_s)
        finally:
            self._delayed.discard(task)

    def _decide(
        self, request: web.BaseRequest, exchange: _Exchange, body: bytes
    ) -> _Answer:
        """
        Apply routing, auth, rate limit and faults, then answer as the API would.
        """
        kind = exchange.kind
        if kind == "other":
            return _error(404, _NO_API)
        if kind == "token":
            return self._issue_token(body, exchange)
        refusal = self._credentials.refusal(request, body)
        if refusal is not None:
            return _error(401, ("APIG.0301", refusal))
        if kind in self.plan.rate_limited_kinds and not self._admission.admit(
            exchange.arrived_s
        ):
            return _error(429, _DEFAULT_ERRORS[429], outcome="throttled")

        fault = self._next_fault(exchange.dataset_id)
        if fault is not None:
            exchange.fault = fault
            if fault.latency_ms is not None:
                exchange.latency_s = fault.latency_ms / 1000
            if fault.action != "answer":
                return _Answer(action=fault.action)
            if fault.status is not None:
                return _fault_answer(fault)

        return self._answer_api(request, exchange)

    def revoke_tokens(self) -> None:
        """
        Stop accepting every token issued so far; IAM hands out a new one.
        """
        self._credentials.revoke()

    @property
    def current_token(self) -> str | None:
        """
        Return the token the API accepts (and IAM issues) now.
        """
        return self._credentials.current_token

    def _server_time(self) -> float:
        return time.time() + self.plan.clock_offset_s

    def _next_fault(self, dataset_id: str | None) -> Fault | None:
        if dataset_id is None:
            return None
        always = self.plan.always.get(dataset_id)
        if always is not None:
            return always
        scripted = self._scripted.get(dataset_id)

        return scripted.popleft() if scripted else None

    def _answer_api(self, request: web.BaseRequest, exchange: _Exchange) -> _Answer:
        """
        Answer a dataset API call from the simulated service, as of its arrival.
        """
        project_id, dataset_id = exchange.project_id, exchange.dataset_id
        now, datasets = exchange.arrived_s, self._datasets
        assert project_id is not None
        if exchange.kind == "list":
            reply = datasets.list_datasets(project_id, request.query, now)
        else:
            assert dataset_id is not None
            if exchange.kind == "show":
                reply = datasets.show(project_id, dataset_id, now)
            elif exchange.kind == "status":
                reply = datasets.sync_status(project_id, dataset_id, now)
            else:
                reply = datasets.sync(project_id, dataset_id, now)
        body = json.dumps(reply.payload).encode()

        return _Answer(status=reply.status, body=body, error_code=reply.error_code)

    def _issue_token(self, body: bytes, exchange: _Exchange) -> _Answer:
        """
        Answer an IAM token request, noting the project it was scoped to.
        """
        reply = self._credentials.issue_token(body)
        exchange.project_id = reply.project_id
        token = reply.subject_token
        headers = {} if token is None else {"X-Subject-Token": token}
        payload = json.dumps(reply.payload).encode()

        return _Answer(status=reply.status, body=payload, headers=headers)

    def _finish(self, request: web.BaseRequest, exchange: _Exchange) -> None:
        """
        Turn the notes on a request into its record, keep it and log it.
        """
        self._in_flight -= 1
        if self._in_flight == 0:
            self._idle.set()
        record = _record(request, exchange, self._clock())
        if self._received and self._received[-1].seq > record.seq:
            insort(self._received, record, key=lambda r: r.seq)
        else:
            self._received.append(record)
        if self._log is not None and not exchange.logged:
            self._log.write(record)

    def _log_hang(self, request: web.BaseRequest, exchange: _Exchange) -> None:
        """
        Log a hung request when it starts hanging, with no finish time.

        Readers of the log (another process) must see a hang while it lasts; the
        log is append-only, so that line is the request's only one.
        """
        if self._log is not None:
            self._log.write(_record(request, exchange, exchange.arrived_s), hung=True)
            exchange.logged = True


def _record(
    request: web.BaseRequest, exchange: _Exchange, finished_s: float
) -> Received:
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
        headers=simrecords.redacted(request.headers),
        body_size=exchange.body_size,
        seq=exchange.seq,
        query=request.query_string,
        fault=None if exchange.fault is None else exchange.fault.label,
    )


async def _listen(
    handler: Callable[[web.BaseRequest], Awaitable[web.StreamResponse]],
    host: str,
    port: int,
    ssl_context: ssl.SSLContext | None,
) -> web.ServerRunner:
    """
    Serve ``handler`` on ``host:port``; raise ConfigError if it cannot bind.
    """
    # handler_cancellation: a client that leaves ends its hang or delayed answer.
    server = web.Server(handler, handler_cancellation=True, access_log=None)
    runner = web.ServerRunner(server, shutdown_timeout=_SHUTDOWN_GRACE_S)
    await runner.setup()
    try:
        await web.TCPSite(runner, host, port, ssl_context=ssl_context).start()
    except OSError as exc:
        await runner.cleanup()
        message = f"cannot listen on {host}:{port}: {exc.strerror or exc}"
        raise ConfigError(message) from exc

    return runner


def _drop(request: web.BaseRequest) -> web.StreamResponse:
    """
    Abort the connection; aiohttp then fails quietly to send the returned answer.
    """
    if request.transport is not None:
        request.transport.abort()

    return web.Response(status=500)


def serve_forever(
    plan: Plan,
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    log_path: Path | None = None,
    ssl_context: ssl.SSLContext | None = None,
) -> None:
    """
    Serve until SIGINT or SIGTERM, then stop cleanly and return.

    Prints exactly one line to stdout once listening: ``listening on URL``.
    Raises ConfigError when the address cannot be bound or the log opened.
    """
    asyncio.run(_serve_until_signalled(plan, host, port, log_path, ssl_context))


async def _serve_until_signalled(
    plan: Plan,
    host: str,
    port: int,
    log_path: Path | None,
    ssl_context: ssl.SSLContext | None,
) -> None:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    try:
        simulator = Simulator(plan, log_path=log_path)
        url = await simulator.start(host, port, ssl_context=ssl_context)
        try:
            print(f"listening on {url}", flush=True)
            await stop.wait()
        finally:
            await simulator.stop()
    finally:
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(signum)
