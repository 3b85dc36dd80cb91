"""
The circuit breaker, driven through the runner against the loopback simulator.
"""

from __future__ import annotations

from collections import Counter
from itertools import pairwise

from structlog.testing import capture_logs

from orchestrator.config import CircuitSettings, RetrySettings
from tests.conftest import targets
from tests.test_runner import PlanFrom, StartSimulator, run_against


async def test_open_circuit_stops_sending_and_cancels_the_rest(
    simulator: StartSimulator, plan_from: PlanFrom
) -> None:
    """K targets failing in a row open it; failed probes end the run circuit_open."""
    work = targets(50)
    sim = await simulator(plan_from({"always": {t.dataset_id: 503 for t in work}}))

    with capture_logs() as logged:
        result = await run_against(
            sim,
            work,
            concurrency=1,
            retry=RetrySettings(2, 0.0, 0.0),
            circuit=CircuitSettings(failures=3, cooldown_s=0.2, probes=2),
        )

    assert result.stop_reason == "circuit_open"
    statuses = Counter((o.status, o.reason) for o in result.outcomes)
    # Two workers share the one connection, so the target after the third
    # failure may already be on its way when the circuit opens.
    assert 3 <= statuses[("failed", "retries_exhausted")] <= 4
    assert statuses[("cancelled", "circuit_open")] >= 45
    assert statuses.total() == 50
    received = sim.sync_requests()
    gaps = [b.arrived_s - a.finished_s for a, b in pairwise(received)]
    # After the circuit opens only the two probes go, each after the cool-down.
    assert [gap >= 0.19 for gap in gaps[-2:]] == [True, True]
    assert sum(gap >= 0.19 for gap in gaps) == 2
    events = [e["event"] for e in logged if e["event"].startswith("circuit.")]
    assert events == [
        "circuit.opened",
        "circuit.probing",
        "circuit.opened",
        "circuit.probing",
        "circuit.gave_up",
        "circuit.opened",
    ]


async def test_successful_probe_closes_the_circuit_and_the_run_finishes(
    simulator: StartSimulator, plan_from: PlanFrom
) -> None:
    """After an outage the first probe that is answered closes it; all succeed."""
    faults = {f"ds-{i:04d}": [503, 503] for i in range(1, 4)}
    sim = await simulator(plan_from({"faults": faults}))

    with capture_logs() as logged:
        result = await run_against(
            sim,
            targets(10),
            concurrency=1,
            retry=RetrySettings(2, 0.0, 0.0),
            circuit=CircuitSettings(failures=2, cooldown_s=0.1, probes=3),
        )

    assert result.stop_reason is None
    statuses = Counter(o.status for o in result.outcomes)
    assert statuses == Counter({"failed": 3, "succeeded": 7})
    assert "circuit.closed" in [e["event"] for e in logged]


async def test_only_one_probe_is_in_flight_while_half_open(
    simulator: StartSimulator, plan_from: PlanFrom
) -> None:
    """With 8 connections, the requests after the circuit opens go one at a time."""
    work = targets(40)
    always = {t.dataset_id: {"status": 503, "latency_ms": 50} for t in work}
    sim = await simulator(plan_from({"always": always}))

    result = await run_against(
        sim,
        work,
        concurrency=8,
        rate_limit_per_s=1000.0,
        retry=RetrySettings(1, 0.0, 0.0),
        circuit=CircuitSettings(failures=8, cooldown_s=0.2, probes=3),
    )

    assert result.stop_reason == "circuit_open"
    received = sim.sync_requests()
    opened_at = received[7].finished_s
    probes = [r for r in received if r.arrived_s > opened_at + 0.1]
    assert len(probes) == 3
    for earlier, later in pairwise(probes):
        assert later.arrived_s >= earlier.finished_s
