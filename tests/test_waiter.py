"""
Waiting for syncs: the poll schedule alone, then whole runs against the simulator.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from orchestrator.auth import Secret, TokenAuth
from orchestrator.client import ModelArtsClient, SyncStatus
from orchestrator.config import Target, WaitSettings
from orchestrator.limiter import RateLimiter, Ticket
from orchestrator.runner import Runner, RunResult
from orchestrator.simulator import Dataset, Plan, Simulator
from orchestrator.waiter import SyncWatch, verdict
from tests.conftest import PROJECT, TOKEN, settings_for, targets

StartSimulator = Callable[[Plan], Awaitable[Simulator]]
PlanFrom = Callable[[dict[str, Any]], Plan]
QUICK_WAIT = WaitSettings(enabled=True, poll_interval_s=0.02, timeout_s=5.0)


class FakeClock:
    """
    A clock that moves only when something sleeps, recording each pause.
    """

    def __init__(self) -> None:
        self.t = 0.0
        self.pauses: list[float] = []

    def now(self) -> float:
        return self.t

    async def sleep(self, seconds: float) -> None:
        self.pauses.append(round(seconds, 6))
        self.t += seconds
        await asyncio.sleep(0)


def scripted(states: list[str]) -> Callable[[], Awaitable[SyncStatus]]:
    """
    Return a poll that answers ``states`` in turn, then the last one for ever.
    """
    answers = iter(states)
    last = states[-1]

    async def poll() -> SyncStatus:
        return SyncStatus(state=next(answers, last), add_sample_count=3)

    return poll


async def test_pauses_grow_by_half_up_to_the_cap() -> None:
    """Polls start one interval in, then wait 1.5x longer each time, capped."""
    clock = FakeClock()
    settings = WaitSettings(True, poll_interval_s=10.0, timeout_s=10_000.0)
    watch = SyncWatch(scripted(["RUNNING"] * 9 + ["COMPLETED"]), settings, clock)

    assert await watch.until_done()

    assert clock.pauses[:5] == [10.0, 15.0, 22.5, 33.75, 50.625]
    assert clock.pauses[5:] == [60.0] * 5
    assert watch.polls == 10


async def test_timeout_ends_the_wait_with_a_last_poll_at_the_limit() -> None:
    """A sync that never ends is polled until the timeout, the last time at it."""
    clock = FakeClock()
    settings = WaitSettings(True, poll_interval_s=1.0, timeout_s=5.0)
    watch = SyncWatch(scripted(["RUNNING"]), settings, clock)

    assert not await watch.until_done()

    assert clock.t == pytest.approx(5.0)
    assert clock.pauses == [1.0, 1.5, 2.25, 0.25]
    assert verdict(False, watch.last) == ("failed", "sync_timeout")


@pytest.mark.parametrize(
    ("states", "expected"),
    [
        pytest.param(["QUEUING", "COMPLETED"], ("succeeded", None), id="completed"),
        pytest.param(["STARTING", "FAILED"], ("failed", "sync_failed"), id="failed"),
        pytest.param(["NOT_EXIST"], ("succeeded", None), id="not-exist"),
        pytest.param(["REINDEXING", "COMPLETED"], ("succeeded", None), id="unknown"),
    ],
)
async def test_terminal_states_end_the_wait(
    states: list[str], expected: tuple[str, str | None]
) -> None:
    """COMPLETED, FAILED and NOT_EXIST end it; an unknown word is still running."""
    watch = SyncWatch(scripted(states), QUICK_WAIT, FakeClock())

    finished = await watch.until_done()

    assert finished
    assert watch.polls == len(states)
    assert verdict(finished, watch.last) == expected
    assert watch.report().state == states[-1]


# Whole runs ---------------------------------------------------------------------


async def run_waiting(
    sim: Simulator,
    work: tuple[Target, ...],
    wait: WaitSettings = QUICK_WAIT,
    limiter: RateLimiter | None = None,
    **fields: Any,
) -> RunResult:
    """
    Run ``work`` against ``sim`` with waiting on and return the outcomes.
    """
    settings = settings_for(sim.url, work, wait=wait, **fields)
    credential = TokenAuth(Secret(TOKEN), source="test")
    async with ModelArtsClient(
        settings.endpoint, credential, timeout_s=5.0, concurrency=settings.concurrency
    ) as client:
        return await Runner(settings, client, limiter=limiter).run(work)


def kinds_per_dataset(sim: Simulator, kind: str) -> Counter[str]:
    return Counter(
        r.dataset_id for r in sim.received if r.kind == kind and r.dataset_id
    )


async def test_run_waits_until_every_sync_completes(
    simulator: StartSimulator, plan_from: PlanFrom
) -> None:
    """Each target ends succeeded with COMPLETED and the samples the server added."""
    catalogue = {
        PROJECT: [
            {"dataset_id": f"ds-{i:04d}", "sample_count": 10} for i in range(1, 6)
        ]
    }
    sim = await simulator(plan_from({"sync_duration_ms": 100, "catalogue": catalogue}))

    result = await run_waiting(sim, targets(5))

    assert {o.status for o in result.outcomes} == {"succeeded"}
    assert {o.sync.state for o in result.outcomes if o.sync} == {"COMPLETED"}
    assert all(o.sync and o.sync.add_sample_count == 10 for o in result.outcomes)
    assert all(o.sync and o.sync.task_id for o in result.outcomes)
    polls = kinds_per_dataset(sim, "status")
    assert all(
        polls[o.dataset_id] == o.sync.polls >= 2 for o in result.outcomes if o.sync
    )


async def test_failed_and_stuck_syncs_fail_their_targets(
    simulator: StartSimulator, plan_from: PlanFrom
) -> None:
    """FAILED gives sync_failed, a sync still running at the timeout sync_timeout."""
    sim = await simulator(
        plan_from(
            {
                "sync_duration_ms": 50,
                "failed_syncs": ["ds-0001"],
                "stuck_syncs": ["ds-0002"],
            }
        )
    )
    wait = WaitSettings(True, poll_interval_s=0.02, timeout_s=0.6)

    result = await run_waiting(sim, targets(3), wait)

    outcomes = {o.dataset_id: o for o in result.outcomes}
    assert (outcomes["ds-0001"].status, outcomes["ds-0001"].reason) == (
        "failed",
        "sync_failed",
    )
    assert outcomes["ds-0001"].sync is not None
    assert outcomes["ds-0001"].sync.error_code
    assert (outcomes["ds-0002"].status, outcomes["ds-0002"].reason) == (
        "failed",
        "sync_timeout",
    )
    assert outcomes["ds-0002"].sync is not None
    assert outcomes["ds-0002"].sync.state == "RUNNING"
    assert outcomes["ds-0002"].error_msg == "the sync was still RUNNING after 0.6 s"
    assert outcomes["ds-0001"].error_code == "ModelArts.4360"
    assert outcomes["ds-0003"].status == "succeeded"


async def test_already_running_sync_is_waited_on(
    simulator: StartSimulator, plan_from: PlanFrom
) -> None:
    """ModelArts.4355 is followed like an accepted sync until it completes."""
    sim = await simulator(
        plan_from(
            {
                "sync_duration_ms": 50,
                "faults": {
                    "ds-0001": [{"status": 400, "error_code": "ModelArts.4355"}]
                },
            }
        )
    )

    result = await run_waiting(sim, targets(1))

    (outcome,) = result.outcomes
    assert outcome.already_running
    assert outcome.status == "succeeded"
    assert outcome.sync is not None
    assert outcome.sync.polls >= 1


async def test_discovered_running_dataset_is_waited_on_without_a_post(
    simulator: StartSimulator,
) -> None:
    """A target discovery saw synchronizing gets polls but no POST."""
    plan = Plan(token=TOKEN, datasets={PROJECT: (Dataset("ds-0001"),)})
    sim = await simulator(plan)
    running = Target(PROJECT, "ds-0001", already_running=True)

    result = await run_waiting(sim, (running,))

    (outcome,) = result.outcomes
    assert (outcome.status, outcome.already_running, outcome.attempts) == (
        "succeeded",
        True,
        0,
    )
    assert outcome.sync is not None
    assert outcome.sync.state == "NOT_EXIST"
    assert not sim.sync_requests()


async def test_transient_poll_errors_are_retried(
    simulator: StartSimulator, plan_from: PlanFrom
) -> None:
    """A 503 and a reset on status polls are retried; the sync is still followed."""
    faults = {"ds-0001": [{"latency_ms": 0}, 503, "reset"]}
    sim = await simulator(plan_from({"sync_duration_ms": 50, "faults": faults}))

    result = await run_waiting(sim, targets(2))

    assert {o.status for o in result.outcomes} == {"succeeded"}
    statuses = [r.status for r in sim.received if r.kind == "status"]
    assert 503 in statuses
    assert any(r.outcome == "reset" for r in sim.received)


async def test_permanent_poll_error_fails_the_target(
    simulator: StartSimulator, plan_from: PlanFrom
) -> None:
    """A 403 on the status call ends the target failed with that reason."""
    faults = {"ds-0001": [{"latency_ms": 0}, 403]}
    sim = await simulator(plan_from({"sync_duration_ms": 50, "faults": faults}))

    result = await run_waiting(sim, targets(1))

    (outcome,) = result.outcomes
    assert (outcome.status, outcome.reason) == ("failed", "forbidden")


async def test_polls_share_the_rate_limit_with_posts(
    simulator: StartSimulator, plan_from: PlanFrom
) -> None:
    """Every POST and every poll takes a ticket from the run's one rate limiter."""
    sim = await simulator(plan_from({"sync_duration_ms": 1000}))
    wait = WaitSettings(True, poll_interval_s=0.01, timeout_s=10.0)
    limiter = CountingLimiter(25.0)

    result = await run_waiting(sim, targets(12), wait, limiter=limiter)

    assert {o.status for o in result.outcomes} == {"succeeded"}
    assert kinds_per_dataset(sim, "status").total() > 12
    assert limiter.tickets == len(sim.received)


class CountingLimiter(RateLimiter):
    """
    The real limiter, counting the tickets it hands out.
    """

    def __init__(self, rate_per_s: float) -> None:
        super().__init__(rate_per_s)
        self.tickets = 0

    def try_acquire(self) -> Ticket | None:
        ticket = super().try_acquire()
        self.tickets += ticket is not None
        return ticket

    async def acquire(self) -> Ticket:
        ticket = await super().acquire()
        self.tickets += 1
        return ticket


async def test_posts_are_not_held_up_by_syncs_in_progress(
    simulator: StartSimulator, plan_from: PlanFrom
) -> None:
    """With one connection, every POST goes out before the first long sync ends."""
    sim = await simulator(plan_from({"sync_duration_ms": 1000}))
    wait = WaitSettings(True, poll_interval_s=0.1, timeout_s=10.0)

    await run_waiting(sim, targets(6), wait, concurrency=1)

    posts = [r.arrived_s for r in sim.received if r.kind == "sync"]
    assert len(posts) == 6
    assert max(posts) < min(posts) + 1.0, "a POST waited for a sync to end"


async def test_deadline_cancels_waits_and_keeps_the_last_state(
    simulator: StartSimulator, plan_from: PlanFrom
) -> None:
    """A deadline during a wait ends the target cancelled with its last sync state."""
    sim = await simulator(plan_from({"stuck_syncs": ["ds-0001"]}))

    result = await run_waiting(sim, targets(1), deadline_s=0.3)

    (outcome,) = result.outcomes
    assert (outcome.status, outcome.reason) == ("cancelled", "deadline")
    assert outcome.sync is not None
    assert outcome.sync.state == "RUNNING"
    assert result.stop_reason == "deadline"
