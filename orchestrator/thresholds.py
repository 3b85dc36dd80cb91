"""
Thresholds that judge a run: the tolerated failure ratio and the early halt.

``max_failure_ratio`` sets the exit code, as k6's thresholds do: a nightly run
over thousands of datasets where three are gone for good should not page
anyone. ``halt`` stops dispatching when most finished targets fail (a revoked
permission, a region outage), as GNU parallel's ``--halt``: hammering on is
useless and may get the account throttled.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import structlog

from orchestrator.config import HaltSettings
from orchestrator.report import Outcome

HALTED = "halted"

log = structlog.get_logger(__name__)


class HaltWatch:
    """
    Stop the run once too many finished targets failed (a RunObserver).

    Skipped targets and those cancelled by the stop itself do not count.
    """

    def __init__(self, rule: HaltSettings, stop: Callable[[str], None]) -> None:
        self._rule = rule
        self._stop = stop
        self._finished = 0
        self._failed = 0
        self._halted = False

    def on_outcome(self, outcome: Outcome) -> None:
        """
        Count the outcome and stop the run if the failure ratio is now too high.
        """
        if outcome.status not in ("succeeded", "failed") or self._halted:
            return
        self._finished += 1
        self._failed += outcome.status == "failed"
        ratio = self._failed / self._finished
        if (
            self._finished >= self._rule.min_targets
            and ratio > self._rule.failure_ratio
        ):
            self._halted = True
            log.error(
                "run.halted",
                finished=self._finished,
                failed=self._failed,
                failure_ratio=round(ratio, 3),
                halt_failure_ratio=self._rule.failure_ratio,
            )
            self._stop(HALTED)


def failure_ratio(document: Mapping[str, Any]) -> float:
    """
    Return the share of targets that did not succeed, skipped ones left out.
    """
    summary = document["summary"]
    judged: int = summary["total"] - summary["skipped"]
    if judged == 0:
        return 0.0

    not_done: int = summary["failed"] + summary["cancelled"]
    return not_done / judged


def exit_code(document: Mapping[str, Any], max_failure_ratio: float) -> int:
    """
    Return 1 if the failure ratio is above ``max_failure_ratio`` or the run halted.

    Tolerated failures return 0 and log a warning, so they are still seen.
    """
    ratio = failure_ratio(document)
    if ratio == 0.0:
        return 0
    if ratio > max_failure_ratio or document.get("stop_reason") == HALTED:
        return 1

    log.warning(
        "run.failures_tolerated",
        failure_ratio=round(ratio, 4),
        max_failure_ratio=max_failure_ratio,
        failed=document["summary"]["failed"],
        cancelled=document["summary"]["cancelled"],
    )
    return 0
