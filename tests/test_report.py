"""
Tests for orchestrator.report: statistics, schema, atomic write, load.
"""

from __future__ import annotations

import copy
import json
import os
import stat
import tracemalloc
from collections.abc import Callable
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from orchestrator import report
from orchestrator.errors import ReportError
from orchestrator.report import Attempt, Outcome, RunFacts

T0 = 1_796_317_200.0  # 2026-12-03T17:00:00Z
SHA = "ab" * 32

FACTS = RunFacts(
    tool_version="0.1.0",
    config_path="configs/example.yaml",
    config_sha256=SHA,
    endpoint="http://127.0.0.1:8080",
    rate_limit_per_s=10.0,
    concurrency=8,
    started_at=T0,
    finished_at=T0 + 12.3456,
    stop_reason=None,
)


def _ok(offset_s: float, duration_ms: float = 40.0) -> Attempt:
    return Attempt(offset_s, duration_ms, http_status=200, request_id="req-ok")


def _outcomes() -> list[Outcome]:
    """
    Return five targets covering every status and kind of attempt.
    """
    return [
        Outcome(
            "p1",
            "d1",
            "succeeded",
            http_status=200,
            request_id="r1",
            started_at=T0 + 0.5,
            finished_at=T0 + 0.5412,
            history=(_ok(0.0, 41.2),),
        ),
        Outcome(
            "p1",
            "d2",
            "succeeded",
            already_running=True,
            http_status=200,
            started_at=T0 + 1.0,
            finished_at=T0 + 4.0,
            history=(
                Attempt(0.5, 10.0, http_status=429, error_code="APIG.0308"),
                Attempt(1.0, 20.0, http_status=503),
                Attempt(2.0, 30.0, http_status=None, ambiguous=True),
                _ok(4.0, 50.0),
            ),
        ),
        Outcome(
            "p2",
            "d3",
            "failed",
            reason="not_found",
            http_status=404,
            error_code="ModelArts.4352",
            error_msg="dataset not found",
            history=(Attempt(3.0, 60.0, http_status=404, error_code="ModelArts.4352"),),
        ),
        Outcome(
            "p2",
            "d4",
            "failed",
            reason="retries_exhausted",
            history=(
                Attempt(2.5, 5.0, http_status=429),
                Attempt(3.5, 70.0, http_status=200, error_code="ModelArts.4409"),
            ),
        ),
        Outcome("p3", "d5", "cancelled", reason="deadline"),
        Outcome("p3", "d6", "skipped", reason="resumed"),
    ]


@pytest.fixture
def built() -> dict[str, Any]:
    """
    Return the report built from the standard outcomes.
    """
    return report.build(_outcomes(), FACTS)


@pytest.fixture
def validator() -> jsonschema.Draft202012Validator:
    """
    Return a validator for the packaged schema.
    """
    return jsonschema.Draft202012Validator(report.schema())


# build ------------------------------------------------------------------------


def test_build_counts_results_by_status(built: dict[str, Any]) -> None:
    """Summary counts each status, and the counts add up to the total."""
    summary = built["summary"]

    assert {k: summary[k] for k in ("total", "succeeded", "failed")} == {
        "total": 6,
        "succeeded": 2,
        "failed": 2,
    }
    assert (summary["cancelled"], summary["skipped"]) == (1, 1)


def test_build_counts_attempts_retries_and_throttled(built: dict[str, Any]) -> None:
    """Attempts sum every request; retries skip each target's first; 429s count."""
    summary = built["summary"]

    assert summary["attempts"] == 8
    assert summary["retries"] == 3 + 0 + 1
    assert summary["throttled"] == 2


def test_build_keys_errors_by_code_then_status_then_transport(
    built: dict[str, Any],
) -> None:
    """An error_code wins, else HTTP.<status>, else TRANSPORT; plain 2xx is no error."""
    assert built["summary"]["errors_by_code"] == {
        "APIG.0308": 1,
        "HTTP.503": 1,
        "TRANSPORT": 1,
        "ModelArts.4352": 1,
        "HTTP.429": 1,
        "ModelArts.4409": 1,
    }


def test_build_orders_tallies_most_common_first() -> None:
    """Errors and reasons list the most frequent key first, ties by name."""
    outcomes = [
        Outcome("p", f"d{i}", "failed", reason=reason, history=(Attempt(i, 1.0),))
        for i, reason in enumerate(["b", "a", "b", "c", "a", "b"])
    ]

    summary = report.build(outcomes, FACTS)["summary"]

    assert list(summary["reasons"].items()) == [("b", 3), ("a", 2), ("c", 1)]
    assert summary["errors_by_code"] == {"TRANSPORT": 6}


def test_build_counts_reasons_ignoring_null(built: dict[str, Any]) -> None:
    """Reasons tally results that have one and skip those without."""
    assert built["summary"]["reasons"] == {
        "deadline": 1,
        "not_found": 1,
        "resumed": 1,
        "retries_exhausted": 1,
    }


@pytest.mark.parametrize(
    ("latencies", "expected"),
    [
        pytest.param(
            [float(v) for v in range(1, 101)],
            {"p50": 50.0, "p95": 95.0, "p99": 99.0, "max": 100.0},
            id="one-to-hundred",
        ),
        pytest.param(
            [15.0, 20.0, 35.0, 40.0, 50.0],
            {"p50": 35.0, "p95": 50.0, "p99": 50.0, "max": 50.0},
            id="five-values",
        ),
        pytest.param(
            [7.25],
            {"p50": 7.2, "p95": 7.2, "p99": 7.2, "max": 7.2},
            id="single-rounded",
        ),
        pytest.param(
            [3.0, 1.0, 2.0, 4.0],
            {"p50": 2.0, "p95": 4.0, "p99": 4.0, "max": 4.0},
            id="unsorted-even",
        ),
        pytest.param([], {"p50": 0, "p95": 0, "p99": 0, "max": 0}, id="none"),
    ],
)
def test_build_latency_uses_nearest_rank(
    latencies: list[float], expected: dict[str, float]
) -> None:
    """Percentiles are nearest-rank values from the list, not interpolations."""
    history = tuple(
        Attempt(float(i), ms, http_status=200) for i, ms in enumerate(latencies)
    )
    outcomes = [Outcome("p", "d", "succeeded", history=history)]

    assert report.build(outcomes, FACTS)["summary"]["latency_ms"] == expected


def test_build_latency_ignores_attempts_without_answer() -> None:
    """A request that got no answer says nothing about server latency."""
    history = (
        Attempt(0.0, 30_000.0),
        Attempt(1.0, 12.0, http_status=503),
        Attempt(2.0, 8.0, http_status=200),
    )
    outcomes = [Outcome("p", "d", "succeeded", history=history)]

    latency = report.build(outcomes, FACTS)["summary"]["latency_ms"]

    assert latency == {"p50": 8.0, "p95": 12.0, "p99": 12.0, "max": 12.0}


@pytest.mark.parametrize(
    ("offsets", "expected"),
    [
        pytest.param([0.0, 0.5, 1.0, 1.5, 2.0], 2.0, id="steady"),
        pytest.param([3.0, 0.0, 1.0], 0.667, id="unordered-rounded"),
        pytest.param([1.0], 0.0, id="one-attempt"),
        pytest.param([2.0, 2.0, 2.0], 0.0, id="same-instant"),
        pytest.param([], 0.0, id="no-attempts"),
    ],
)
def test_build_achieved_rate_spans_first_to_last_attempt(
    offsets: list[float], expected: float
) -> None:
    """The rate is (n-1) over the span of release offsets, 0.0 when undefined."""
    outcomes = [
        Outcome("p", f"d{i}", "succeeded", history=(_ok(offset),))
        for i, offset in enumerate(offsets)
    ]

    assert report.build(outcomes, FACTS)["summary"]["achieved_rate"] == expected


def test_build_keeps_results_in_given_order_with_history(
    built: dict[str, Any],
) -> None:
    """Results follow the input order and carry every attempt."""
    results = built["results"]

    assert [r["dataset_id"] for r in results] == ["d1", "d2", "d3", "d4", "d5", "d6"]
    assert [r["attempts"] for r in results] == [1, 4, 1, 2, 0, 0]
    assert results[1]["history"][2] == {
        "offset_s": 2.0,
        "duration_ms": 30.0,
        "http_status": None,
        "error_code": None,
        "request_id": None,
        "ambiguous": True,
    }


def test_build_formats_times_as_utc_milliseconds(built: dict[str, Any]) -> None:
    """Timestamps are ISO-8601 UTC with a Z; durations are derived from them."""
    first = built["results"][0]

    assert built["started_at"] == "2026-12-03T17:00:00.000Z"
    assert built["finished_at"] == "2026-12-03T17:00:12.345Z"
    assert built["duration_s"] == 12.346
    assert first["started_at"] == "2026-12-03T17:00:00.500Z"
    assert first["duration_ms"] == 41.2
    assert built["results"][4]["started_at"] is None
    assert built["results"][4]["duration_ms"] is None


def test_build_copies_run_facts(built: dict[str, Any]) -> None:
    """Tool, config and stop reason come straight from the run facts."""
    assert built["schema_version"] == 1
    assert built["tool"] == {"name": "modelarts-sync", "version": "0.1.0"}
    assert built["config"] == {
        "path": "configs/example.yaml",
        "sha256": SHA,
        "endpoint": "http://127.0.0.1:8080",
        "rate_limit": 10.0,
        "concurrency": 8,
    }
    assert built["stop_reason"] is None


def test_build_cuts_error_msg_to_500_chars() -> None:
    """A long server message is cut so one target cannot bloat the report."""
    outcome = Outcome("p", "d", "failed", error_msg="x" * 5000)

    result = report.build([outcome], FACTS)["results"][0]

    assert result["error_msg"] == "x" * 500


def test_build_makes_undecodable_text_json_safe(tmp_path: Path) -> None:
    """Lone surrogates from undecodable bytes become visible escapes, not errors."""
    outcome = Outcome("p", "d", "failed", error_msg="bad \udc80 byte 数据")

    built = report.build([outcome], FACTS)
    written = report.load(report.write(built, tmp_path / "r.json"))

    assert written["results"][0]["error_msg"] == "bad \\udc80 byte 数据"


def test_build_rejects_non_finite_times() -> None:
    """A NaN time is a caller's bug and is named rather than written."""
    outcome = Outcome("p", "d", "succeeded", history=(_ok(float("nan")),))

    with pytest.raises(ValueError, match="offset_s"):
        report.build([outcome], FACTS)


def test_build_of_no_outcomes_is_empty_and_valid(
    validator: jsonschema.Draft202012Validator,
) -> None:
    """A run with no targets still gives a complete, valid report."""
    built = report.build([], FACTS)

    validator.validate(built)
    assert built["summary"]["total"] == 0
    assert built["results"] == []


# schema -----------------------------------------------------------------------


def test_schema_is_valid_draft_2020_12() -> None:
    """The packaged schema is itself a valid Draft 2020-12 schema."""
    jsonschema.Draft202012Validator.check_schema(report.schema())


def test_built_report_validates_against_schema(
    built: dict[str, Any], validator: jsonschema.Draft202012Validator
) -> None:
    """A report from build() passes the packaged schema."""
    validator.validate(built)


def test_schema_allows_new_fields_at_top_level_and_in_results(
    built: dict[str, Any], validator: jsonschema.Draft202012Validator
) -> None:
    """Fields added within version 1 do not make older readers reject a report."""
    built["shard"] = {"index": 0, "count": 4}
    built["results"][0]["discovered"] = True
    built["results"][1]["history"][0]["wait_s"] = 1.5

    validator.validate(built)


def _set(path: str, value: Any) -> Callable[[dict[str, Any]], None]:
    keys = [int(k) if k.isdigit() else k for k in path.split(".")]

    def breaker(doc: dict[str, Any]) -> None:
        target: Any = doc
        for key in keys[:-1]:
            target = target[key]
        target[keys[-1]] = value

    return breaker


def _delete(path: str) -> Callable[[dict[str, Any]], None]:
    *parents, last = path.split(".")

    def breaker(doc: dict[str, Any]) -> None:
        target: Any = doc
        for key in parents:
            target = target[int(key) if key.isdigit() else key]
        del target[last]

    return breaker


@pytest.mark.parametrize(
    "breaker",
    [
        pytest.param(_delete("summary"), id="missing-summary"),
        pytest.param(_delete("results.0.history"), id="missing-history"),
        pytest.param(_set("schema_version", 2), id="wrong-version"),
        pytest.param(_set("results.0.status", "done"), id="unknown-status"),
        pytest.param(_set("results.0.attempts", "1"), id="attempts-as-string"),
        pytest.param(_set("results.0.http_status", 42), id="impossible-status"),
        pytest.param(_set("results.0.error_msg", "x" * 501), id="long-error-msg"),
        pytest.param(_set("results.0.started_at", "yesterday"), id="bad-timestamp"),
        pytest.param(_set("results.1.history.0.ambiguous", None), id="null-flag"),
        pytest.param(_set("summary.failed", -1), id="negative-count"),
        pytest.param(_set("summary.extra", 1), id="unknown-summary-key"),
        pytest.param(_set("summary.errors_by_code.X", 1.5), id="fractional-tally"),
        pytest.param(_set("config.sha256", "abc"), id="short-sha256"),
        pytest.param(_set("stop_reason", "bored"), id="unknown-stop-reason"),
        pytest.param(_set("finished_at", "2026-12-03T17:00:12+00:00"), id="no-z"),
    ],
)
def test_broken_report_fails_schema(
    built: dict[str, Any],
    validator: jsonschema.Draft202012Validator,
    breaker: Callable[[dict[str, Any]], None],
) -> None:
    """Each kind of damage to a good report is caught by the schema."""
    broken = copy.deepcopy(built)
    breaker(broken)

    assert not validator.is_valid(broken)


_texts = st.text(min_size=1, max_size=12)
_attempts = st.builds(
    Attempt,
    offset_s=st.floats(0, 1e5),
    duration_ms=st.floats(0, 1e6),
    http_status=st.none() | st.integers(100, 599),
    error_code=st.none() | _texts,
    request_id=st.none() | st.text(max_size=12),
    ambiguous=st.booleans(),
)
_outcome_lists = st.lists(
    st.builds(
        Outcome,
        project_id=_texts,
        dataset_id=_texts,
        status=st.sampled_from(["succeeded", "failed", "cancelled", "skipped"]),
        reason=st.none() | _texts,
        already_running=st.booleans(),
        http_status=st.none() | st.integers(100, 599),
        error_msg=st.none() | st.text(max_size=600),
        started_at=st.none() | st.floats(T0, T0 + 1e5),
        finished_at=st.none() | st.floats(T0, T0 + 1e5),
        history=st.lists(_attempts, max_size=4).map(tuple),
    ),
    max_size=8,
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(outcomes=_outcome_lists)
def test_any_built_report_is_consistent_and_valid(outcomes: list[Outcome]) -> None:
    """Whatever the outcomes, the summary adds up and the schema accepts it."""
    built = report.build(outcomes, FACTS)
    summary = built["summary"]

    jsonschema.Draft202012Validator(report.schema()).validate(built)
    statuses = ("succeeded", "failed", "cancelled", "skipped")
    assert sum(summary[s] for s in statuses) == summary["total"] == len(outcomes)
    assert summary["attempts"] == sum(o.attempts for o in outcomes)
    assert summary["retries"] == summary["attempts"] - sum(
        1 for o in outcomes if o.history
    )
    assert sum(summary["errors_by_code"].values()) <= summary["attempts"]
    assert sum(summary["reasons"].values()) == sum(1 for o in outcomes if o.reason)


# write ------------------------------------------------------------------------


def test_write_creates_folder_and_round_trips(
    built: dict[str, Any], tmp_path: Path
) -> None:
    """A written report loads back equal, from a folder write() created."""
    path = tmp_path / "deep" / "er" / "report.json"

    returned = report.write(built, path)

    assert returned == path
    assert report.load(path) == built


def test_write_puts_one_result_per_line(built: dict[str, Any], tmp_path: Path) -> None:
    """Each result is one line, so reports grep and diff well."""
    path = report.write(built, tmp_path / "report.json")

    lines = path.read_text(encoding="utf-8").splitlines()

    dataset_lines = [line for line in lines if '"dataset_id"' in line]
    assert len(dataset_lines) == len(built["results"])
    assert json.loads(dataset_lines[0].rstrip(",")) == built["results"][0]


def test_write_replaces_target_whole_and_leaves_no_temp_files(
    built: dict[str, Any], tmp_path: Path
) -> None:
    """A second write replaces the first completely; only the target remains."""
    path = tmp_path / "report.json"
    path.write_text("x" * 1_000_000, encoding="utf-8")

    report.write(built, path)
    report.write(report.build([], FACTS), path)

    assert [p.name for p in tmp_path.iterdir()] == ["report.json"]
    assert report.load(path)["results"] == []


def test_write_failure_keeps_old_report_and_cleans_up(
    built: dict[str, Any], tmp_path: Path
) -> None:
    """A report that cannot be encoded leaves the old file intact and no temp file."""
    path = report.write(built, tmp_path / "report.json")
    before = path.read_bytes()
    unencodable = dict(built, results=[object()] * 3000)

    with pytest.raises(TypeError):
        report.write(unencodable, path)

    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["report.json"]


def test_write_makes_report_readable_by_others(
    built: dict[str, Any], tmp_path: Path
) -> None:
    """The report is not left with the temp file's owner-only mode."""
    path = report.write(built, tmp_path / "report.json")

    assert stat.S_IMODE(path.stat().st_mode) == 0o644


@pytest.mark.skipif(
    os.geteuid() == 0, reason="root writes into read-only folders regardless"
)
def test_write_into_read_only_folder_raises_report_error(
    built: dict[str, Any], tmp_path: Path
) -> None:
    """An unwritable folder is a ReportError naming the path and the OS reason."""
    folder = tmp_path / "locked"
    folder.mkdir()
    folder.chmod(0o500)
    path = folder / "report.json"

    try:
        with pytest.raises(ReportError, match="Permission denied") as caught:
            report.write(built, path)
    finally:
        folder.chmod(0o700)

    assert str(path) in str(caught.value)
    assert isinstance(caught.value.__cause__, PermissionError)
    assert list(folder.iterdir()) == []


@pytest.mark.parametrize(
    "relative",
    [
        pytest.param("afile/report.json", id="parent-is-file"),
        pytest.param("afile/sub/report.json", id="ancestor-is-file"),
    ],
)
def test_write_under_a_regular_file_raises_report_error(
    built: dict[str, Any], tmp_path: Path, relative: str
) -> None:
    """A folder path that runs through a regular file is a chained ReportError."""
    (tmp_path / "afile").write_text("not a folder", encoding="utf-8")
    path = tmp_path / relative

    with pytest.raises(ReportError, match="cannot write report") as caught:
        report.write(built, path)

    assert str(path) in str(caught.value)
    assert isinstance(caught.value.__cause__, OSError)
    assert (tmp_path / "afile").read_text(encoding="utf-8") == "not a folder"


# default_path -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("now", "expected"),
    [
        pytest.param(
            datetime(2026, 12, 3, 17, 15, 0, 999_999, tzinfo=UTC),
            "reports/sync-20261203T171500Z.json",
            id="utc",
        ),
        pytest.param(
            datetime(2026, 12, 4, 1, 15, tzinfo=timezone(timedelta(hours=8))),
            "reports/sync-20261203T171500Z.json",
            id="beijing-time-converted",
        ),
    ],
)
def test_default_path_names_report_by_utc_second(now: datetime, expected: str) -> None:
    """The default name is the UTC start time to the second, under reports/."""
    assert report.default_path(now) == Path(expected)


def test_default_path_uses_given_folder() -> None:
    """A folder argument replaces reports/."""
    now = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)

    path = report.default_path(now, Path("/var/lib/sync"))

    assert path == Path("/var/lib/sync/sync-20260102T030405Z.json")


def test_default_path_rejects_naive_datetime() -> None:
    """A time without a zone would silently name the wrong hour."""
    with pytest.raises(ValueError, match="timezone-aware"):
        report.default_path(datetime(2026, 12, 3, 17, 15))


# load -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("content", "message"),
    [
        pytest.param(b"{not json", "not valid JSON", id="garbage"),
        pytest.param(b"", "not valid JSON", id="empty"),
        pytest.param(b"\xff\xfe\x00", "not valid JSON", id="not-utf8"),
        pytest.param(b'{"schema_version": NaN}', "not valid JSON", id="nan"),
        pytest.param(b"[1, 2]", "must hold a JSON object", id="array"),
        pytest.param(b'{"schema_version": 2}', "schema_version 2", id="future"),
        pytest.param(b'{"schema_version": true}', "schema_version True", id="bool"),
        pytest.param(b"{}", "schema_version None", id="no-version"),
    ],
)
def test_load_rejects_what_is_not_a_report(
    tmp_path: Path, content: bytes, message: str
) -> None:
    """Anything but a version 1 report object is a ReportError."""
    path = tmp_path / "report.json"
    path.write_bytes(content)

    with pytest.raises(ReportError, match=message):
        report.load(path)


def test_load_of_missing_file_raises_report_error(tmp_path: Path) -> None:
    """A missing report is a ReportError chained to the OS error."""
    path = tmp_path / "nope.json"

    with pytest.raises(ReportError, match="No such file") as caught:
        report.load(path)

    assert isinstance(caught.value.__cause__, FileNotFoundError)


# exit_code --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("statuses", "expected"),
    [
        pytest.param([], 0, id="nothing-to-do"),
        pytest.param(["succeeded", "skipped"], 0, id="all-good"),
        pytest.param(["succeeded", "failed"], 1, id="one-failed"),
        pytest.param(["skipped", "cancelled"], 1, id="one-cancelled"),
    ],
)
def test_exit_code_is_zero_only_when_all_succeeded_or_skipped(
    statuses: list[Any], expected: int
) -> None:
    """Failed or cancelled targets make the run exit 1."""
    outcomes = [Outcome("p", f"d{i}", s) for i, s in enumerate(statuses)]

    assert report.exit_code(report.build(outcomes, FACTS)) == expected


def test_exit_code_of_loaded_report_matches_built(
    built: dict[str, Any], tmp_path: Path
) -> None:
    """A saved report gives the same exit code as the one in memory."""
    loaded = report.load(report.write(built, tmp_path / "report.json"))

    assert report.exit_code(loaded) == report.exit_code(built) == 1


def test_build_reports_sync_states_names_and_sample_sums() -> None:
    """Sync objects appear per result and are tallied; an unresolved name has no id."""
    done = report.SyncReport(
        "COMPLETED", task_id="t1", add_sample_count=5, deleted_sample_count=1, polls=3
    )
    outcomes = [
        Outcome("p1", "d1", "succeeded", dataset_name="cars", sync=done),
        Outcome("p1", "d2", "succeeded", sync=done),
        Outcome(
            "p1",
            "d3",
            "failed",
            reason="sync_timeout",
            sync=report.SyncReport("RUNNING", add_sample_count=0, polls=9),
        ),
        Outcome("p1", "", "failed", reason="ambiguous_name", dataset_name="bus"),
    ]

    built = report.build(outcomes, FACTS)

    jsonschema.Draft202012Validator(report.schema()).validate(built)
    summary = built["summary"]
    assert summary["sync_states"] == {"COMPLETED": 2, "RUNNING": 1}
    assert (summary["samples_added"], summary["samples_deleted"]) == (10, 2)
    assert summary["status_polls"] == 15
    first, _, timed_out, unresolved = built["results"]
    assert first["dataset_name"] == "cars"
    assert first["sync"] == {
        "state": "COMPLETED",
        "task_id": "t1",
        "add_sample_count": 5,
        "deleted_sample_count": 1,
        "total_sample_count": None,
        "duration_s": None,
        "error_code": None,
        "error_msg": None,
        "polls": 3,
    }
    assert timed_out["sync"]["state"] == "RUNNING"
    assert (unresolved["dataset_id"], unresolved["sync"]) == (None, None)


def test_an_assembled_report_writes_the_same_bytes_as_a_built_one(
    tmp_path: Path,
) -> None:
    """Results built as they are read give the file a list of dicts gives."""
    outcomes = _outcomes() * 700  # past one 2,000-result batch of the writer
    built_path = report.write(report.build(outcomes, FACTS), tmp_path / "built.json")
    assembled = report.assemble(outcomes, FACTS)
    assembled_path = report.write(assembled, tmp_path / "assembled.json")

    assert assembled_path.read_bytes() == built_path.read_bytes()
    assert len(assembled["results"]) == len(outcomes)
    assert assembled["results"][1] == report.build(outcomes[:2], FACTS)["results"][1]
    assert list(assembled["results"])[-1]["status"] == "skipped"


def test_writing_an_assembled_report_does_not_hold_every_result_as_a_dict(
    tmp_path: Path,
) -> None:
    """Writing a 20,000-target run's report peaks far below its results as dicts."""
    outcomes = [
        Outcome("p1", f"d{i}", "succeeded", http_status=200, history=(_ok(i / 100),))
        for i in range(20_000)
    ]

    def peak_bytes(write: Callable[[], object]) -> int:
        tracemalloc.start()
        try:
            write()
            return tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()

    lazy = peak_bytes(
        lambda: report.write(report.assemble(outcomes, FACTS), tmp_path / "a.json")
    )
    eager = peak_bytes(
        lambda: report.write(report.build(outcomes, FACTS), tmp_path / "b.json")
    )

    assert lazy < eager / 3, (lazy, eager)
