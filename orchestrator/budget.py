"""
The run's retry budget: retries may spend only a share of first attempts.

Per-target attempts alone let a server that fails everything receive
``max_attempts`` times the fleet; a budget (as in Finagle and gRPC's retry
throttling) caps the whole run at first attempts times ``1 + ratio`` plus a
small floor, so a small run can still retry a few blips. Once it is spent,
transient failures end at once with ``retry_budget_exhausted``.
"""

from __future__ import annotations

import structlog

log = structlog.get_logger(__name__)


class RetryBudget:
    """
    Count first attempts and retries; grant a retry while the budget allows.

    Not thread-safe: used from the event loop only.
    """

    __slots__ = ("_exhausted_logged", "_floor", "_ratio", "first_attempts", "retries")

    def __init__(self, ratio: float, floor: int) -> None:
        self._ratio = ratio
        self._floor = floor
        self._exhausted_logged = False
        self.first_attempts = 0
        self.retries = 0

    def record_first_attempt(self) -> None:
        """
        Count one target's first request, which earns the budget ``ratio``.
        """
        self.first_attempts += 1

    def try_spend(self) -> bool:
        """
        Take one retry from the budget; return False, spending nothing, if empty.
        """
        if self.retries < self._ratio * self.first_attempts + self._floor:
            self.retries += 1
            return True
        if not self._exhausted_logged:
            self._exhausted_logged = True
            log.warning(
                "retry.budget_exhausted",
                retries=self.retries,
                first_attempts=self.first_attempts,
            )

        return False
