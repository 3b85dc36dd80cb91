"""
Shared fixtures: the bundled simulator in-process and as a separate process.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import structlog
import yaml

from orchestrator.config import RetrySettings, Settings, Target
from orchestrator.simulator import Plan, Simulator, load_plan

TOKEN = "sim-token"
PROJECT = "0b2c5e7f9a1d4c3b8e6f0a2d4c6e8b1f"
STARTUP_TIMEOUT_S = 30.0


def targets(count: int, project_id: str = PROJECT) -> tuple[Target, ...]:
    """
    Return ``count`` targets named ds-0001, ds-0002, ...
    """
    return tuple(Target(project_id, f"ds-{i:04d}") for i in range(1, count + 1))


def settings_for(url: str, work: tuple[Target, ...], **fields: Any) -> Settings:
    """
    Return run settings for ``url`` with zero-wait retries unless overridden.
    """
    fields.setdefault("retry", RetrySettings(5, 0.0, 0.0))
    fields.setdefault("rate_limit_per_s", 1000.0)
    fields.setdefault("timeout_s", 5.0)
    return Settings(
        path=Path("test.yaml"), sha256="0" * 64, endpoint=url, targets=work, **fields
    )


@pytest.fixture(autouse=True)
def _fresh_structlog() -> Iterator[None]:
    """
    Undo any structlog setup a test made (cli.main configures it in-process).
    """
    yield
    structlog.reset_defaults()


@pytest.fixture
def plan_from(tmp_path: Path) -> Callable[[dict[str, Any]], Plan]:
    """
    Build a simulator plan from the same mapping a plan file would hold.
    """

    def build(document: dict[str, Any]) -> Plan:
        document.setdefault("token", TOKEN)
        path = tmp_path / f"plan-{len(list(tmp_path.iterdir()))}.yaml"
        path.write_text(yaml.safe_dump(document))
        return load_plan(path)

    return build


@pytest.fixture
async def simulator() -> AsyncIterator[Callable[[Plan], Awaitable[Simulator]]]:
    """
    Start simulators on free loopback ports; stop them all at the end.
    """
    started: list[Simulator] = []

    async def start(plan: Plan) -> Simulator:
        sim = Simulator(plan)
        await sim.start()
        started.append(sim)
        return sim

    yield start
    for sim in started:
        await sim.stop()


@dataclass
class SimProcess:
    """
    A simulator in its own process, with the file it logs requests to.
    """

    url: str
    log_path: Path
    process: subprocess.Popen[str]

    def requests(self, kind: str | None = "sync") -> list[dict[str, Any]]:
        if not self.log_path.exists():
            return []
        rows = [json.loads(line) for line in self.log_path.read_text().splitlines()]
        return [row for row in rows if kind is None or row["kind"] == kind]

    def wait_for_requests(self, count: int, timeout_s: float = 30.0) -> None:
        """
        Return once the log holds ``count`` sync requests (polls the file).
        """
        deadline = time.monotonic() + timeout_s
        while len(self.requests()) < count:
            if time.monotonic() > deadline:
                raise TimeoutError(f"fewer than {count} requests in {timeout_s} s")
            time.sleep(0.02)


@pytest.fixture
def sim_process(tmp_path: Path) -> Iterator[Callable[[dict[str, Any]], SimProcess]]:
    """
    Start the simulator as ``modelarts-sync simulate`` in a child process.
    """
    started: list[SimProcess] = []

    def start(document: dict[str, Any]) -> SimProcess:
        document.setdefault("token", TOKEN)
        index = len(started)
        plan_path = tmp_path / f"sim-plan-{index}.yaml"
        plan_path.write_text(yaml.safe_dump(document))
        log_path = tmp_path / f"sim-requests-{index}.jsonl"
        process = subprocess.Popen(
            [
                *(sys.executable, "-m", "orchestrator", "simulate", "--port", "0"),
                *("--plan", str(plan_path), "--log", str(log_path), "-q"),
            ],
            stdout=subprocess.PIPE,
            text=True,
        )
        assert process.stdout is not None
        line = process.stdout.readline()  # blocks until the socket is bound
        assert line.startswith("listening on "), line
        sim = SimProcess(line.split()[-1], log_path, process)
        started.append(sim)
        return sim

    yield start
    for sim in started:
        sim.process.terminate()
        sim.process.wait(timeout=STARTUP_TIMEOUT_S)
        if sim.process.stdout:
            sim.process.stdout.close()


def cli_env(**extra: str) -> dict[str, str]:
    """
    Return a child environment with the simulator token and no stray credentials.
    """
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("MODELARTS_", "HUAWEICLOUD_"))
    }
    env["MODELARTS_AUTH_TOKEN"] = TOKEN
    env.update(extra)
    return env
