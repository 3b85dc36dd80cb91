"""
A circuit breaker for one endpoint: stop sending to a server that keeps failing.

::

    closed --K targets in a row fail transiently--> open
    open --cooldown passed--> half-open: one request (a probe) at a time
    half-open --probe answered--> closed
    half-open --probe failed transiently--> open again; after ``probes``
              failed probes in a row the breaker gives up (the run stops)

A target "fails transiently" when it ends on a transient error (retries or the
retry budget ran out). A success or a permanent answer (404, 400) resets the
count: the endpoint is answering. While the circuit is open every request
waits in :meth:`CircuitBreaker.admit`; when the breaker gives up, targets not
yet finished end ``cancelled`` with reason ``circuit_open`` and a later run
can pick them up.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import structlog

from orchestrator.config import CircuitSettings
from orchestrator.limiter import Clock

log = structlog.get_logger(__name__)


class CircuitBreaker:
    """
    Gate requests to one endpoint on its recent failures.
    """

    def __init__(
        self,
        settings: CircuitSettings,
        *,
        endpoint: str,
        clock: Clock,
        on_gave_up: Callable[[], None],
    ) -> None:
        self._settings = settings
        self._endpoint = endpoint
        self._clock = clock
        self._on_gave_up = on_gave_up
        self._failures = 0
        self._failed_probes = 0
        self._open_until: float | None = None
        self._probing = False
        self._changed = asyncio.Event()

    @property
    def closed(self) -> bool:
        """
        Return whether requests flow freely (the state is ``closed``).
        """
        return self._open_until is None

    @property
    def state(self) -> str:
        """
        Return ``closed``, ``open`` or ``half_open``.
        """
        if self._open_until is None:
            return "closed"
        if self._probing or self._clock.now() >= self._open_until:
            return "half_open"
        return "open"

    async def admit(self) -> bool:
        """
        Wait until a request may go; return True if it is the one probe.
        """
        while self._open_until is not None:
            now = self._clock.now()
            if now < self._open_until:
                await self._clock.sleep(self._open_until - now)
            elif not self._probing:
                self._probing = True
                log.info("circuit.probing", endpoint=self._endpoint)
                return True
            else:
                await self._wait_for_change()

        return False

    def on_probe_done(self, *, answered: bool | None) -> None:
        """
        Close on an answer, reopen on a transient failure; None: no verdict.
        """
        self._probing = False
        if answered is None:
            self._notify()
        elif answered:
            self._close()
        else:
            self._failed_probes += 1
            if self._failed_probes >= self._settings.probes:
                log.error(
                    "circuit.gave_up",
                    endpoint=self._endpoint,
                    probes=self._failed_probes,
                )
                self._on_gave_up()
            self._open()

    def on_target_answered(self) -> None:
        """
        Reset the count of failing targets: the endpoint answers.
        """
        self._failures = 0

    def on_target_failed(self) -> None:
        """
        Count a target that ended on a transient failure; open at the limit.
        """
        self._failures += 1
        threshold = self._settings.failures
        if threshold and self._failures >= threshold and self._open_until is None:
            self._open()

    def _open(self) -> None:
        self._open_until = self._clock.now() + self._settings.cooldown_s
        log.warning(
            "circuit.opened",
            endpoint=self._endpoint,
            failures=self._failures,
            wait_s=self._settings.cooldown_s,
        )
        self._notify()

    def _close(self) -> None:
        self._open_until = None
        self._failures = 0
        self._failed_probes = 0
        log.info("circuit.closed", endpoint=self._endpoint)
        self._notify()

    def _notify(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()

    async def _wait_for_change(self) -> None:
        await self._changed.wait()
