"""
Thresholds: a tolerated failure ratio for the exit code, and the early halt.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from structlog.testing import capture_logs

from orchestrator import config, thresholds
from orchestrator.config import HaltSettings
from orchestrator.errors import ConfigError
from orchestrator.report import Outcome
from tests.conftest import PROJECT
from tests.test_cli import StartSim, cli, load_report, write_config


def summary_of(failed: int, cancelled: int = 0, skipped: int = 0, total: int = 10):
    return {
        "stop_reason": None,
        "summary": {
            "total": total, "failed": failed, "cancelled": cancelled,
            "skipped": skipped,
        },
    }  # fmt: skip


@pytest.mark.parametrize(
    ("document", "tolerated", "expected"),
    [
        pytest.param(summary_of(0), 0.0, 0, id="clean"),
        pytest.param(summary_of(1), 0.0, 1, id="default-zero-tolerance"),
        pytest.param(summary_of(1), 0.1, 0, id="at-the-ratio-is-ok"),
        pytest.param(summary_of(2), 0.1, 1, id="above-the-ratio"),
        pytest.param(summary_of(1, skipped=5), 0.1, 1, id="skipped-not-counted"),
        pytest.param(summary_of(0, cancelled=3), 0.2, 1, id="cancelled-count"),
    ],
)
def test_exit_code_is_1_only_above_max_failure_ratio(
    document: dict[str, object], tolerated: float, expected: int
) -> None:
    """The ratio of failed and cancelled to non-skipped targets sets the code."""
    assert thresholds.exit_code(document, tolerated) == expected


def test_tolerated_failures_log_a_warning() -> None:
    """Exit 0 with failures still leaves a trace in the logs."""
    with capture_logs() as logs:
        assert thresholds.exit_code(summary_of(1), 0.5) == 0

    assert [entry["event"] for entry in logs] == ["run.failures_tolerated"]


def test_halt_watch_stops_once_enough_targets_failed() -> None:
    """The rule is judged only from min_targets on, and fires once."""
    stops: list[str] = []
    watch = thresholds.HaltWatch(HaltSettings(0.5, 4), stops.append)
    statuses = ["failed", "failed", "failed", "succeeded", "failed", "failed"]

    for index, status in enumerate(statuses):
        watch.on_outcome(Outcome(PROJECT, f"ds-{index}", status))
        if index == 2:
            assert stops == []

    assert stops == ["halted"]


def test_run_halts_when_most_targets_fail(
    tmp_path: Path, sim_process: StartSim
) -> None:
    """A run where everything is refused stops early: the rest end halted."""
    sim = sim_process(
        {"always": {f"ds-{i:04d}": {"status": 404} for i in range(1, 61)}}
    )
    config = write_config(
        tmp_path, sim.url, count=60, rate_limit=50, concurrency=2,
        halt={"failure_ratio": 0.5, "min_targets": 5},
    )  # fmt: skip

    done = cli("run", str(config), "--report", str(tmp_path / "r.json"))

    assert done.returncode == 1
    document = load_report(tmp_path / "r.json")
    assert document["stop_reason"] == "halted"
    assert document["summary"]["cancelled"] > 30
    assert {r["reason"] for r in document["results"] if r["status"] == "cancelled"} == {
        "halted"
    }
    assert len(sim.requests()) < 20


def test_run_with_tolerated_failures_exits_0(
    tmp_path: Path, sim_process: StartSim
) -> None:
    """One failure in ten under max_failure_ratio 0.2 exits 0."""
    sim = sim_process({"always": {"ds-0003": {"status": 404}}})
    config = write_config(tmp_path, sim.url, count=10, max_failure_ratio=0.2)

    done = cli("run", str(config), "--report", str(tmp_path / "r.json"))

    assert done.returncode == 0, done.stderr
    assert "run.failures_tolerated" in done.stderr


@pytest.mark.parametrize(
    ("text", "message"),
    [
        pytest.param(
            "max_failure_ratio: 1.5", "max_failure_ratio: must be", id="ratio"
        ),
        pytest.param(
            "halt: {failure_ratio: -1}", "halt.failure_ratio", id="halt-ratio"
        ),
        pytest.param("halt: {min_targets: 0}", "halt.min_targets", id="min-targets"),
        pytest.param("halt: {ratio: 0.5}", "halt.ratio", id="unknown-key"),
    ],
)
def test_bad_threshold_settings_are_config_errors(
    tmp_path: Path, text: str, message: str
) -> None:
    """Each threshold key is checked with file:line and field."""
    path = tmp_path / "c.yaml"
    path.write_text(
        f"endpoint: http://127.0.0.1:1\n{text}\n"
        f"targets: [{{project_id: {PROJECT}, dataset_id: ds-1}}]\n"
    )

    with pytest.raises(ConfigError, match=rf"c.yaml:2 {message}"):
        config.load(path)


def test_thresholds_are_read_from_the_config(tmp_path: Path) -> None:
    """Values in the file reach the settings."""
    path = tmp_path / "c.yaml"
    path.write_text(
        "endpoint: http://127.0.0.1:1\nmax_failure_ratio: 0.25\n"
        "halt: {failure_ratio: 0.9}\n"
        f"targets: [{{project_id: {PROJECT}, dataset_id: ds-1}}]\n"
    )

    settings = config.load(path)

    assert settings.max_failure_ratio == 0.25
    assert settings.halt == HaltSettings(failure_ratio=0.9, min_targets=20)
