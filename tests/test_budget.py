"""
The run's retry budget, alone and against a simulator that fails everything.
"""

from __future__ import annotations

from collections import Counter

import pytest
from structlog.testing import capture_logs

from orchestrator.budget import RetryBudget
from orchestrator.config import CircuitSettings, RetrySettings
from tests.conftest import targets
from tests.test_runner import PlanFrom, StartSimulator, run_against


def test_budget_grants_ratio_of_first_attempts_plus_floor() -> None:
    """With ratio 0.1 and floor 2, 30 first attempts earn exactly 5 retries."""
    budget = RetryBudget(0.1, 2)
    for _ in range(30):
        budget.record_first_attempt()

    granted = [budget.try_spend() for _ in range(8)]

    assert granted == [True] * 5 + [False] * 3
    assert budget.retries == 5


def test_exhaustion_is_logged_once() -> None:
    """The first refused retry logs retry.budget_exhausted; later ones do not."""
    budget = RetryBudget(0.0, 1)

    with capture_logs() as logged:
        spent = [budget.try_spend() for _ in range(4)]

    assert spent == [True, False, False, False]
    assert [e["event"] for e in logged] == ["retry.budget_exhausted"]


@pytest.mark.parametrize(
    "count",
    [pytest.param(60, id="60-targets"), pytest.param(400, id="400-targets")],
)
async def test_all_503_stays_within_first_attempts_plus_10_percent_plus_20(
    simulator: StartSimulator, plan_from: PlanFrom, count: int
) -> None:
    """Against a server failing everything, requests stay within N + 10% + 20."""
    work = targets(count)
    sim = await simulator(plan_from({"always": {t.dataset_id: 503 for t in work}}))

    result = await run_against(
        sim,
        work,
        concurrency=16,
        rate_limit_per_s=5000.0,
        retry=RetrySettings(5, 0.0, 0.0, budget_ratio=0.1, budget_floor=20),
        circuit=CircuitSettings(failures=0),
    )

    sent = len(sim.sync_requests())
    assert count < sent <= count + 0.1 * count + 20
    reasons = Counter(o.reason for o in result.outcomes)
    assert set(reasons) <= {"retries_exhausted", "retry_budget_exhausted"}
    assert reasons["retry_budget_exhausted"] > count / 2
    assert {o.status for o in result.outcomes} == {"failed"}
    attempts = sum(o.attempts for o in result.outcomes)
    assert attempts == sent


async def test_budget_leaves_ordinary_blips_alone(
    simulator: StartSimulator, plan_from: PlanFrom
) -> None:
    """A few transient faults in a healthy run are all retried to success."""
    faults = {f"ds-{i:04d}": [503, 503] for i in range(1, 11)}
    sim = await simulator(plan_from({"faults": faults}))

    result = await run_against(
        sim, targets(20), retry=RetrySettings(5, 0.0, 0.0, budget_ratio=0.1)
    )

    assert {o.status for o in result.outcomes} == {"succeeded"}
    assert len(sim.sync_requests()) == 40


async def test_throttled_retries_spend_no_budget(
    simulator: StartSimulator, plan_from: PlanFrom
) -> None:
    """Retries after 429s succeed even with an empty budget: the pace handles them."""
    faults = {f"ds-{i:04d}": [{"status": 429}] * 2 for i in range(1, 11)}
    sim = await simulator(plan_from({"faults": faults}))

    result = await run_against(
        sim,
        targets(10),
        retry=RetrySettings(5, 0.0, 0.0, budget_ratio=0.0, budget_floor=0),
    )

    assert {o.status for o in result.outcomes} == {"succeeded"}
    assert len(sim.sync_requests()) == 30
