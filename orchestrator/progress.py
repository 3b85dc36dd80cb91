"""
What a run is doing while it runs: a progress bar on a terminal, log events elsewhere.

On a terminal (stderr is a TTY) a rich progress bar shows done/total, the rate,
retries and an ETA, and log lines are printed above it through the same rich
console, so neither garbles the other. Anywhere else (cron, systemd, a pod) a
``run.progress`` log event every ``interval_s`` seconds carries the same facts.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import Counter
from collections.abc import AsyncIterator

import structlog
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from orchestrator.report import Outcome

DEFAULT_INTERVAL_S = 10.0

log = structlog.get_logger(__name__)


class RunProgress:
    """
    Count finished targets and show them (a RunObserver).

    With a ``console`` it draws a bar there; without, it logs ``run.progress``.
    Retries are counted as targets finish, so a target still retrying shows
    its retries once it is done.
    """

    def __init__(
        self,
        total: int,
        *,
        console: Console | None = None,
        interval_s: float = DEFAULT_INTERVAL_S,
    ) -> None:
        self.total = total
        self.statuses: Counter[str] = Counter()
        self.retries = 0
        self._interval_s = interval_s
        self._started = time.monotonic()
        self._bar: Progress | None = None
        self._task: TaskID | None = None
        if console is not None:
            self._bar = _bar(console)
            self._task = self._bar.add_task("syncing", total=total, retries=0, rate=0.0)

    def set_total(self, total: int) -> None:
        """
        Replace the first estimate of the total once the work list is known.
        """
        self.total = total
        if self._bar is not None and self._task is not None:
            self._bar.update(self._task, total=total)

    @property
    def done(self) -> int:
        """
        Return how many targets have finished, whatever their status.
        """
        return sum(self.statuses.values())

    def on_outcome(self, outcome: Outcome) -> None:
        """
        Count one finished target and move the bar.
        """
        self.statuses[outcome.status] += 1
        self.retries += max(outcome.attempts - 1, 0)
        if self._bar is not None and self._task is not None:
            self._bar.update(
                self._task,
                completed=self.done,
                retries=self.retries,
                rate=self.rate_per_s(),
            )

    def rate_per_s(self) -> float:
        """
        Return finished targets per second since the run started.
        """
        elapsed_s = time.monotonic() - self._started
        return self.done / elapsed_s if elapsed_s > 0 else 0.0

    def eta_s(self) -> float | None:
        """
        Return the seconds left at the rate so far, or None before any finished.
        """
        rate = self.rate_per_s()
        if rate <= 0:
            return None
        return (self.total - self.done) / rate

    def log_event(self) -> None:
        """
        Log one ``run.progress`` event with the counts so far.
        """
        eta_s = self.eta_s()
        log.info(
            "run.progress",
            done=self.done,
            total=self.total,
            succeeded=self.statuses["succeeded"],
            failed=self.statuses["failed"],
            retries=self.retries,
            rate_per_s=round(self.rate_per_s(), 2),
            eta_s=None if eta_s is None else round(eta_s, 1),
        )

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[None]:
        """
        Show the bar, or log every ``interval_s``, for the ``async with`` block.
        """
        self._started = time.monotonic()
        if self._bar is not None:
            with self._bar:
                yield
            return

        ticker = asyncio.create_task(self._tick())
        try:
            yield
        finally:
            ticker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await ticker

    async def _tick(self) -> None:
        while True:
            await asyncio.sleep(self._interval_s)
            self.log_event()


def _bar(console: Console) -> Progress:
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[rate]:.1f}/s"),
        TextColumn("retries {task.fields[retries]}"),
        TimeElapsedColumn(),
        TextColumn("ETA"),
        TimeRemainingColumn(),
        console=console,
        # Logs reach the console through logs.configure(stream=...), not by
        # swapping sys.stderr, which structlog captured at configure time.
        redirect_stderr=False,
        redirect_stdout=False,
    )
