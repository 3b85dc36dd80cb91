"""
Requests whose answer never came back: marked ambiguous, retried, and reported.

A sync-data POST is safe to repeat: a second one while the first sync runs is
answered ``ModelArts.4355``, which the client counts as accepted. So a request
that left but got no answer is retried like any transient failure, and the
attempt says ``ambiguous: true`` because the server may well have acted on it.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from orchestrator.auth import Secret, TokenAuth
from orchestrator.client import ModelArtsClient
from orchestrator.config import RetrySettings, Target
from orchestrator.runner import Runner, RunResult
from orchestrator.simulator import Plan, Simulator
from tests.conftest import PROJECT, TOKEN, SimProcess, cli_env, settings_for, targets

StartSimulator = Callable[[Plan], Awaitable[Simulator]]
StartSimProcess = Callable[[dict[str, Any]], SimProcess]
PlanFrom = Callable[[dict[str, Any]], Plan]


async def run_once(url: str, work: tuple[Target, ...], **fields: Any) -> RunResult:
    """
    Run ``work`` against ``url`` in-process with a short request timeout.
    """
    fields.setdefault("timeout_s", 0.5)
    settings = settings_for(url, work, **fields)
    credential = TokenAuth(Secret(TOKEN), source="test")
    async with ModelArtsClient(
        url, credential, timeout_s=settings.timeout_s, concurrency=settings.concurrency
    ) as client:
        return await Runner(settings, client).run(work)


@pytest.mark.parametrize(
    "fault",
    [
        pytest.param("hang", id="read-timeout"),
        pytest.param("reset", id="reset-after-send"),
        pytest.param({"latency_ms": 2000}, id="answer-too-late"),
    ],
)
async def test_lost_answer_is_ambiguous_and_retried(
    simulator: StartSimulator, plan_from: PlanFrom, fault: Any
) -> None:
    """A request the server received but never answered is ambiguous, then retried."""
    sim = await simulator(plan_from({"faults": {"ds-0001": [fault]}}))

    result = await run_once(sim.url, targets(1))

    (outcome,) = result.outcomes
    first, second = outcome.history
    assert (first.ambiguous, first.http_status) == (True, None)
    assert (second.ambiguous, second.http_status) == (False, 200)
    assert outcome.status == "succeeded"
    assert len(sim.sync_requests()) == 2


async def test_refused_connection_is_not_ambiguous() -> None:
    """A request that never left (connection refused) is a plain, unambiguous miss."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]  # closed again before the run: refused

    result = await run_once(
        f"http://127.0.0.1:{port}", targets(1), retry=RetrySettings(2, 0.0, 0.0)
    )

    (outcome,) = result.outcomes
    assert (outcome.status, outcome.reason) == ("failed", "retries_exhausted")
    assert [a.ambiguous for a in outcome.history] == [False, False]


async def test_retry_after_ambiguous_post_finds_the_sync_running(
    simulator: StartSimulator, plan_from: PlanFrom
) -> None:
    """The lost POST started a sync; its retry gets 4355 and counts as accepted."""
    plan = {"sync_duration_ms": 10_000, "faults": {"ds-0001": [{"latency_ms": 2000}]}}
    sim = await simulator(plan_from(plan))

    result = await run_once(sim.url, targets(1))

    (outcome,) = result.outcomes
    assert [a.ambiguous for a in outcome.history] == [True, False]
    assert outcome.history[1].error_code == "ModelArts.4355"
    assert (outcome.status, outcome.already_running) == ("succeeded", True)


@pytest.mark.slow
def test_report_shows_ambiguous_attempt_and_retry(
    sim_process: StartSimProcess, tmp_path: Path
) -> None:
    """The CLI's report lists the ambiguous attempt and the retry that settled it."""
    plan = {"sync_duration_ms": 10_000, "faults": {"ds-0001": [{"latency_ms": 3000}]}}
    sim = sim_process(plan)
    config = tmp_path / "config.yaml"
    document = {
        "endpoint": sim.url,
        "timeout": 0.5,
        "retry": {"max_attempts": 3, "initial_backoff": 0.05, "max_backoff": 0.2},
        "targets": [{"project_id": PROJECT, "dataset_id": "ds-0001"}],
    }
    config.write_text(yaml.safe_dump(document))
    report_path = tmp_path / "report.json"

    done = subprocess.run(
        [
            *(sys.executable, "-m", "orchestrator", "run", str(config)),
            *("--report", str(report_path), "-q"),
        ],
        env=cli_env(),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )

    assert done.returncode == 0, done.stderr
    (result,) = json.loads(report_path.read_text())["results"]
    assert [a["ambiguous"] for a in result["history"]] == [True, False]
    assert result["history"][1]["error_code"] == "ModelArts.4355"
    assert (result["status"], result["already_running"]) == ("succeeded", True)
    assert len(sim.requests()) == 2
