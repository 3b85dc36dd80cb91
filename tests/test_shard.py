"""
Sharding: N shards cover every target once; shard reports merge into one.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from orchestrator import targets
from orchestrator.errors import ConfigError
from orchestrator.targets import Shard, select_shard, shard_of
from tests.conftest import PROJECT
from tests.conftest import targets as make_targets
from tests.test_cli import StartSim, cli, load_report, start_cli, write_config


@pytest.mark.parametrize(
    "count",
    [
        pytest.param(1, id="one"),
        pytest.param(3, id="three"),
        pytest.param(7, id="seven"),
    ],
)
def test_shards_cover_every_target_exactly_once(count: int) -> None:
    """The union of all shards is the plan, with no target in two shards."""
    work = make_targets(1000)

    shares = [select_shard(work, Shard(index, count)) for index in range(count)]

    seen = Counter(target for share in shares for target in share)
    assert set(seen) == set(work)
    assert set(seen.values()) == {1}
    assert min(len(share) for share in shares) > 1000 / count * 0.8


def test_adding_a_target_moves_no_other_one() -> None:
    """A target's shard depends only on its own project and dataset."""
    work = make_targets(500)
    before = {target: shard_of(target, 5) for target in work}

    grown = (*make_targets(1, project_id="f" * 32), *work)

    assert all(shard_of(target, 5) == before[target] for target in grown[1:])


def test_one_more_shard_moves_about_one_share() -> None:
    """Going from 4 to 5 shards moves about a fifth of the targets, not most."""
    work = make_targets(2000)

    moved = sum(shard_of(t, 4) != shard_of(t, 5) for t in work)

    assert moved < 2000 * 0.25


@pytest.mark.parametrize(
    ("text", "environ", "expected"),
    [
        pytest.param("0/4", {}, Shard(0, 4), id="explicit"),
        pytest.param("auto/4", {"JOB_COMPLETION_INDEX": "3"}, Shard(3, 4), id="auto"),
    ],
)
def test_parse_shard_reads_index_or_job_completion_index(
    text: str, environ: dict[str, str], expected: Shard
) -> None:
    """I/N is taken as written; auto/N takes the index from Kubernetes."""
    assert targets.parse_shard(text, environ) == expected


@pytest.mark.parametrize(
    ("text", "environ"),
    [
        pytest.param("4/4", {}, id="index-too-high"),
        pytest.param("1/0", {}, id="zero-shards"),
        pytest.param("a/b", {}, id="not-numbers"),
        pytest.param("2", {}, id="no-slash"),
        pytest.param("auto/4", {}, id="auto-without-env"),
        pytest.param("auto/4", {"JOB_COMPLETION_INDEX": "9"}, id="env-too-high"),
    ],
)
def test_parse_shard_refuses_bad_values(text: str, environ: dict[str, str]) -> None:
    """A bad shard is a usage error naming what was given."""
    with pytest.raises(ConfigError, match="--shard"):
        targets.parse_shard(text, environ)


def test_shard_runs_merge_into_one_report_of_every_target(
    tmp_path: Path, sim_process: StartSim
) -> None:
    """Three shard runs POST each dataset once; merge recomputes the summary."""
    sim = sim_process({"always": {"ds-0007": {"status": 404}}})
    config = write_config(tmp_path, sim.url, count=30, rate_limit=90, concurrency=6)
    paths = [tmp_path / f"shard-{i}.json" for i in range(3)]

    runs = [
        start_cli("run", str(config), "--shard", f"{i}/3", "--report", str(path))
        for i, path in enumerate(paths)
    ]
    for run in runs:
        run.communicate(timeout=60)  # the shards run side by side, as in a Job
    shard = load_report(paths[1])
    merged = cli("report", "merge", *map(str, paths), "-o", str(tmp_path / "all.json"))

    assert shard["shard"] == {"index": 1, "count": 3}
    assert shard["config"]["rate_limit"] == 30
    assert shard["config"]["concurrency"] == 2
    assert merged.returncode == 1  # ds-0007 failed
    document = load_report(tmp_path / "all.json")
    assert document["summary"]["total"] == 30
    assert (document["summary"]["succeeded"], document["summary"]["failed"]) == (29, 1)
    assert document["config"]["rate_limit"] == 90
    posted = Counter(r["dataset_id"] for r in sim.requests())
    assert posted == {f"ds-{i:04d}": 1 for i in range(1, 31)}
    assert {r["project_id"] for r in document["results"]} == {PROJECT}


def test_merge_refuses_overlapping_reports(
    tmp_path: Path, sim_process: StartSim
) -> None:
    """The same target in two reports means the shards overlapped: exit 2."""
    sim = sim_process({})
    config = write_config(tmp_path, sim.url, count=2)
    cli("run", str(config), "--report", str(tmp_path / "a.json"))

    done = cli(
        "report", "merge", str(tmp_path / "a.json"), str(tmp_path / "a.json"),
        "-o", str(tmp_path / "all.json"),
    )  # fmt: skip

    assert done.returncode == 2
    assert "more than one report" in done.stderr


def test_dry_run_of_a_shard_shows_its_share_and_divided_limits(tmp_path: Path) -> None:
    """A sharded dry run lists only its targets, at 1/N of the rate and slots."""
    config = write_config(tmp_path, "http://127.0.0.1:9", count=40, concurrency=8)
    mine = select_shard(make_targets(40), Shard(2, 4))

    done = cli("run", str(config), "--dry-run", "--shard", "2/4")

    assert done.returncode == 0, done.stderr
    assert "pacing      50/s, 2 in flight" in done.stdout
    assert "0 duplicates merged" in done.stdout
    posts = [line for line in done.stdout.splitlines() if "POST " in line]
    assert len(posts) == len(mine)
    assert all(any(t.dataset_id in line for t in mine) for line in posts)
