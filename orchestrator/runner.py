"""
The engine: feed targets to workers, pace and retry their requests, and
collect exactly one outcome per target.

Three layers, each readable alone: :meth:`Runner.run` (the whole run, its
stop rules), :meth:`Runner._sync_target` (one target with its retries) and
:meth:`Runner._attempt` (one request through the concurrency cap and the rate
limiter).

Waiting (``wait.enabled``): a target whose POST was accepted hands its worker
back and is followed by a task of its own (:meth:`Runner._follow`) that polls
the status API through :meth:`Runner.call`, so POSTs for the rest of the list
are not held up by syncs in progress. Its outcome is recorded when the wait
ends.

Stopping: a deadline, a signal or a refused credential calls :meth:`stop`.
Nothing new starts from then on; workers that are only waiting (for a slot, the
limiter or a backoff) are cancelled at once; requests already on the wire get
``grace_s`` to finish, then are cancelled too. Waits are cancelled at once: a
status poll is harmless to cut short. Every target that did not finish
ends ``cancelled`` with the stop's reason.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from typing import Protocol, TypeVar

import structlog

from orchestrator import logs, retry, waiter
from orchestrator.breaker import CircuitBreaker
from orchestrator.budget import RetryBudget
from orchestrator.client import SyncAccepted, SyncStatus
from orchestrator.config import Settings, Target
from orchestrator.errors import (
    ApiError,
    AuthError,
    CredentialUnavailableError,
    OrchestratorError,
    StoppedError,
    ThrottledError,
    TlsError,
    TransportError,
)
from orchestrator.limiter import Clock, MonotonicClock, RateLimiter
from orchestrator.report import Attempt, Outcome, Status
from orchestrator.slots import Slots

log = structlog.get_logger(__name__)

# Targets in their backoff wait hold a worker but no connection; twice the
# connection count keeps the pipe full while a few of them wait.
WORKERS_PER_CONNECTION = 2

_T = TypeVar("_T")


class SyncClient(Protocol):
    """
    The one call the runner needs from a ModelArts client.
    """

    async def sync_data(
        self,
        project_id: str,
        dataset_id: str,
        *,
        on_sent: Callable[[], None] | None = None,
    ) -> SyncAccepted:
        """
        Ask for one dataset's sync.
        """

    async def sync_status(
        self,
        project_id: str,
        dataset_id: str,
        *,
        on_sent: Callable[[], None] | None = None,
    ) -> SyncStatus:
        """
        Read the state of one dataset's latest sync (only when waiting).
        """


class RunObserver(Protocol):
    """
    Hears of each target's final outcome as it happens (journal, progress, metrics).

    Called on the event loop, in the worker that finished the target: keep it
    quick and never raise.
    """

    def on_outcome(self, outcome: Outcome) -> None:
        """
        Record one target's final outcome.
        """


@dataclass(frozen=True, slots=True)
class RunResult:
    """
    Every target's outcome, in plan order, and why the run stopped early if it did.
    """

    outcomes: tuple[Outcome, ...]
    stop_reason: str | None
    started_at: float
    finished_at: float


class _RunStoppedError(Exception):
    """
    Raised inside a worker to abandon its target because the run is stopping.
    """


class _CircuitOpenedError(Exception):
    """
    Raised before sending when the circuit opened while the request waited.
    """


@dataclass(slots=True)
class _Progress:
    """
    What one target has done so far; the source of its outcome.
    """

    target: Target
    started_at: float = field(default_factory=time.time)
    history: list[Attempt] = field(default_factory=list)
    sending: bool = False
    last_error: ApiError | None = None
    budget_denied: bool = False

    def outcome(
        self, status: Status, reason: str | None, accepted: SyncAccepted | None = None
    ) -> Outcome:
        error = self.last_error if accepted is None else None
        return Outcome(
            project_id=self.target.project_id,
            dataset_id=self.target.dataset_id,
            status=status,
            reason=reason,
            already_running=accepted.already_running if accepted else False,
            http_status=accepted.http_status if accepted else _status_of(error),
            error_code=accepted.error_code if accepted else _code_of(error),
            error_msg=error.error_msg or str(error) if error else None,
            request_id=accepted.request_id if accepted else _request_id_of(error),
            started_at=self.started_at,
            finished_at=time.time(),
            history=tuple(self.history),
            dataset_name=self.target.dataset_name,
        )


class Runner:
    """
    Run one batch of targets against one client under the settings' limits.
    """

    def __init__(
        self,
        settings: Settings,
        client: SyncClient,
        *,
        clock: Clock | None = None,
        limiter: RateLimiter | None = None,
        observers: Sequence[RunObserver] = (),
    ) -> None:
        self._settings = settings
        self._observers = tuple(observers)
        self._client = client
        self._clock = clock or MonotonicClock()
        self._limiter = limiter or RateLimiter(
            settings.rate_limit_per_s,
            window_s=settings.rate_window_s,
            burst=settings.rate_burst,
            clock=self._clock,
        )
        self._in_flight = Slots(settings.concurrency)
        self._budget = RetryBudget(
            settings.retry.budget_ratio, settings.retry.budget_floor
        )
        self._breaker = CircuitBreaker(
            settings.circuit,
            endpoint=settings.endpoint,
            clock=self._clock,
            on_gave_up=lambda: self.stop("circuit_open"),
        )
        self._stop_reason: str | None = None
        self._workers: dict[asyncio.Task[None], _Progress | None] = {}
        self._waits: set[asyncio.Task[None]] = set()
        self._grace_timer: asyncio.TimerHandle | None = None
        self._deadline: asyncio.TimerHandle | None = None
        self._started_mono = 0.0

    @property
    def stop_reason(self) -> str | None:
        """
        Return why the run is stopping, or None while it runs normally.
        """
        return self._stop_reason

    async def run(self, targets: Sequence[Target]) -> RunResult:
        """
        Sync every target once, retrying transient failures, and return outcomes.
        """
        started_at = time.time()
        self._started_mono = self._clock.now()
        outcomes: list[Outcome | None] = [None] * len(targets)
        pending = iter(enumerate(targets))
        log.info(
            "run.started",
            targets=len(targets),
            rate_limit=self._settings.rate_limit_per_s,
            concurrency=self._settings.concurrency,
        )

        self.start_deadline()
        worker_count = min(
            len(targets), self._settings.concurrency * WORKERS_PER_CONNECTION
        )
        for _ in range(worker_count):
            task = asyncio.create_task(self._worker(pending, outcomes))
            self._workers[task] = None
        try:
            await asyncio.gather(*self._workers, return_exceptions=True)
            # Workers start every wait before they end, so this set is complete.
            await asyncio.gather(*self._waits, return_exceptions=True)
        finally:
            if self._deadline is not None:
                self._deadline.cancel()
            if self._grace_timer is not None:
                self._grace_timer.cancel()

        for index, outcome in enumerate(outcomes):
            if outcome is None:
                never = _never_started(targets[index], self._stop_reason)
                self._finish(outcomes, index, never)

        final = tuple(outcome for outcome in outcomes if outcome is not None)
        return RunResult(final, self._stop_reason, started_at, time.time())

    def stop(self, reason: str, *, grace_s: float | None = None) -> None:
        """
        Stop dispatching; let requests on the wire finish within ``grace_s``.

        Later calls change nothing: the first reason is the one the report keeps.
        """
        if self._stop_reason is not None:
            return
        if grace_s is None:
            grace_s = self._settings.shutdown_grace_s
        self._stop_reason = reason
        log.warning("run.stopping", reason=reason, grace_s=grace_s)

        for task, progress in self._workers.items():
            if progress is None or not progress.sending:
                task.cancel()
        for wait in self._waits:
            wait.cancel()
        loop = asyncio.get_running_loop()
        self._grace_timer = loop.call_later(grace_s, self._cancel_all)

    def abort(self, reason: str) -> None:
        """
        Cancel everything now, requests on the wire included (a second Ctrl-C).
        """
        self.stop(reason, grace_s=0.0)
        self._cancel_all()

    def _cancel_all(self) -> None:
        for task in (*self._workers, *self._waits):
            task.cancel()

    async def call(self, send: Callable[[Callable[[], None]], Awaitable[_T]]) -> _T:
        """
        Make one read-only API call as the run makes its POSTs, and return its answer.

        The call takes a connection slot and a rate-limiter ticket (so polls and
        listings share the run's ceiling) and is retried by the same policy;
        ``send`` gets the ticket's ``mark_sent`` to pass on as ``on_sent``.

        Raises:
            StoppedError: the run is stopping; nothing more is sent.
            ApiError: the call failed for good; one that stops the run stops it.
        """
        retrying = retry.retrying(
            self._settings.retry, sleep=self._clock.sleep, on_retry=self._on_retry
        )
        try:
            async for attempt in retrying:
                with attempt:
                    async with self._in_flight:
                        self._refuse_if_stopping()
                        ticket = (
                            self._limiter.try_acquire() or await self._limiter.acquire()
                        )
                        answer = await send(ticket.mark_sent)
        except ApiError as error:
            if error.stops_run:
                self.stop(error.reason)
            raise

        return answer

    def start_deadline(self) -> None:
        """
        Start the deadline's clock now, if the settings have one and it has not started.

        :meth:`run` starts it itself; a caller that does work for the run first
        (discovering targets) starts it earlier, so the deadline covers that too.
        """
        if self._settings.deadline_s is None or self._deadline is not None:
            return
        loop = asyncio.get_running_loop()
        self._deadline = loop.call_later(
            self._settings.deadline_s, self.stop, "deadline"
        )

    async def _worker(
        self,
        pending: Iterator[tuple[int, Target]],
        outcomes: list[Outcome | None],
    ) -> None:
        """
        Take targets one at a time until none is left or the run stops.
        """
        task = asyncio.current_task()
        assert task is not None
        for index, target in pending:
            if self._stop_reason is not None:
                return
            progress = _Progress(target)
            self._workers[task] = progress
            # The target's log lines carry its ids; the next target binds its
            # own. Nothing this task does after its last target logs, so the
            # restoring bound_contextvars (16 us a target) is not needed.
            structlog.contextvars.bind_contextvars(
                project_id=target.project_id, dataset_id=target.dataset_id
            )
            try:
                outcome = await self._sync_target(progress)
            except (asyncio.CancelledError, _RunStoppedError):
                reason = self._stop_reason or "interrupted"
                self._finish(outcomes, index, progress.outcome("cancelled", reason))
                raise
            except Exception:
                # A bug, not a server's answer: keep the traceback in the
                # log and still account for the target in the report.
                log.exception("sync.crashed")
                outcome = progress.outcome("failed", "internal_error")
            if self._settings.wait.enabled and outcome.status == "succeeded":
                wait = asyncio.create_task(self._follow(outcomes, index, outcome))
                self._waits.add(wait)
            else:
                self._finish(outcomes, index, outcome)
            self._workers[task] = None

    def _finish(
        self, outcomes: list[Outcome | None], index: int, outcome: Outcome
    ) -> None:
        """
        Record a target's one outcome: in the result list, the log, the observers.
        """
        outcomes[index] = outcome
        self.record(outcome)

    def record(self, outcome: Outcome) -> None:
        """
        Log a target's final outcome and tell the observers.

        The run calls it for every target it runs; a caller that settles some
        targets without a request (discovery) calls it for those.
        """
        # Binding the ids costs more than a filtered-out line (-q): only for a
        # line that is written.
        level = logging.ERROR if outcome.status == "failed" else logging.INFO
        if logs.enabled_for(level):
            with structlog.contextvars.bound_contextvars(
                project_id=outcome.project_id, dataset_id=outcome.dataset_id or None
            ):
                _log_outcome(outcome)
        for observer in self._observers:
            observer.on_outcome(outcome)

    async def _follow(
        self, outcomes: list[Outcome | None], index: int, accepted: Outcome
    ) -> None:
        """
        Wait for an accepted target's sync to end, then record its final outcome.
        """
        project_id, dataset_id = accepted.project_id, accepted.dataset_id

        def poll() -> Awaitable[SyncStatus]:
            return self.call(
                lambda on_sent: self._client.sync_status(
                    project_id, dataset_id, on_sent=on_sent
                )
            )

        watch = waiter.SyncWatch(poll, self._settings.wait, self._clock)
        try:
            self._refuse_if_stopping()
            finished = await watch.until_done()
        except (asyncio.CancelledError, StoppedError):
            stopped = self._stop_reason or "interrupted"
            final = replace(accepted, status="cancelled", reason=stopped)
            self._finish(outcomes, index, self._after_wait(final, watch))
            raise
        except ApiError as error:
            final = replace(accepted, status="failed", reason=_failure_reason(error))
            final = replace(
                final,
                error_code=error.error_code,
                error_msg=error.error_msg or str(error),
            )
        except Exception:
            log.exception("sync.crashed")
            final = replace(accepted, status="failed", reason="internal_error")
        else:
            final = waiter.judged(accepted, finished, watch.last, self._settings.wait)
        self._finish(outcomes, index, self._after_wait(final, watch))

    def _refuse_if_stopping(self) -> None:
        """
        Raise StoppedError once the run is stopping: nothing new may start.
        """
        if self._stop_reason is not None:
            raise StoppedError(self._stop_reason)

    def _after_wait(self, outcome: Outcome, watch: waiter.SyncWatch) -> Outcome:
        return replace(outcome, finished_at=time.time(), sync=watch.report())

    async def _sync_target(self, progress: _Progress) -> Outcome:
        """
        Sync one target, retrying transient failures, and return its outcome.

        A target discovery saw synchronizing already is not POSTed again.
        """
        if progress.target.already_running:
            return replace(progress.outcome("succeeded", None), already_running=True)

        def allow_retry(error: BaseException | None) -> bool:
            # A 429's retry waits for the adaptive pace, which already holds
            # the load to what the server admits: it spends no budget.
            if isinstance(error, ThrottledError):
                return True
            progress.budget_denied = not self._budget.try_spend()
            return not progress.budget_denied

        self._budget.record_first_attempt()
        try:
            accepted = await retry.call(
                lambda: self._attempt(progress),
                self._settings.retry,
                sleep=self._backoff,
                on_retry=self._on_retry,
                allow_retry=allow_retry,
            )
        except ApiError as error:
            progress.last_error = error
            if error.stops_run:
                self.stop(error.reason)
            reason = _failure_reason(error)
            if reason == "retries_exhausted":
                self._breaker.on_target_failed()
            else:
                self._breaker.on_target_answered()
            if reason == "retries_exhausted" and progress.budget_denied:
                reason = "retry_budget_exhausted"
            return progress.outcome("failed", reason)

        self._breaker.on_target_answered()
        return progress.outcome("succeeded", None, accepted)

    async def _attempt(self, progress: _Progress) -> SyncAccepted:
        """
        Send one request once the circuit admits it; a probe's result steers it.
        """
        while True:
            if self._stop_reason is not None:
                raise _RunStoppedError
            if not self._breaker.closed and await self._breaker.admit():
                break
            try:
                return await self._send(progress, probe=False)
            except _CircuitOpenedError:
                continue  # it opened while this request waited for its turn

        answered: bool | None = None
        try:
            accepted = await self._send(progress, probe=True)
            answered = True
        except ApiError as error:
            answered = not error.transient
            raise
        finally:
            self._breaker.on_probe_done(answered=answered)

        return accepted

    async def _send(self, progress: _Progress, *, probe: bool) -> SyncAccepted:
        """
        Send one request for the target once a connection and the pace allow.
        """
        if self._stop_reason is not None:
            raise _RunStoppedError
        target = progress.target

        async with self._in_flight:
            ticket = self._limiter.try_acquire() or await self._limiter.acquire()
            if not probe and not self._breaker.closed:
                raise _CircuitOpenedError
            offset_s = ticket.released_at - self._started_mono
            progress.sending = True
            try:
                accepted = await self._client.sync_data(
                    target.project_id, target.dataset_id, on_sent=ticket.mark_sent
                )
            except (CredentialUnavailableError, TlsError):
                raise  # no HTTP request left, so there is no attempt to record
            except ApiError as error:
                progress.last_error = error
                progress.history.append(self._failed_attempt(offset_s, error))
                if isinstance(error, ThrottledError) and error.retry_after_s is None:
                    self._limiter.on_throttled(ticket.released_at)
                raise
            except asyncio.CancelledError:
                duration_ms = self._elapsed_ms(ticket.released_at)
                progress.history.append(Attempt(offset_s, duration_ms, ambiguous=True))
                raise
            finally:
                progress.sending = False

        progress.history.append(
            Attempt(
                offset_s,
                self._elapsed_ms(ticket.released_at),
                http_status=accepted.http_status,
                error_code=accepted.error_code,
                request_id=accepted.request_id,
            )
        )
        if logs.enabled_for(logging.DEBUG):
            log.debug(
                "sync.attempted",
                attempt=len(progress.history),
                http_status=accepted.http_status,
            )
        return accepted

    def _failed_attempt(self, offset_s: float, error: ApiError) -> Attempt:
        duration_ms = self._elapsed_ms(self._started_mono + offset_s)
        ambiguous = isinstance(error, TransportError) and error.ambiguous
        log.debug(
            "sync.attempted",
            http_status=error.http_status,
            error_code=error.error_code,
            duration_ms=duration_ms,
        )
        return Attempt(
            offset_s,
            duration_ms,
            http_status=error.http_status,
            error_code=error.error_code,
            request_id=error.request_id,
            ambiguous=ambiguous,
        )

    def _elapsed_ms(self, since: float) -> float:
        return round((self._clock.now() - since) * 1000.0, 1)

    async def _backoff(self, seconds: float) -> None:
        """
        Wait before a retry, unless the run is stopping.
        """
        if self._stop_reason is not None:
            raise _RunStoppedError
        await self._clock.sleep(seconds)

    def _on_retry(self, error: OrchestratorError, attempt: int, wait_s: float) -> None:
        """
        Log the scheduled retry; a server's Retry-After holds back every request.
        """
        retry_after_s = getattr(error, "retry_after_s", None)
        if retry_after_s is not None:
            self._limiter.pause_until(self._clock.now() + wait_s)
        log.warning(
            "sync.retry_scheduled",
            attempt=attempt,
            wait_s=round(wait_s, 3),
            http_status=getattr(error, "http_status", None),
            error_code=getattr(error, "error_code", None),
            retry_after_s=retry_after_s,
            error=str(error),
        )


def _never_started(target: Target, stop_reason: str | None) -> Outcome:
    now = time.time()
    return Outcome(
        project_id=target.project_id,
        dataset_id=target.dataset_id,
        status="cancelled",
        reason=stop_reason or "interrupted",
        started_at=None,
        finished_at=now,
        dataset_name=target.dataset_name,
    )


def _failure_reason(error: ApiError) -> str:
    """
    Return the report's reason for a target that ended on ``error``.
    """
    if error.transient and not isinstance(error, AuthError):
        return "retries_exhausted"

    return error.reason


def _log_outcome(outcome: Outcome) -> None:
    fields = {
        "attempt": outcome.attempts,
        "http_status": outcome.http_status,
        "error_code": outcome.error_code,
        "request_id": outcome.request_id,
    }
    if outcome.sync is not None:
        fields["sync_state"] = outcome.sync.state
    if outcome.dataset_name is not None:
        fields["dataset_name"] = outcome.dataset_name
    if outcome.status == "succeeded" and outcome.sync is not None:
        log.info("sync.finished", already_running=outcome.already_running, **fields)
    elif outcome.status == "succeeded":
        log.info("sync.accepted", already_running=outcome.already_running, **fields)
    elif outcome.status == "failed":
        log.error("sync.failed", reason=outcome.reason, **fields)
    elif outcome.status == "skipped":
        log.info("sync.skipped", reason=outcome.reason, **fields)
    else:
        log.info("sync.cancelled", reason=outcome.reason, **fields)


def _status_of(error: ApiError | None) -> int | None:
    return error.http_status if error else None


def _code_of(error: ApiError | None) -> str | None:
    return error.error_code if error else None


def _request_id_of(error: ApiError | None) -> str | None:
    return error.request_id if error else None
