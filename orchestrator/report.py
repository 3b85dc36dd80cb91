"""
Outcome records, the run's summary statistics, and the report file.
"""

from __future__ import annotations

import contextlib
import functools
import importlib.resources
import json
import math
import os
import tempfile
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from http import HTTPStatus
from pathlib import Path
from typing import Any, Literal, TextIO, overload

from orchestrator.errors import ReportError

Status = Literal["succeeded", "failed", "cancelled", "skipped"]


@dataclass(frozen=True, slots=True)
class Attempt:
    """
    One request the run sent for a target, and what came of it.

    ``offset_s`` is when the rate limiter released it, in seconds since the run
    started; ``http_status`` is None when no answer arrived.
    """

    offset_s: float
    duration_ms: float
    http_status: int | None = None
    error_code: str | None = None
    request_id: str | None = None
    ambiguous: bool = False


@dataclass(frozen=True, slots=True)
class SyncReport:
    """
    What the status API last said of a target's sync, and how often it was asked.

    ``state`` is the API's word (``COMPLETED``, ``FAILED``, ``RUNNING``, ...);
    ``duration_s`` is the server's own measure of the task.
    """

    state: str
    task_id: str | None = None
    add_sample_count: int | None = None
    deleted_sample_count: int | None = None
    total_sample_count: int | None = None
    duration_s: float | None = None
    error_code: str | None = None
    error_msg: str | None = None
    polls: int = 0


@dataclass(frozen=True, slots=True)
class Outcome:
    """
    The one result a target ends with; times are Unix epoch seconds.

    ``dataset_id`` is empty only for a config entry that named a dataset that
    discovery could not pin down (none or several of that name); ``sync`` is
    None unless the run asked for the sync's status.
    """

    project_id: str
    dataset_id: str
    status: Status
    reason: str | None = None
    already_running: bool = False
    http_status: int | None = None
    error_code: str | None = None
    error_msg: str | None = None
    request_id: str | None = None
    started_at: float | None = None
    finished_at: float | None = None
    history: tuple[Attempt, ...] = ()
    dataset_name: str | None = None
    sync: SyncReport | None = None

    @property
    def attempts(self) -> int:
        """
        Return how many requests were sent for this target.
        """
        return len(self.history)


SCHEMA_VERSION = 1
TOOL_NAME = "modelarts-sync"
ERROR_MSG_MAX_CHARS = 500
SCHEMA_RESOURCE = "report.schema.json"
_OK_STATUSES = frozenset({"succeeded", "skipped"})
_PERCENTILES = (50, 95, 99)


@dataclass(frozen=True, slots=True)
class RunFacts:
    """
    What the report says about the run as a whole; times are Unix epoch seconds.

    ``stop_reason`` is None for a run that went through its whole list, else
    ``"deadline"``, ``"interrupted"`` or ``"auth_failed"``.
    """

    tool_version: str
    config_path: str
    config_sha256: str
    endpoint: str
    rate_limit_per_s: float
    concurrency: int
    started_at: float
    finished_at: float
    stop_reason: str | None


def build(outcomes: Sequence[Outcome], facts: RunFacts) -> dict[str, Any]:
    """
    Turn the run's outcomes, in the order given, into a version 1 report.

    Every value in the result is JSON-safe: strings that cannot be encoded as
    UTF-8 (lone surrogates from undecodable bytes) show those code points as
    ``\\udcXX`` text. A time that is NaN or infinite is a bug in the caller and
    raises ValueError naming the field.
    """
    document = assemble(outcomes, facts)
    document["results"] = list(document["results"])
    return document


def assemble(outcomes: Sequence[Outcome], facts: RunFacts) -> dict[str, Any]:
    """
    Return the report `build` returns, but with `Results` built as they are read.

    For a run's own report: `write` then encodes one result at a time, where
    100,000 results held as dicts took 110 MB. A bad time raises ValueError
    when its result is read.
    """
    results = Results(outcomes)
    duration_s = _finite(facts.finished_at, "finished_at") - _finite(
        facts.started_at, "started_at"
    )

    return {
        "schema_version": SCHEMA_VERSION,
        "tool": {"name": TOOL_NAME, "version": _text(facts.tool_version)},
        "started_at": _iso(facts.started_at),
        "finished_at": _iso(facts.finished_at),
        # The wall clock may step back (NTP) during a run; a negative span means 0.
        "duration_s": round(max(duration_s, 0.0), 3),
        "stop_reason": facts.stop_reason,
        "config": {
            "path": _text(facts.config_path),
            "sha256": _text(facts.config_sha256),
            "endpoint": _text(facts.endpoint),
            "rate_limit": _finite(float(facts.rate_limit_per_s), "rate_limit_per_s"),
            "concurrency": int(facts.concurrency),
        },
        "summary": _summary(outcomes),
        "results": results,
    }


class Results(Sequence[dict[str, Any]]):
    """
    A report's results, each built from its outcome when it is read.

    Reading the same result twice builds it twice; nothing is kept but the
    outcomes.
    """

    __slots__ = ("_outcomes",)

    def __init__(self, outcomes: Sequence[Outcome]) -> None:
        self._outcomes = outcomes

    def __len__(self) -> int:
        return len(self._outcomes)

    @overload
    def __getitem__(self, index: int) -> dict[str, Any]: ...

    @overload
    def __getitem__(self, index: slice) -> list[dict[str, Any]]: ...

    def __getitem__(self, index: int | slice) -> dict[str, Any] | list[dict[str, Any]]:
        if isinstance(index, slice):
            return [_result(outcome) for outcome in self._outcomes[index]]
        return _result(self._outcomes[index])

    def __iter__(self) -> Iterator[dict[str, Any]]:
        return map(_result, self._outcomes)


def write(report: Mapping[str, Any], path: Path) -> Path:
    """
    Write the report to ``path`` atomically and return ``path``.

    The JSON goes to a temporary file in the same folder, is flushed to disk and
    then renamed over ``path``: a reader sees the old file or the new one, never
    half of one. The folder is created if missing. Each result takes one line,
    so a report of 100,000 targets stays greppable and ``diff``-able. The file
    is readable by everyone (mode 0644): it names datasets but holds no secret.

    Raises:
        ReportError: the folder or the file could not be written.
    """
    folder = path.parent
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd, temp_name = tempfile.mkstemp(
            prefix=f".{path.name}.", suffix=".tmp", dir=folder
        )
    except OSError as exc:
        raise ReportError(
            f"cannot write report {str(path)!r}: {_os_reason(exc)}"
        ) from exc

    try:
        _write_temp(fd, report)
        os.replace(temp_name, path)
    except BaseException as exc:
        # Whatever went wrong, a half-written temp file must not stay behind.
        with contextlib.suppress(OSError):
            os.unlink(temp_name)
        if isinstance(exc, OSError):
            raise ReportError(
                f"cannot write report {str(path)!r}: {_os_reason(exc)}"
            ) from exc
        raise
    _fsync_folder(folder)

    return path


def default_path(now: datetime, folder: Path = Path("reports")) -> Path:
    """
    Return where a run started at ``now`` writes its report by default.

    The name has one-second resolution (``sync-20261203T171500Z.json``): two runs
    started in the same second would share it, which the per-config lock makes
    unlikely and which costs only the older report.
    """
    if now.tzinfo is None or now.utcoffset() is None:
        raise ValueError(f"now must be timezone-aware, got {now!r}")
    stamp = now.astimezone(UTC).strftime("%Y%m%dT%H%M%SZ")

    return folder / f"sync-{stamp}.json"


def load(path: Path) -> dict[str, Any]:
    """
    Read a report that ``write`` saved.

    Only the outer shape is checked (a JSON object of schema version 1); a full
    check against ``schema()`` needs jsonschema, which is not a run-time
    dependency.

    Raises:
        ReportError: the file cannot be read, is not JSON, or is not a version 1
            report.
    """
    try:
        with path.open(encoding="utf-8") as file:
            report = json.load(file, parse_constant=_reject_constant)
    except OSError as exc:
        raise ReportError(
            f"cannot read report {str(path)!r}: {_os_reason(exc)}"
        ) from exc
    except (ValueError, RecursionError) as exc:
        raise ReportError(f"report {str(path)!r} is not valid JSON: {exc}") from exc

    if not isinstance(report, dict):
        raise ReportError(
            f"report {str(path)!r} must hold a JSON object, "
            f"found {type(report).__name__}"
        )
    version = report.get("schema_version")
    if isinstance(version, bool) or version != SCHEMA_VERSION:
        raise ReportError(
            f"report {str(path)!r} has schema_version {version!r}; "
            f"this tool reads version {SCHEMA_VERSION}"
        )

    return report


def schema() -> dict[str, Any]:
    """
    Return the JSON Schema (Draft 2020-12) of a version 1 report, a fresh copy.
    """
    loaded: dict[str, Any] = json.loads(_schema_text())
    return loaded


def exit_code(report: Mapping[str, Any]) -> int:
    """
    Return 0 if every target succeeded or was skipped, else 1.

    Exit codes for refused credentials and signals are the CLI's to choose.
    """
    ok = all(result.get("status") in _OK_STATUSES for result in report["results"])

    return 0 if ok else 1


def outcome_of(result: Mapping[str, Any], shift_s: float = 0.0) -> Outcome:
    """
    Rebuild an outcome from a report's record; ``shift_s`` moves attempt offsets.
    """
    history = tuple(
        Attempt(
            offset_s=attempt["offset_s"] + shift_s,
            duration_ms=attempt["duration_ms"],
            http_status=attempt.get("http_status"),
            error_code=attempt.get("error_code"),
            request_id=attempt.get("request_id"),
            ambiguous=bool(attempt.get("ambiguous")),
        )
        for attempt in result.get("history", ())
    )

    return Outcome(
        project_id=result["project_id"],
        dataset_id=result["dataset_id"],
        status=result["status"],
        reason=result.get("reason"),
        already_running=bool(result.get("already_running")),
        http_status=result.get("http_status"),
        error_code=result.get("error_code"),
        error_msg=result.get("error_msg"),
        request_id=result.get("request_id"),
        started_at=_epoch(result.get("started_at")),
        finished_at=_epoch(result.get("finished_at")),
        history=history,
    )


def merge(documents: Sequence[Mapping[str, Any]], tool_version: str) -> dict[str, Any]:
    """
    Join reports of disjoint shards of one config into one, summary recomputed.

    Attempt offsets are moved to count from the earliest start, so the merged
    achieved rate spans the whole set of shards.

    Raises:
        ReportError: the reports are of different configs, or a target is in two.
    """
    first = documents[0]
    started = min(_epoch_of(d["started_at"]) for d in documents)
    finished = max(_epoch_of(d["finished_at"]) for d in documents)
    seen: set[tuple[str, str]] = set()
    outcomes: list[Outcome] = []
    for document in documents:
        if document["config"]["sha256"] != first["config"]["sha256"]:
            raise ReportError(
                "cannot merge reports of different configs: sha256 "
                f"{first['config']['sha256'][:12]} and "
                f"{document['config']['sha256'][:12]}"
            )
        shift_s = _epoch_of(document["started_at"]) - started
        for result in document["results"]:
            key = (result["project_id"], result["dataset_id"])
            if key in seen:
                raise ReportError(
                    f"target {key[0]}/{key[1]} is in more than one report; "
                    "shards must not overlap"
                )
            seen.add(key)
            outcomes.append(outcome_of(result, shift_s))

    stop_reasons = [d["stop_reason"] for d in documents if d.get("stop_reason")]
    facts = RunFacts(
        tool_version=tool_version,
        config_path=first["config"]["path"],
        config_sha256=first["config"]["sha256"],
        endpoint=first["config"]["endpoint"],
        rate_limit_per_s=sum(d["config"]["rate_limit"] for d in documents),
        concurrency=sum(d["config"]["concurrency"] for d in documents),
        started_at=started,
        finished_at=finished,
        stop_reason=stop_reasons[0] if stop_reasons else None,
    )
    return build(outcomes, facts)


def _epoch_of(iso: str) -> float:
    return datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()


def _epoch(iso: str | None) -> float | None:
    if iso is None:
        return None
    return datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()


# Building ---------------------------------------------------------------------


def _result(outcome: Outcome) -> dict[str, Any]:
    started_at, finished_at = outcome.started_at, outcome.finished_at
    started_iso = None if started_at is None else _iso(started_at)
    finished_iso = None if finished_at is None else _iso(finished_at)
    duration_ms = None
    if started_at is not None and finished_at is not None:
        duration_ms = round(max(finished_at - started_at, 0.0) * 1000, 1)
    error_msg = outcome.error_msg
    if error_msg is not None:
        error_msg = _text(error_msg)[:ERROR_MSG_MAX_CHARS]

    return {
        "project_id": _text(outcome.project_id),
        "dataset_id": _text(outcome.dataset_id) or None,
        "dataset_name": _optional_text(outcome.dataset_name),
        "status": outcome.status,
        "reason": _optional_text(outcome.reason),
        "already_running": bool(outcome.already_running),
        "attempts": outcome.attempts,
        "http_status": _optional_int(outcome.http_status),
        "error_code": _optional_text(outcome.error_code),
        "error_msg": error_msg,
        "request_id": _optional_text(outcome.request_id),
        "started_at": started_iso,
        "finished_at": finished_iso,
        "duration_ms": duration_ms,
        "history": [_attempt(attempt) for attempt in outcome.history],
        "sync": None if outcome.sync is None else _sync(outcome.sync),
    }


def _sync(sync: SyncReport) -> dict[str, Any]:
    error_msg = sync.error_msg
    if error_msg is not None:
        error_msg = _text(error_msg)[:ERROR_MSG_MAX_CHARS]
    duration_s = sync.duration_s
    if duration_s is not None and not math.isfinite(duration_s):
        duration_s = None

    return {
        "state": _text(sync.state) or "UNKNOWN",
        "task_id": _optional_text(sync.task_id),
        "add_sample_count": _optional_int(sync.add_sample_count),
        "deleted_sample_count": _optional_int(sync.deleted_sample_count),
        "total_sample_count": _optional_int(sync.total_sample_count),
        "duration_s": duration_s,
        "error_code": _optional_text(sync.error_code),
        "error_msg": error_msg,
        "polls": int(sync.polls),
    }


def _attempt(attempt: Attempt) -> dict[str, Any]:
    offset_s, duration_ms = attempt.offset_s, attempt.duration_ms
    if not (math.isfinite(offset_s) and math.isfinite(duration_ms)):
        raise ValueError(
            "attempt times must be finite numbers, got "
            f"offset_s={offset_s!r} duration_ms={duration_ms!r}"
        )

    return {
        "offset_s": round(offset_s, 3),
        "duration_ms": round(duration_ms, 1),
        "http_status": _optional_int(attempt.http_status),
        "error_code": _optional_text(attempt.error_code),
        "request_id": _optional_text(attempt.request_id),
        "ambiguous": bool(attempt.ambiguous),
    }


def _summary(outcomes: Sequence[Outcome]) -> dict[str, Any]:
    statuses: Counter[str] = Counter()
    reasons: Counter[str] = Counter()
    errors: Counter[str] = Counter()
    offsets: list[float] = []
    latencies_ms: list[float] = []
    sync_states: Counter[str] = Counter()
    retries = throttled = added = deleted = polls = 0
    for outcome in outcomes:
        statuses[outcome.status] += 1
        if outcome.sync is not None:
            sync_states[_text(outcome.sync.state) or "UNKNOWN"] += 1
            added += outcome.sync.add_sample_count or 0
            deleted += outcome.sync.deleted_sample_count or 0
            polls += outcome.sync.polls
        if outcome.reason is not None:
            reasons[_text(outcome.reason)] += 1
        retries += max(len(outcome.history) - 1, 0)
        for attempt in outcome.history:
            offsets.append(attempt.offset_s)
            if attempt.http_status is not None:
                latencies_ms.append(attempt.duration_ms)
            if attempt.http_status == HTTPStatus.TOO_MANY_REQUESTS:
                throttled += 1
            key = _error_key(attempt)
            if key is not None:
                errors[key] += 1

    return {
        "total": len(outcomes),
        "succeeded": statuses["succeeded"],
        "failed": statuses["failed"],
        "cancelled": statuses["cancelled"],
        "skipped": statuses["skipped"],
        "attempts": len(offsets),
        "retries": retries,
        "throttled": throttled,
        "achieved_rate": _achieved_rate(offsets),
        "latency_ms": _latency(latencies_ms),
        "errors_by_code": _most_common_first(errors),
        "reasons": _most_common_first(reasons),
        "sync_states": _most_common_first(sync_states),
        "samples_added": added,
        "samples_deleted": deleted,
        "status_polls": polls,
    }


def _error_key(attempt: Attempt) -> str | None:
    """
    Return the key under which ``errors_by_code`` counts this attempt, if any.
    """
    if attempt.error_code:
        return _text(attempt.error_code)
    if attempt.http_status is None:
        return "TRANSPORT"
    if not 200 <= attempt.http_status < 300:
        return f"HTTP.{int(attempt.http_status)}"
    return None


def _achieved_rate(offsets: list[float]) -> float:
    """
    Return requests per second between the first and the last release.
    """
    if len(offsets) < 2:
        return 0.0
    span_s = max(offsets) - min(offsets)
    if not span_s > 0:
        return 0.0

    return round((len(offsets) - 1) / span_s, 3)


def _latency(latencies_ms: list[float]) -> dict[str, float]:
    """
    Return nearest-rank percentiles and the maximum, 0.0 for an empty list.
    """
    if not latencies_ms:
        return {f"p{p}": 0.0 for p in _PERCENTILES} | {"max": 0.0}
    ordered = sorted(latencies_ms)
    count = len(ordered)
    # Nearest rank: the smallest value with at least p% of the list at or below
    # it, i.e. 1-based rank ceil(p * n / 100); integer maths avoids float error.
    stats = {f"p{p}": ordered[max(-(-p * count // 100), 1) - 1] for p in _PERCENTILES}
    stats["max"] = ordered[-1]

    return {name: round(value, 1) for name, value in stats.items()}


def _most_common_first(counts: Counter[str]) -> dict[str, int]:
    return dict(sorted(counts.items(), key=lambda item: (-item[1], item[0])))


def _iso(epoch_s: float) -> str:
    """
    Format Unix epoch seconds as ISO-8601 UTC with milliseconds and a ``Z``.
    """
    micros = round(_finite(epoch_s, "timestamp") * 1_000_000)
    seconds, fraction_us = divmod(micros, 1_000_000)

    return f"{_iso_second(seconds)}.{fraction_us // 1000:03d}Z"


@functools.lru_cache(maxsize=4096)
def _iso_second(epoch_s: int) -> str:
    # Results of one run share few distinct seconds: caching them cut 200,000
    # timestamps from 0.87 s through datetime alone to 0.28 s.
    moment = datetime.fromtimestamp(epoch_s, tz=UTC)
    return moment.replace(tzinfo=None).isoformat(timespec="seconds")


def _finite(value: float, name: str) -> float:
    if not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number, got {value!r}")
    return value


def _text(value: str) -> str:
    """
    Return ``value`` unchanged if it encodes as UTF-8, else with escapes shown.
    """
    if value.isascii():
        return value
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        # Lone surrogates come from bytes that did not decode (file names,
        # header values); showing them as \udcXX keeps the text readable.
        return value.encode("utf-8", "backslashreplace").decode("utf-8")
    return value


def _optional_text(value: str | None) -> str | None:
    return None if value is None else _text(value)


def _optional_int(value: int | None) -> int | None:
    # A bool is an int to Python but not to JSON; int() makes it a number.
    return None if value is None else int(value)


# Writing and reading ----------------------------------------------------------

_encode = json.JSONEncoder(ensure_ascii=False, allow_nan=False).encode


def _write_temp(fd: int, report: Mapping[str, Any]) -> None:
    """
    Write the report as JSON to the open temp file and sync it to disk.
    """
    with os.fdopen(fd, "w", encoding="utf-8", newline="\n") as file:
        _dump(report, file)
        file.flush()
        if hasattr(os, "fchmod"):
            # mkstemp creates 0600, which would hide the report from the
            # monitoring or the colleague who reads it.
            os.fchmod(fd, 0o644)
        os.fsync(fd)


def _dump(report: Mapping[str, Any], file: TextIO) -> None:
    """
    Write one top-level key per line and one result per line.

    Each line goes through the C encoder in one call; json.dump with an indent
    takes the pure-Python encoder and was three times slower on 100,000 results.
    """
    file.write("{")
    separator = "\n"
    for key, value in report.items():
        if not isinstance(key, str):
            raise TypeError(f"report keys must be strings, got {key!r}")
        file.write(f"{separator}{_encode(key)}: ")
        separator = ",\n"
        if key == "results" and isinstance(value, list | tuple | Results) and value:
            file.write("[\n")
            file.writelines(_joined_lines(value))
            file.write("\n]")
        else:
            file.write(_encode(value))
    file.write("\n}\n")


def _joined_lines(items: Sequence[Any]) -> Iterator[str]:
    """
    Yield the items encoded one per line, a few thousand to each string.
    """
    batch = 2000
    for start in range(0, len(items), batch):
        chunk = ",\n".join(map(_encode, items[start : start + batch]))
        yield chunk if start == 0 else ",\n" + chunk


def _fsync_folder(folder: Path) -> None:
    """
    Flush the folder entry of the renamed file, where the platform allows it.
    """
    # Without this a crash right after os.replace may lose the rename itself.
    # Windows cannot open a folder this way; that loss is accepted there.
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    with contextlib.suppress(OSError):
        os.fsync(fd)
    os.close(fd)


def _os_reason(exc: OSError) -> str:
    """
    Return the OS's reason, with the file it concerns when that is known.
    """
    reason = exc.strerror or str(exc)
    if exc.filename is not None:
        reason = f"{reason}: {str(exc.filename)!r}"
    return reason


def _reject_constant(name: str) -> None:
    raise ValueError(f"{name} is not a JSON number")


@functools.cache
def _schema_text() -> str:
    resource = importlib.resources.files("orchestrator").joinpath(SCHEMA_RESOURCE)
    return resource.read_text(encoding="utf-8")
