"""
Follow one accepted sync through the status API until it ends or time runs out.

The status API has no push: the only way to learn that a sync finished is to
ask. Polls start one ``poll_interval`` after the POST and grow by half each
time up to a cap (see `WaitSettings`), so a long sync costs a few requests a
minute rather than one per interval; every poll is a request like any other
and the caller sends it through the run's rate limiter and retry policy.

``QUEUING``, ``STARTING``, ``RUNNING`` and any word the API may add later mean
"in progress"; ``COMPLETED``, ``FAILED`` and ``NOT_EXIST`` end the wait.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import replace

import structlog

from orchestrator.client import SyncStatus
from orchestrator.config import WaitSettings
from orchestrator.limiter import Clock
from orchestrator.report import Outcome, Status, SyncReport

log = structlog.get_logger(__name__)

TERMINAL_STATES = frozenset({"COMPLETED", "FAILED", "NOT_EXIST"})
# Each pause is this much longer than the one before, up to the cap: a sync is
# seen ending within about half its age plus one interval, and an hour-long
# sync at the default 10 s interval costs 63 polls instead of 360.
BACKOFF_FACTOR = 1.5

Poll = Callable[[], Awaitable[SyncStatus]]


class SyncWatch:
    """
    Poll one dataset's sync status until a terminal state or the wait's timeout.

    ``last`` and ``polls`` stay readable when the wait is cut short (a stopping
    run cancels it), so the report can say how far the sync had got.
    """

    def __init__(self, poll: Poll, settings: WaitSettings, clock: Clock) -> None:
        self._poll = poll
        self._settings = settings
        self._clock = clock
        self.last: SyncStatus | None = None
        self.polls = 0

    async def until_done(self) -> bool:
        """
        Return True once the sync reached a terminal state, False on timeout.

        The last poll happens at the timeout itself, so a sync that ends just
        in time is still seen ending.

        Raises:
            ApiError: a status call failed for good (the caller's retry policy
                has given up or the failure is permanent).
        """
        started = self._clock.now()
        interval_s = self._settings.poll_interval_s
        while True:
            remaining_s = self._settings.timeout_s - (self._clock.now() - started)
            if remaining_s <= 0:
                return False
            await self._clock.sleep(min(interval_s, remaining_s))

            self.last = await self._poll()
            self.polls += 1
            log.debug("sync.polled", state=self.last.state, polls=self.polls)
            if self.last.state in TERMINAL_STATES:
                return True
            interval_s = min(
                interval_s * BACKOFF_FACTOR, self._settings.max_poll_interval_s
            )

    def report(self) -> SyncReport:
        """
        Return what the report keeps of the sync, ``NOT_POLLED`` before any answer.
        """
        last = self.last
        if last is None:
            return SyncReport(state="NOT_POLLED", polls=self.polls)

        return SyncReport(
            state=last.state,
            task_id=last.task_id,
            add_sample_count=last.add_sample_count,
            deleted_sample_count=last.deleted_sample_count,
            total_sample_count=last.total_sample_count,
            duration_s=last.duration_s,
            error_code=last.error_code,
            error_msg=last.error_msg,
            polls=self.polls,
        )


def verdict(finished: bool, last: SyncStatus | None) -> tuple[Status, str | None]:
    """
    Return the target's status and reason once its wait has ended.

    ``FAILED`` fails the target (``sync_failed``), and so does a sync still in
    progress at the timeout (``sync_timeout``). ``NOT_EXIST`` after an accepted
    POST is not judged: the server keeps no task to judge it by, and the
    report's sync state says so for anyone who alerts on it.
    """
    if not finished or last is None:
        return "failed", "sync_timeout"
    if last.state == "FAILED":
        return "failed", "sync_failed"

    return "succeeded", None


def judged(
    accepted: Outcome, finished: bool, last: SyncStatus | None, settings: WaitSettings
) -> Outcome:
    """
    Return an accepted target's outcome once its wait has ended.

    A failed sync's own error code and message become the result's, so a
    reader of the report sees why without opening the ``sync`` object.
    """
    status, reason = verdict(finished, last)
    outcome = replace(accepted, status=status, reason=reason)
    if reason == "sync_failed" and last is not None:
        message = last.error_msg or "the sync task ended FAILED"
        return replace(outcome, error_code=last.error_code, error_msg=message)
    if reason == "sync_timeout":
        state = last.state if last is not None else "not yet polled"
        message = f"the sync was still {state} after {settings.timeout_s:g} s"
        return replace(outcome, error_msg=message)

    return outcome
