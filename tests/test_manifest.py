"""
Failures as the next manifest: a valid config of what did not succeed.
"""

from __future__ import annotations

from pathlib import Path

from orchestrator import config
from tests.conftest import PROJECT
from tests.test_cli import StartSim, cli, write_config


def test_failures_writes_a_config_of_the_unfinished_targets(
    tmp_path: Path, sim_process: StartSim
) -> None:
    """Only failed targets go in; every other setting is the original one."""
    sim = sim_process(
        {"always": {"ds-0002": {"status": 404}, "ds-0004": {"status": 503}}}
    )
    original = write_config(tmp_path, sim.url, count=5, deadline=300)
    cli("run", str(original), "--report", str(tmp_path / "r.json"))
    out = tmp_path / "next" / "retry.yaml"

    done = cli("report", "failures", str(tmp_path / "r.json"), "-o", str(out))

    assert done.returncode == 0, done.stderr
    assert f"modelarts-sync run {out}" in done.stdout
    before, after = config.load(original), config.load(out)
    assert [t.dataset_id for t in after.targets] == ["ds-0002", "ds-0004"]
    assert {t.project_id for t in after.targets} == {PROJECT}
    assert (after.endpoint, after.rate_limit_per_s, after.concurrency) == (
        before.endpoint,
        before.rate_limit_per_s,
        before.concurrency,
    )
    assert (after.retry, after.deadline_s) == (before.retry, before.deadline_s)


def test_failures_after_a_clean_run_writes_nothing(
    tmp_path: Path, sim_process: StartSim
) -> None:
    """With nothing to retry no file appears and the exit code is 0."""
    sim = sim_process({})
    original = write_config(tmp_path, sim.url, count=2)
    cli("run", str(original), "--report", str(tmp_path / "r.json"))
    out = tmp_path / "retry.yaml"

    done = cli("report", "failures", str(tmp_path / "r.json"), "-o", str(out))

    assert done.returncode == 0, done.stderr
    assert "no file written" in done.stdout
    assert not out.exists()


def test_failures_of_a_missing_report_is_a_usage_error(tmp_path: Path) -> None:
    """A report that cannot be read gives exit 2 and one line."""
    done = cli("report", "failures", str(tmp_path / "nope.json"), "-o", "x.yaml")

    assert done.returncode == 2
    assert "cannot read report" in done.stderr
