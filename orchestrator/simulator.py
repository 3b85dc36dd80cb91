"""
A ModelArts stand-in on aiohttp.web: the server behind every test, demo and benchmark.

It answers the dataset APIs the orchestrator calls (sync, sync status, list, show) and
an IAM token endpoint, checks ``X-Auth-Token`` like APIG, throttles over a sliding
one-second window and plays scripted faults per dataset. Every request ends as one
`Received` record, in memory and, with ``log_path``, as one JSON line: that record is
what tests judge a client by.

This module is the HTTP side: it listens (HTTP or HTTPS), stamps each request's
arrival, reads its body, asks the gateway for an answer, then applies latency and
sends the answer, resets the connection or holds it, and keeps the record. The rest
lives in one module per idea:

    simgateway       the order of checks: route, IAM token, credential, rate
                     limit, fault, normal answer; which fault answers what
    simauth          IAM tokens and APIG's token and AK/SK signature checks
    simstate         the simulated service: catalogue, sync tasks, rate window
    simrecords       `Received`, the server's notes on a request, the JSON log

Records are completed when a request finishes; ``received`` is sorted by arrival
(``Received.seq``), and a hung request appears there once released, though its log
line is written when the hang begins.
"""

from __future__ import annotations

import asyncio
import email.utils
import signal
import ssl
import time
from bisect import insort
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from aiohttp import web

from orchestrator import runtime, simgateway, simrecords
from orchestrator.errors import ConfigError

# Plan, its parts, load_plan and Received are re-exported ("X as X"), so a caller
# gets the server, what drives it and what it records from one import.
from orchestrator.faultplan import HANG as HANG
from orchestrator.faultplan import RESET as RESET
from orchestrator.faultplan import Dataset as Dataset
from orchestrator.faultplan import Fault as Fault
from orchestrator.faultplan import Plan as Plan
from orchestrator.faultplan import load_plan as load_plan
from orchestrator.simrecords import Received as Received

# stop() cuts hangs and latency short itself; this bounds anything else in progress.
_SHUTDOWN_GRACE_S = 0.5


class Simulator:
    """
    The ModelArts stand-in server; use as ``async with Simulator(plan) as sim``.

    State (sync tasks, unconsumed faults, the rate window, records) lives as long as
    the object; a stopped simulator is not restarted. ``clock`` drives arrival
    times, the rate window and sync progress, so tests can move time by hand;
    latency and hangs use the event loop's real time. With ``keep_records=False``
    requests are only logged, never kept: :attr:`received` stays empty.
    """

    def __init__(
        self,
        plan: Plan | None = None,
        *,
        log_path: Path | None = None,
        clock: Callable[[], float] = time.monotonic,
        keep_records: bool = True,
    ) -> None:
        self.plan = plan or Plan()
        self.log_path = log_path
        self._keep_records = keep_records
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
        self._gateway = simgateway.Gateway(self.plan, self._server_time)
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
        self._gateway.admission.set_rate(rate_per_s)

    def revoke_tokens(self) -> None:
        """
        Stop accepting every token issued so far; IAM hands out a new one.
        """
        self._gateway.credentials.revoke()

    @property
    def current_token(self) -> str | None:
        """
        Return the token the API accepts (and IAM issues) now.
        """
        return self._gateway.credentials.current_token

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

    def _arrive(self, request: web.BaseRequest) -> simrecords.Exchange:
        kind, project_id, dataset_id = simgateway.route(request.method, request.path)
        exchange = simrecords.Exchange(
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
        self, request: web.BaseRequest, exchange: simrecords.Exchange
    ) -> web.StreamResponse:
        body = await request.read()
        exchange.body_size = len(body)
        answer = self._gateway.decide(request, exchange, body)
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

    def _server_time(self) -> float:
        return time.time() + self.plan.clock_offset_s

    def _finish(self, request: web.BaseRequest, exchange: simrecords.Exchange) -> None:
        """
        Turn the notes on a request into its record, keep it and log it.
        """
        self._in_flight -= 1
        if self._in_flight == 0:
            self._idle.set()
        record = simrecords.record(request, exchange, self._clock())
        if self._keep_records:
            if self._received and self._received[-1].seq > record.seq:
                insort(self._received, record, key=lambda r: r.seq)
            else:
                self._received.append(record)
        if self._log is not None and not exchange.logged:
            self._log.write(record)

    def _log_hang(
        self, request: web.BaseRequest, exchange: simrecords.Exchange
    ) -> None:
        """
        Log a hung request when it starts hanging, with no finish time.

        Readers of the log (another process) must see a hang while it lasts; the
        log is append-only, so that line is the request's only one.
        """
        if self._log is not None:
            line = simrecords.record(request, exchange, exchange.arrived_s)
            self._log.write(line, hung=True)
            exchange.logged = True


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
    # A simulator that stalls for its own collector stamps a backlog of
    # arrivals at once, which bench/ would count against the client's pacing:
    # uvloop, what startup made frozen, short young collections, and no
    # records in memory for full collections to walk. Served so, a 500/s
    # client's busiest second at the simulator went from 513-514 to 500.
    runtime.run(
        _serve_until_signalled(plan, host, port, log_path, ssl_context), young=0
    )


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
        # Nothing reads records in memory here: the log holds them, and a
        # long-lived server's memory stays flat.
        simulator = Simulator(plan, log_path=log_path, keep_records=False)
        url = await simulator.start(host, port, ssl_context=ssl_context)
        try:
            print(f"listening on {url}", flush=True)
            await stop.wait()
        finally:
            await simulator.stop()
    finally:
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(signum)
