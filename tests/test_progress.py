"""
Readable output: the progress bar, run.progress events, the summary tables.
"""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any, TextIO, cast

import structlog
from rich.console import Console
from rich.file_proxy import FileProxy
from structlog.testing import capture_logs

from orchestrator import logs, report, summary
from orchestrator.progress import RunProgress
from orchestrator.report import Attempt, Outcome, RunFacts
from tests.conftest import PROJECT
from tests.test_cli import StartSim, cli, write_config


def finished(index: int, status: str = "succeeded", attempts: int = 1) -> Outcome:
    history = tuple(Attempt(0.0, 1.0, http_status=200) for _ in range(attempts))
    return Outcome(
        PROJECT, f"ds-{index:04d}", status, started_at=1.0, finished_at=2.0,
        history=history,
    )  # fmt: skip


def terminal() -> tuple[Console, io.StringIO]:
    out = io.StringIO()
    return Console(file=out, force_terminal=True, width=120), out


async def test_bar_shows_done_total_and_retries_on_a_terminal() -> None:
    """The bar renders done/total and the retries counted so far."""
    console, out = terminal()
    progress = RunProgress(10, console=console)

    async with progress.running():
        progress.on_outcome(finished(1))
        progress.on_outcome(finished(2, attempts=3))
        progress.on_outcome(finished(3, "failed"))

    text = out.getvalue()
    assert "3/10" in text
    assert "retries 2" in text


async def test_log_lines_print_whole_above_a_live_bar() -> None:
    """A log line written while the bar is live comes out intact on its own line."""
    console, out = terminal()
    progress = RunProgress(4, console=console)
    logs.configure(
        log_format="json", stream=cast(TextIO, FileProxy(console, io.StringIO()))
    )
    try:
        async with progress.running():
            progress.on_outcome(finished(1))
            structlog.get_logger("t").info("sync.accepted", dataset_id="ds-0001")
    finally:
        logs.configure(log_format="json")

    lines = [line for line in out.getvalue().splitlines() if "sync.accepted" in line]
    assert len(lines) == 1
    start = lines[0].index("{")
    assert json.loads(lines[0][start:])["dataset_id"] == "ds-0001"


def test_progress_event_carries_counts_rate_and_eta() -> None:
    """Without a terminal, run.progress has done, total, retries, rate and ETA."""
    progress = RunProgress(4)
    progress.on_outcome(finished(1, attempts=2))

    with capture_logs() as events:
        progress.log_event()

    (event,) = events
    assert event["event"] == "run.progress"
    assert (event["done"], event["total"], event["retries"]) == (1, 4, 1)
    assert event["rate_per_s"] > 0
    assert event["eta_s"] is not None


def test_run_logs_progress_events_when_not_on_a_terminal(
    tmp_path: Path, sim_process: StartSim
) -> None:
    """A non-TTY run logs run.progress on its interval and draws no bar."""
    sim = sim_process({"latency_ms": 50})
    config = write_config(tmp_path, sim.url, count=40, concurrency=2)

    done = cli(
        "run", str(config), "--progress-every", "0.1",
        "--report", str(tmp_path / "r.json"),
    )  # fmt: skip

    assert done.returncode == 0, done.stderr
    events = [json.loads(line) for line in done.stderr.splitlines()]
    progress = [e for e in events if e["event"] == "run.progress"]
    assert progress
    assert all(e["total"] == 40 for e in progress)
    assert "\x1b[" not in done.stderr


def report_with_failures(count: int) -> dict[str, Any]:
    outcomes = [finished(0)] + [
        Outcome(
            PROJECT, f"ds-{i:04d}", "failed", reason="not_found",
            http_status=404, error_code="ModelArts.4352", finished_at=2.0,
            history=(Attempt(0.0, 1.0, 404, "ModelArts.4352"),),
        )
        for i in range(1, count + 1)
    ]  # fmt: skip
    facts = RunFacts("0", "c.yaml", "0" * 64, "http://x", 1.0, 1, 1.0, 2.0, None)
    return report.build(outcomes, facts)


def test_summary_shows_counts_errors_and_at_most_20_failed_targets() -> None:
    """The tables list statuses, the top error code and 20 of 25 failures."""
    console, out = terminal()

    summary.render(report_with_failures(25), console)

    text = out.getvalue()
    assert "ModelArts.4352" in text
    assert "ds-0020" in text
    assert "ds-0021" not in text
    assert "5 more in the report" in text


def test_report_show_prints_the_summary_of_a_saved_report(tmp_path: Path) -> None:
    """report show reads a file and prints the line and the tables."""
    path = report.write(report_with_failures(2), tmp_path / "r.json")

    done = cli("report", "show", str(path))

    assert done.returncode == 0, done.stderr
    assert "3 targets: 1 succeeded, 2 failed" in done.stdout
    assert "targets that did not succeed" in done.stdout
    assert "ds-0002" in done.stdout
