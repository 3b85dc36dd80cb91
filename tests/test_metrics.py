"""
The Prometheus textfile: what a run writes, and what a failed run keeps.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from orchestrator import metrics, report
from orchestrator.report import Attempt, Outcome, RunFacts
from tests.conftest import PROJECT
from tests.test_cli import StartSim, cli, write_config


def samples(path: Path) -> dict[str, float]:
    """
    Return every sample of the file, labels folded into the name.
    """
    found = {}
    for family in text_string_to_metric_families(path.read_text()):
        for sample in family.samples:
            labels = ",".join(f"{k}={v}" for k, v in sample.labels.items())
            found[f"{sample.name}{{{labels}}}" if labels else sample.name] = (
                sample.value
            )
    return found


def document(finished_at: float, status: str = "succeeded") -> dict[str, Any]:
    outcome = Outcome(
        PROJECT, "ds-1", status, started_at=finished_at - 1, finished_at=finished_at,
        history=(Attempt(0.0, 5.0, 429), Attempt(1.0, 5.0, 200)),
    )  # fmt: skip
    facts = RunFacts(
        "0", "c.yaml", "0" * 64, "http://x", 1.0, 1, finished_at - 2, finished_at, None
    )
    return report.build([outcome], facts)


def test_metrics_file_holds_counts_and_timestamps(tmp_path: Path) -> None:
    """Targets by status, attempts, throttled, duration and last success."""
    path = tmp_path / "textfile" / "modelarts_sync.prom"

    metrics.write(document(1_800_000_000.0), path, exit_code=0)

    found = samples(path)
    assert found["modelarts_sync_targets{status=succeeded}"] == 1
    assert found["modelarts_sync_targets{status=failed}"] == 0
    assert found["modelarts_sync_attempts"] == 2
    assert found["modelarts_sync_throttled_responses"] == 1
    assert found["modelarts_sync_duration_seconds"] == 2
    assert found["modelarts_sync_last_success_timestamp_seconds"] == 1_800_000_000
    assert list(path.parent.iterdir()) == [path]


def test_failed_run_keeps_the_previous_last_success(tmp_path: Path) -> None:
    """A run that exits 1 updates the rest but not the last success time."""
    path = tmp_path / "m.prom"
    metrics.write(document(1_800_000_000.0), path, exit_code=0)

    metrics.write(document(1_800_086_400.0, "failed"), path, exit_code=1)

    found = samples(path)
    assert found["modelarts_sync_last_success_timestamp_seconds"] == 1_800_000_000
    assert found["modelarts_sync_last_run_timestamp_seconds"] == 1_800_086_400
    assert found["modelarts_sync_exit_code"] == 1


def test_run_writes_the_metrics_file(tmp_path: Path, sim_process: StartSim) -> None:
    """--metrics-file gets the run's counts in the text format."""
    sim = sim_process({"faults": {"ds-0001": [429]}})
    config = write_config(tmp_path, sim.url, count=3)
    path = tmp_path / "m.prom"

    done = cli(
        "run", str(config), "--metrics-file", str(path),
        "--report", str(tmp_path / "r.json"),
    )  # fmt: skip

    assert done.returncode == 0, done.stderr
    found = samples(path)
    assert found["modelarts_sync_targets{status=succeeded}"] == 3
    assert found["modelarts_sync_throttled_responses"] == 1
    assert "modelarts_sync_last_success_timestamp_seconds" in found
