"""
The retry policy: what is retried, how long it waits, when it gives up.

It knows which errors are transient (each error says so itself) and nothing
of HTTP; the runner supplies the sleep, so a stopping run can cut a wait short,
and a hook that hears of every scheduled retry. :func:`retrying` is the policy
as a tenacity controller; :func:`call` is the same policy as a plain loop for
the run's hot path, where tenacity's per-call set-up was the largest cost of
ours in a profile of 10,000 unthrottled targets (bench/).
"""

from __future__ import annotations

import random
from collections.abc import Awaitable, Callable
from typing import TypeVar

import tenacity

from orchestrator.config import RetrySettings
from orchestrator.errors import OrchestratorError

OnRetry = Callable[[OrchestratorError, int, float], None]
Sleep = Callable[[float], Awaitable[None]]
AllowRetry = Callable[[BaseException | None], bool]
_T = TypeVar("_T")
_RNG = random.Random()


def backoff_s(
    attempt: int, settings: RetrySettings, rng: random.Random | None = None
) -> float:
    """
    Return the wait after failed attempt number ``attempt`` (1-based).

    Exponential backoff with full jitter: a uniform draw between
    ``initial_backoff_s`` and ``initial_backoff_s * 2**(attempt-1)``, the upper
    end capped at ``max_backoff_s``. The floor keeps throttled retries in
    seconds, as Huawei Cloud advises, rather than milliseconds.
    """
    low = settings.initial_backoff_s
    high = min(settings.max_backoff_s, low * 2.0 ** min(attempt - 1, 60))

    return (rng or _RNG).uniform(low, max(low, high))


def wait_s(
    error: BaseException | None,
    attempt: int,
    settings: RetrySettings,
    rng: random.Random | None = None,
) -> float:
    """
    Return how long to wait before retrying after ``error``.

    A server's Retry-After wins, capped at ``max_backoff_s``; otherwise backoff.
    """
    retry_after_s = getattr(error, "retry_after_s", None)
    if retry_after_s is not None:
        return min(float(retry_after_s), settings.max_backoff_s)

    return backoff_s(attempt, settings, rng)


def is_transient(error: BaseException) -> bool:
    """
    Return whether ``error`` may go away if the same request is sent again.
    """
    return isinstance(error, OrchestratorError) and error.transient


def retrying(
    settings: RetrySettings,
    *,
    sleep: Sleep,
    on_retry: OnRetry,
    allow_retry: AllowRetry | None = None,
    rng: random.Random | None = None,
) -> tenacity.AsyncRetrying:
    """
    Return a tenacity controller that retries transient errors per ``settings``.

    It re-raises the last error when it gives up, so the caller sees what the
    server said last rather than tenacity's wrapper. ``allow_retry`` (the run's
    retry budget) is asked, with the error, only when a retry is otherwise
    due, so a target's last attempt spends nothing.
    """

    def may_retry(state: tenacity.RetryCallState) -> bool:
        if allow_retry is None or state.attempt_number >= settings.max_attempts:
            return True
        return allow_retry(state.outcome.exception() if state.outcome else None)

    def wait(state: tenacity.RetryCallState) -> float:
        error = state.outcome.exception() if state.outcome else None
        return wait_s(error, state.attempt_number, settings, rng)

    def before_sleep(state: tenacity.RetryCallState) -> None:
        error = state.outcome.exception() if state.outcome else None
        waited_s = state.next_action.sleep if state.next_action else 0.0
        if isinstance(error, OrchestratorError):
            on_retry(error, state.attempt_number, waited_s)

    return tenacity.AsyncRetrying(
        retry=tenacity.retry_all(tenacity.retry_if_exception(is_transient), may_retry),
        stop=tenacity.stop_after_attempt(settings.max_attempts),
        wait=wait,
        sleep=sleep,
        before_sleep=before_sleep,
        reraise=True,
    )


async def call(
    attempt: Callable[[], Awaitable[_T]],
    settings: RetrySettings,
    *,
    sleep: Sleep,
    on_retry: OnRetry,
    allow_retry: AllowRetry | None = None,
    rng: random.Random | None = None,
) -> _T:
    """
    Await ``attempt()`` until it succeeds, retrying transient errors per ``settings``.

    The policy of :func:`retrying`, step for step: the last error is re-raised
    when attempts run out, ``allow_retry`` is asked only when a retry is
    otherwise due, and ``on_retry`` hears of each wait before it starts.
    """
    number = 1
    while True:
        try:
            return await attempt()
        except OrchestratorError as error:
            if not error.transient or number >= settings.max_attempts:
                raise
            if allow_retry is not None and not allow_retry(error):
                raise
            waited_s = wait_s(error, number, settings, rng)
            on_retry(error, number, waited_s)
            await sleep(waited_s)
            number += 1
