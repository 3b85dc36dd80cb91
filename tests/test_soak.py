"""
Chaos soak: thousands of targets through seeded faults, judged by the server's log.

The simulator runs in its own process (so its arrival times are not skewed by
the client's event loop) and logs every request; the CLI runs in another. The
tests assert invariants between that log and the report, never timings, except
the rate ceiling, which is measured from the server's arrivals.
"""

from __future__ import annotations

import bisect
import json
import os
import random
import signal
import subprocess
import sys
import time
from collections import Counter, defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from orchestrator.journal import path_for as journal_path_for
from tests.conftest import PROJECT, SimProcess, cli_env

StartSimProcess = Callable[[dict[str, Any]], SimProcess]

SEED = 20261203
TARGETS = 3000
FAULT_SHARE = 0.2
CLIENT_RATE = 250
SERVER_RATE = 200  # below the client's: the server's own 429s join the chaos
CONCURRENCY = 32
TIMEOUT_S = 6
DEADLINE_S = 240
RUN_TIMEOUT_S = 200
# Each Retry-After pauses the whole endpoint, so only a few carry one.
RETRY_AFTER_FAULTS = 3
# Weighted fault kinds for the rest. The 429s without Retry-After come mostly
# from the server's own limit; scripted ones stay few, because each one is a
# signal to slow down and a steady stream of them (a third of the faults, once)
# kept the adaptive pace near its floor and the soak near 200 s.
FAULT_KINDS: list[tuple[Any, int]] = [
    (503, 56),
    ({"status": 429}, 4),
    ("reset", 15),
    ({"latency_ms": 3000}, 12),
    (502, 5),
    ("hang", 3),
]
# The report holds every attempt, so the CLI's memory grows a little per
# target; a leak of anything per request (a body, a connection, a task) over
# thousands of attempts would pass this by far.
MAX_RSS_GROWTH_BYTES = 60 * 1024 * 1024
# The simulator stamps a request when its event loop gets to it. On two busy
# cores that loop stalls for tens of milliseconds, then stamps a queue of
# requests at once, so a strict one-second window over its stamps showed 254
# arrivals at a 250/s limit (153 at 150/s) although the client spaced its
# sends by the window plus its margin. The ceiling is judged over a window
# shortened by that measured jitter.
SERVER_JITTER_S = 0.05


def dataset_ids(count: int) -> list[str]:
    return [f"ds-{i:05d}" for i in range(1, count + 1)]


def chaos_faults(ids: list[str], seed: int) -> dict[str, list[Any]]:
    """
    Return one to two seeded faults for a fifth of ``ids``, a few with Retry-After.
    """
    rng = random.Random(seed)
    kinds = [kind for kind, _ in FAULT_KINDS]
    weights = [weight for _, weight in FAULT_KINDS]
    chosen = rng.sample(ids, round(len(ids) * FAULT_SHARE))
    faults = {
        dataset_id: rng.choices(kinds, weights, k=rng.choice((1, 1, 2)))
        for dataset_id in chosen
    }
    for dataset_id in chosen[:RETRY_AFTER_FAULTS]:
        faults[dataset_id] = [{"status": 429, "retry_after": 1}]

    return faults


def write_config(path: Path, url: str, ids: list[str], **fields: Any) -> Path:
    """
    Write a run config for ``ids`` against ``url`` and return its path.
    """
    document = {
        "endpoint": url,
        "auth": {"type": "token", "token_env": "MODELARTS_AUTH_TOKEN"},
        "rate_limit": CLIENT_RATE,
        "concurrency": CONCURRENCY,
        "timeout": TIMEOUT_S,
        "deadline": DEADLINE_S,
        # A fifth of the targets fault on purpose: a budget sized for that, as a
        # user facing a flaky server would set it (the default allows 10 %).
        "retry": {
            "max_attempts": 12,
            "initial_backoff": 0.05,
            "max_backoff": 1.0,
            "budget_ratio": 2.0,
        },
        "targets": [{"project_id": PROJECT, "dataset_id": i} for i in ids],
        **fields,
    }
    path.write_text(yaml.safe_dump(document, sort_keys=False))
    return path


def rss_bytes(pid: int) -> int:
    """
    Return a process's resident set size from /proc, or 0 once it has gone.
    """
    try:
        fields = Path(f"/proc/{pid}/statm").read_text().split()
    except OSError:
        return 0
    return int(fields[1]) * os.sysconf("SC_PAGE_SIZE")


def busiest_window(arrivals: list[float], window_s: float) -> int:
    """
    Return the most arrivals within any span shorter than ``window_s``.
    """
    arrivals = sorted(arrivals)
    return max(
        bisect.bisect_left(arrivals, t + window_s) - i for i, t in enumerate(arrivals)
    )


@pytest.mark.slow
def test_chaos_soak_loses_nothing(sim_process: StartSimProcess, tmp_path: Path) -> None:
    """3,000 targets, 20 % seeded faults, a lower server limit: nothing lost."""
    ids = dataset_ids(TARGETS)
    sim = sim_process({"rate_limit": SERVER_RATE, "faults": chaos_faults(ids, SEED)})
    config = write_config(tmp_path / "soak.yaml", sim.url, ids)
    report_path = tmp_path / "soak-report.json"
    stderr_path = tmp_path / "soak-stderr.log"
    started = time.monotonic()
    with stderr_path.open("w") as stderr_file:
        # A file, not a pipe: an unread pipe fills up and blocks the run's logging.
        process = subprocess.Popen(
            [
                *(sys.executable, "-m", "orchestrator", "run", str(config)),
                *("--report", str(report_path), "-q", "--log-format", "json"),
            ],
            env=cli_env(),
            stdout=subprocess.DEVNULL,
            stderr=stderr_file,
        )
        rss_early, rss_peak = sample_rss_until_exit(process, sim, started)
    elapsed_s = time.monotonic() - started

    assert process.returncode == 0, stderr_path.read_text()[-2000:]
    document = json.loads(report_path.read_text())
    rows = sim.requests()
    check_every_target_once(document, ids)
    check_against_server_log(document, rows)
    arrivals = [row["arrived_s"] for row in rows]
    assert busiest_window(arrivals, 1.0 - SERVER_JITTER_S) <= CLIENT_RATE
    assert document["summary"]["succeeded"] == TARGETS
    assert document["summary"]["retries"] > TARGETS * FAULT_SHARE
    assert any(a["ambiguous"] for r in document["results"] for a in r["history"])
    assert elapsed_s < DEADLINE_S
    assert rss_early, "the run ended before memory could be sampled"
    assert rss_peak - rss_early < MAX_RSS_GROWTH_BYTES


def sample_rss_until_exit(
    process: subprocess.Popen[bytes], sim: SimProcess, started: float
) -> tuple[int, int]:
    """
    Return the run's RSS once a fifth of the targets were sent, and its peak.
    """
    rss_early, rss_peak = 0, 0
    while process.poll() is None:
        rss = rss_bytes(process.pid)
        rss_peak = max(rss_peak, rss)
        if not rss_early and len(sim.requests()) >= TARGETS // 5:
            rss_early = rss
        if time.monotonic() - started > RUN_TIMEOUT_S:
            process.kill()
            process.wait()
            pytest.fail(f"the run took over {RUN_TIMEOUT_S} s")
        time.sleep(0.5)  # sampling memory, not waiting for an event

    return rss_early, rss_peak


def check_every_target_once(document: dict[str, Any], ids: list[str]) -> None:
    """
    Assert the report holds exactly one result per target and nothing else.
    """
    seen = Counter(result["dataset_id"] for result in document["results"])
    assert seen == Counter(ids)
    assert document["summary"]["total"] == len(ids)


def check_against_server_log(
    document: dict[str, Any], rows: list[dict[str, Any]]
) -> None:
    """
    Assert the report agrees with what the server saw, request by request.
    """
    seen = Counter(row["dataset_id"] for row in rows)
    answered_200 = Counter(row["dataset_id"] for row in rows if row["status"] == 200)
    statuses: dict[str, list[int | None]] = defaultdict(list)
    for row in rows:
        statuses[row["dataset_id"]].append(row["status"])

    for result in document["results"]:
        dataset_id = result["dataset_id"]
        assert result["attempts"] == seen[dataset_id], (dataset_id, statuses)
        assert len(result["history"]) == result["attempts"]
        if result["status"] == "succeeded":
            assert answered_200[dataset_id] == 1, (dataset_id, statuses[dataset_id])
        else:
            assert answered_200[dataset_id] == 0, (dataset_id, statuses[dataset_id])
    assert document["summary"]["attempts"] == len(rows)


@pytest.mark.slow
def test_kill_and_resume_posts_each_dataset_once(
    sim_process: StartSimProcess, tmp_path: Path
) -> None:
    """SIGKILL mid-run, resume from the journal: each dataset synced once overall."""
    count, concurrency = 600, 16
    ids = dataset_ids(count)
    faults = chaos_faults(ids, SEED + 1)
    sim = sim_process({"rate_limit": 150, "faults": faults})
    config = write_config(
        tmp_path / "resume.yaml", sim.url, ids, rate_limit=100, concurrency=concurrency
    )
    report_path = tmp_path / "resume-report.json"
    journal = journal_path_for(report_path)
    command = [sys.executable, "-m", "orchestrator", "run", str(config)]
    command += ["--report", str(report_path), "-q"]

    first = subprocess.Popen(command, env=cli_env(), stderr=subprocess.DEVNULL)
    kill_after_rows = random.Random(SEED).randrange(50, count // 2)
    wait_for_journal_rows(journal, kill_after_rows, first)
    first.send_signal(signal.SIGKILL)
    first.wait(timeout=30)
    resumed = subprocess.run(
        [*command, "--resume", str(journal)],
        env=cli_env(),
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT_S,
        check=False,
    )

    assert resumed.returncode == 0, resumed.stderr[-2000:]
    accepted = Counter(
        row["dataset_id"] for row in sim.requests() if row["status"] == 200
    )
    assert set(accepted) == set(ids)
    twice = [dataset_id for dataset_id, n in accepted.items() if n > 1]
    assert all(accepted[dataset_id] == 2 for dataset_id in twice)
    assert len(twice) <= concurrency, twice


def wait_for_journal_rows(
    journal: Path, rows: int, process: subprocess.Popen[bytes]
) -> None:
    """
    Return once the journal holds ``rows`` finished targets (past its header).
    """
    deadline = time.monotonic() + RUN_TIMEOUT_S
    while True:
        lines = journal.read_text().splitlines() if journal.exists() else []
        if len(lines) - 1 >= rows:
            return
        if process.poll() is not None or time.monotonic() > deadline:
            pytest.fail(f"the journal never reached {rows} rows")
        time.sleep(0.02)  # polling a file another process writes
