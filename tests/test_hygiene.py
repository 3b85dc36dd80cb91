"""
A run leaves nothing behind: no open descriptors, no memory that grows with attempts.

Unclosed sessions and connectors are caught suite-wide: pytest turns their
ResourceWarning into an error (``filterwarnings = ["error"]``).
"""

from __future__ import annotations

import gc
import os
import tracemalloc
from collections.abc import Awaitable, Callable
from typing import Any

from orchestrator.auth import Secret, TokenAuth
from orchestrator.client import ModelArtsClient
from orchestrator.config import CircuitSettings, RetrySettings, Target
from orchestrator.runner import Runner
from orchestrator.simulator import Plan, Simulator
from tests.conftest import TOKEN, SimProcess, settings_for, targets

StartSimulator = Callable[[Plan], Awaitable[Simulator]]
StartSimProcess = Callable[[dict[str, Any]], SimProcess]
PlanFrom = Callable[[dict[str, Any]], Plan]

# Retained bytes allowed per extra attempt once the outcomes are dropped: an
# attempt that kept its body (64 KiB), its response or its task would be far over.
MAX_RETAINED_PER_ATTEMPT = 64


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


async def run_in_process(url: str, work: tuple[Target, ...], **fields: Any) -> int:
    """
    Run ``work`` against ``url`` and return how many attempts it made.
    """
    settings = settings_for(url, work, **fields)
    credential = TokenAuth(Secret(TOKEN), source="test")
    async with ModelArtsClient(
        url, credential, timeout_s=settings.timeout_s, concurrency=settings.concurrency
    ) as client:
        result = await Runner(settings, client).run(work)

    return sum(outcome.attempts for outcome in result.outcomes)


async def test_descriptors_return_to_start_count_after_a_run(
    plan_from: PlanFrom,
) -> None:
    """After a run through resets, hangs and 503s every descriptor is closed again."""
    before = open_fds()
    faults = {"ds-0001": ["reset"], "ds-0002": ["hang"], "ds-0003": [503, 503]}
    sim = Simulator(plan_from({"faults": faults}))
    await sim.start()
    try:
        attempts = await run_in_process(
            sim.url, targets(30), timeout_s=0.5, concurrency=4
        )
    finally:
        await sim.stop()
    gc.collect()

    assert attempts == 30 + 4
    assert open_fds() == before


async def test_memory_does_not_grow_with_attempts(
    sim_process: StartSimProcess,
) -> None:
    """Twice the attempts retain no more memory once the outcomes are dropped."""
    sim = sim_process({"always": {f"ds-{i:04d}": 503 for i in range(1, 101)}})
    work = targets(100)
    tracemalloc.start()
    try:
        retained = []
        for max_attempts in (2, 4, 8):
            attempts = await run_in_process(
                sim.url,
                work,
                # No retry budget: every attempt must happen for the count to hold.
                retry=RetrySettings(max_attempts, 0.0, 0.0, budget_ratio=10.0),
                circuit=CircuitSettings(failures=0),
            )
            assert attempts == 100 * max_attempts
            gc.collect()
            retained.append(tracemalloc.get_traced_memory()[0])
    finally:
        tracemalloc.stop()

    growth = retained[2] - retained[1]
    assert growth < 400 * MAX_RETAINED_PER_ATTEMPT, retained
