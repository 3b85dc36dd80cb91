"""
The journal and resume: what survives SIGKILL, and a keyed resume from it.
"""

from __future__ import annotations

import json
import signal
import time
from collections import Counter
from pathlib import Path

import pytest

from orchestrator import journal, targets
from orchestrator.config import Target
from orchestrator.errors import ReportError
from orchestrator.report import Attempt, Outcome
from tests.conftest import PROJECT
from tests.test_cli import StartSim, cli, load_report, start_cli, write_config

KILL_TIMEOUT_S = 30.0


def outcome(dataset_id: str, status: str = "succeeded") -> Outcome:
    return Outcome(PROJECT, dataset_id, status, finished_at=1.0)


def test_journal_has_a_header_and_one_line_per_outcome(tmp_path: Path) -> None:
    """Each outcome is on disk as soon as on_outcome returns, before close."""
    path = tmp_path / "r.journal.jsonl"
    run_journal = journal.Journal(path, config_path=Path("c.yaml"), config_sha256="a")

    run_journal.on_outcome(outcome("ds-1"))
    run_journal.on_outcome(outcome("ds-2", "failed"))
    lines = path.read_text().splitlines()
    run_journal.close()

    assert json.loads(lines[0])["config_sha256"] == "a"
    assert [json.loads(line)["dataset_id"] for line in lines[1:]] == ["ds-1", "ds-2"]
    contents = journal.read(path)
    assert contents.succeeded() == {(PROJECT, "ds-1")}


def test_undecodable_text_is_journaled_with_escapes(tmp_path: Path) -> None:
    """A config path or error text with undecodable bytes shows them as escapes."""
    path = tmp_path / "r.journal.jsonl"
    config_path = Path("conf-\udcff.yaml")  # how Python names a non-UTF-8 file
    run_journal = journal.Journal(path, config_path=config_path, config_sha256="a")

    failed = Outcome(PROJECT, "ds-1", "failed", error_msg="bad \udc80 byte 数据")
    run_journal.on_outcome(failed)
    run_journal.close()

    header, row = (json.loads(line) for line in path.read_text().splitlines())
    assert header["config_path"] == "conf-\\udcff.yaml"
    assert row["error_msg"] == "bad \\udc80 byte 数据"
    assert journal.read(path).results == (row,)


def test_a_line_holds_the_whole_outcome(tmp_path: Path) -> None:
    """Times stay epoch seconds; each attempt keeps its status and request id."""
    path = tmp_path / "r.journal.jsonl"
    run_journal = journal.Journal(path, config_path=Path("c.yaml"), config_sha256="a")
    attempt = Attempt(0.25, 12.5, http_status=503, request_id="req-1")
    run_journal.on_outcome(
        Outcome(PROJECT, "ds-1", "failed", reason="retries_exhausted",
                started_at=10.5, finished_at=11.0, history=(attempt,))
    )  # fmt: skip
    run_journal.close()

    header, row = (json.loads(line) for line in path.read_text().splitlines())
    assert header["journal_version"] == 2
    assert (row["started_at"], row["finished_at"]) == (10.5, 11.0)
    assert row["history"] == [
        {"offset_s": 0.25, "duration_ms": 12.5, "http_status": 503,
         "error_code": None, "request_id": "req-1", "ambiguous": False}
    ]  # fmt: skip


def test_a_version_1_journal_still_resumes(tmp_path: Path) -> None:
    """A journal from before version 2 (report records) is read the same way."""
    path = tmp_path / "old.journal.jsonl"
    path.write_text(
        '{"journal_version": 1, "config_sha256": "a"}\n'
        f'{{"project_id": "{PROJECT}", "dataset_id": "ds-1", "status": "succeeded",'
        ' "started_at": "2026-12-01T00:00:00.000Z"}\n'
    )

    assert journal.read(path).succeeded() == {(PROJECT, "ds-1")}


def test_read_refuses_a_journal_version_it_does_not_know(tmp_path: Path) -> None:
    """A newer tool's journal is refused by name, not half understood."""
    path = tmp_path / "new.journal.jsonl"
    path.write_text('{"journal_version": 3, "config_sha256": "a"}\n')

    with pytest.raises(ReportError, match=r"new.journal.jsonl: journal_version 3"):
        journal.read(path)


def test_read_ignores_a_torn_last_line(tmp_path: Path) -> None:
    """A line cut short by a kill is dropped; the rows before it stay."""
    path = tmp_path / "j.jsonl"
    run_journal = journal.Journal(path, config_path=Path("c.yaml"), config_sha256="a")
    run_journal.on_outcome(outcome("ds-1"))
    run_journal.close()
    with path.open("a") as file:
        file.write('{"project_id": "p", "datas')

    assert [row["dataset_id"] for row in journal.read(path).results] == ["ds-1"]


def test_read_refuses_a_broken_line_in_the_middle(tmp_path: Path) -> None:
    """Only the last line may be torn; damage elsewhere is an error."""
    path = tmp_path / "j.jsonl"
    path.write_text('{"journal_version": 1, "config_sha256": "a"}\n{oops\n{}\n')

    with pytest.raises(ReportError, match=r"j.jsonl:2"):
        journal.read(path)


def test_skip_done_is_keyed_by_pair_not_position() -> None:
    """Reordered targets are matched by project and dataset."""
    plan = (Target(PROJECT, "b"), Target(PROJECT, "a"), Target("other", "a"))

    remaining, skipped = targets.skip_done(plan, {(PROJECT, "a")})

    assert remaining == (Target(PROJECT, "b"), Target("other", "a"))
    assert [(o.dataset_id, o.status, o.reason) for o in skipped] == [
        ("a", "skipped", "already_succeeded")
    ]


def test_resume_from_a_report_runs_only_what_did_not_succeed(
    tmp_path: Path, sim_process: StartSim
) -> None:
    """A resumed run POSTs only the failed target and exits 0 when it succeeds."""
    sim = sim_process({"faults": {"ds-0002": [404]}})
    config = write_config(tmp_path, sim.url, count=4)
    first = cli("run", str(config), "--report", str(tmp_path / "a.json"))
    assert first.returncode == 1

    second = cli(
        "run", str(config), "--report", str(tmp_path / "b.json"),
        "--resume", str(tmp_path / "a.json"),
    )  # fmt: skip

    assert second.returncode == 0, second.stderr
    document = load_report(tmp_path / "b.json")
    statuses = {r["dataset_id"]: r["status"] for r in document["results"]}
    assert statuses == {
        "ds-0001": "skipped",
        "ds-0002": "succeeded",
        "ds-0003": "skipped",
        "ds-0004": "skipped",
    }
    assert [r["dataset_id"] for r in sim.requests()].count("ds-0002") == 2
    assert len(sim.requests()) == 5


def test_resume_refuses_another_configs_journal_without_force(
    tmp_path: Path, sim_process: StartSim
) -> None:
    """A different config hash is a usage error (exit 2) unless --force is given."""
    sim = sim_process({})
    config = write_config(tmp_path, sim.url, count=2)
    assert cli("run", str(config), "--report", str(tmp_path / "a.json")).returncode == 0
    config.write_text(config.read_text() + "# changed\n")

    refused = cli("run", str(config), "--resume", str(tmp_path / "a.json"))
    forced = cli(
        "run", str(config), "--resume", str(tmp_path / "a.json"), "--force",
        "--report", str(tmp_path / "b.json"),
    )  # fmt: skip

    assert refused.returncode == 2
    assert "--force" in refused.stderr
    assert forced.returncode == 0, forced.stderr
    assert load_report(tmp_path / "b.json")["summary"]["skipped"] == 2
    assert len(sim.requests()) == 2


def wait_for_rows(path: Path, count: int) -> None:
    """
    Return once the journal at ``path`` holds ``count`` result rows (polls).
    """
    deadline = time.monotonic() + KILL_TIMEOUT_S
    while not path.exists() or len(path.read_text().splitlines()) < count + 1:
        if time.monotonic() > deadline:
            raise TimeoutError(f"journal has fewer than {count} rows")
        time.sleep(0.01)


@pytest.mark.slow
def test_sigkill_then_resume_posts_each_dataset_successfully_once(
    tmp_path: Path, sim_process: StartSim
) -> None:
    """After kill -9 and a resume, only in-flight datasets got a second 200."""
    concurrency = 4
    sim = sim_process({"latency_ms": 60})
    config = write_config(tmp_path, sim.url, count=80, concurrency=concurrency)
    report_path = tmp_path / "a.json"
    journal_path = journal.path_for(report_path)

    process = start_cli("run", str(config), "--report", str(report_path))
    wait_for_rows(journal_path, 20)
    process.send_signal(signal.SIGKILL)
    process.communicate(timeout=KILL_TIMEOUT_S)
    killed_rows = journal.read(journal_path).results
    resumed = cli(
        "run", str(config), "--resume", str(journal_path),
        "--report", str(tmp_path / "b.json"),
    )  # fmt: skip

    assert not report_path.exists()
    assert 20 <= len(killed_rows) < 80
    assert resumed.returncode == 0, resumed.stderr
    document = load_report(tmp_path / "b.json")
    assert document["summary"]["skipped"] == len(killed_rows)
    accepted = Counter(r["dataset_id"] for r in sim.requests() if r["status"] == 200)
    assert set(accepted) == {f"ds-{i:04d}" for i in range(1, 81)}
    repeated = [dataset for dataset, count in accepted.items() if count > 1]
    assert len(repeated) <= concurrency
    assert all(count <= 2 for count in accepted.values())


def test_dry_run_prints_the_plan_and_sends_nothing(
    tmp_path: Path, sim_process: StartSim
) -> None:
    """--dry-run lists each request and the estimate, and the server sees none."""
    sim = sim_process({})
    config = write_config(tmp_path, sim.url, count=3, rate_limit=2)

    done = cli("run", str(config), "--dry-run", "--report", str(tmp_path / "r.json"))

    assert done.returncode == 0, done.stderr
    assert f"POST {sim.url}/v2/{PROJECT}/datasets/ds-0003/sync-data" in done.stdout
    assert "at least 1.5 s at the rate limit" in done.stdout
    assert "nothing was sent" in done.stdout
    assert sim.requests(kind=None) == []
    assert not (tmp_path / "r.json").exists()
    assert not journal.path_for(tmp_path / "r.json").exists()


def test_dry_run_with_resume_lists_only_the_remaining_targets(
    tmp_path: Path, sim_process: StartSim
) -> None:
    """A resumed dry run shows what the resume would send and what it skips."""
    sim = sim_process({"always": {"ds-0002": {"status": 404}}})
    config = write_config(tmp_path, sim.url, count=3)
    cli("run", str(config), "--report", str(tmp_path / "a.json"))

    done = cli("run", str(config), "--dry-run", "--resume", str(tmp_path / "a.json"))

    posts = [line for line in done.stdout.splitlines() if "POST " in line]
    assert len(posts) == 1
    assert "ds-0002" in posts[0]
    assert "2 already succeeded" in done.stdout


def test_targets_cancelled_by_an_open_circuit_are_resumed(
    tmp_path: Path, sim_process: StartSim
) -> None:
    """After an outage opens the circuit, --resume sends what was not done."""
    work = [f"ds-{i:04d}" for i in range(1, 21)]
    down = sim_process({"always": dict.fromkeys(work, 503)})
    healthy = sim_process({})
    circuit = {"failures": 3, "cooldown": 0.1, "probes": 1}
    config = write_config(tmp_path, down.url, count=20, concurrency=1, circuit=circuit)
    first = cli("run", str(config), "--report", str(tmp_path / "a.json"))
    document = load_report(tmp_path / "a.json")
    cancelled = {
        r["dataset_id"]
        for r in document["results"]
        if (r["status"], r["reason"]) == ("cancelled", "circuit_open")
    }

    second = cli(
        "run", str(config), "--endpoint", healthy.url,
        "--report", str(tmp_path / "b.json"), "--resume", str(tmp_path / "a.json"),
    )  # fmt: skip

    assert first.returncode == 1
    assert document["stop_reason"] == "circuit_open"
    assert len(cancelled) >= 15
    assert second.returncode == 0, second.stderr
    assert sorted(r["dataset_id"] for r in healthy.requests()) == work
    assert load_report(tmp_path / "b.json")["summary"]["succeeded"] == 20
