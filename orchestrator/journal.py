"""
The run's journal: one JSON line per finished target, written as it happens.

A report is written once, at the end; a process killed with SIGKILL (the OOM
killer, a node drained without grace) never gets there. The journal is what
survives: a header line with the config's hash, then one line per target that
finished, its outcome as it stands (the report's fields, times in Unix epoch
seconds). ``--resume`` reads it back, keyed by project and dataset.

Each line goes to the OS with one unbuffered ``write`` as the target finishes,
so a killed process loses at most the line it was writing; :func:`read` ignores a
torn last line. Lines are not fsynced: that would protect against a power loss
at the cost of a disk sync per target, and a power loss is the one crash where
repeating a few already-accepted syncs (which is safe) is the cheaper answer.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import structlog

from orchestrator import report
from orchestrator.errors import ReportError
from orchestrator.report import Outcome

# 1: each line was the report's record. 2: the outcome's own fields, dumped
# in C while requests are being sent (2.4 us a target instead of 5.3).
JOURNAL_VERSION = 2
READABLE_VERSIONS = frozenset({1, 2})
SUFFIX = ".journal.jsonl"
# The reason a resumed run gives the targets it skips.
SKIP_REASON = "already_succeeded"

log = structlog.get_logger(__name__)


def _line(record: object) -> bytes:
    # orjson encodes a dict or a slotted dataclass in C; it refuses text with
    # lone surrogates (bytes that did not decode), which _escaped handles.
    try:
        return orjson.dumps(record, option=orjson.OPT_APPEND_NEWLINE)
    except orjson.JSONEncodeError:
        if dataclasses.is_dataclass(record) and not isinstance(record, type):
            record = dataclasses.asdict(record)
        return orjson.dumps(_escaped(record), option=orjson.OPT_APPEND_NEWLINE)


def _escaped(value: object) -> object:
    """
    Return ``value`` with every text in it made UTF-8, undecodable bytes as escapes.
    """
    if isinstance(value, str):
        return value.encode("utf-8", "backslashreplace").decode("utf-8")
    if isinstance(value, Mapping):
        return {key: _escaped(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_escaped(item) for item in value]
    return value


def path_for(report_path: Path) -> Path:
    """
    Return the journal's path beside the report: ``x.json`` -> ``x.journal.jsonl``.
    """
    return report_path.with_name(report_path.name.removesuffix(".json") + SUFFIX)


@dataclass(frozen=True, slots=True)
class Contents:
    """
    What a journal or a report says was done, keyed by project and dataset.
    """

    config_sha256: str | None
    results: tuple[dict[str, Any], ...]

    def succeeded(self) -> frozenset[tuple[str, str]]:
        """
        Return the pairs that succeeded, in this run or in one it resumed.
        """
        return frozenset(
            (row["project_id"], row["dataset_id"])
            for row in self.results
            if row.get("status") == "succeeded"
            or (row.get("status") == "skipped" and row.get("reason") == SKIP_REASON)
        )


class Journal:
    """
    Append each finished target's record to the journal file (a RunObserver).
    """

    def __init__(self, path: Path, *, config_path: Path, config_sha256: str) -> None:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            # Unbuffered: each line is one write(2), with no flush to call.
            self._file: io.FileIO = path.open("wb", buffering=0)
        except OSError as exc:
            raise ReportError(
                f"cannot write journal {str(path)!r}: {exc.strerror}"
            ) from exc
        self.path = path
        header = {
            "journal_version": JOURNAL_VERSION,
            "config_path": str(config_path),
            "config_sha256": config_sha256,
            "pid": os.getpid(),
        }
        self._append(header)

    def on_outcome(self, outcome: Outcome) -> None:
        """
        Write the target's outcome as one line and hand it to the OS at once.
        """
        self._append(outcome)

    def close(self) -> None:
        """
        Close the file; later outcomes are no longer recorded.
        """
        with contextlib.suppress(OSError):
            self._file.close()

    def _append(self, record: object) -> None:
        if self._file.closed:
            return
        try:
            line = _line(record)
            written = self._file.write(line)
            while written and written < len(line):
                line = line[written:]  # a short write: a signal, a nearly full disk
                written = self._file.write(line)
        except OSError as exc:
            # An observer must not raise: a full disk costs the journal (and
            # so the resume), not the run and its report.
            log.exception("journal.write_failed", path=str(self.path), error=str(exc))
            with contextlib.suppress(OSError):
                self._file.close()


def read(path: Path) -> Contents:
    """
    Read a journal or a report, whichever ``path`` holds.

    A journal's last line may be torn by a kill; it is ignored. Any other line
    that does not parse makes the file unusable.

    Raises:
        ReportError: the file cannot be read or is neither a journal nor a report.
    """
    try:
        with path.open(encoding="utf-8") as file:
            first = file.readline()
    except OSError as exc:
        raise ReportError(f"cannot read {str(path)!r}: {exc.strerror}") from exc
    if not first.lstrip().startswith('{"journal_version"'):
        document = report.load(path)
        return Contents(document["config"]["sha256"], tuple(document["results"]))

    return _read_journal(path)


def _read_journal(path: Path) -> Contents:
    lines = path.read_text(encoding="utf-8", errors="replace").split("\n")
    records: list[dict[str, Any]] = []
    for number, text in enumerate(lines, start=1):
        if not text.strip():
            continue
        try:
            records.append(json.loads(text))
        except ValueError as exc:
            if number >= len(lines) - 1:
                break  # the line a kill cut short
            raise ReportError(
                f"{path}:{number}: journal line is not JSON ({exc}); "
                "only the last line may be torn"
            ) from exc
    header, rows = records[0], records[1:]
    version = header.get("journal_version")
    if version not in READABLE_VERSIONS:
        raise ReportError(
            f"{path}: journal_version {version!r} is not one this modelarts-sync "
            f"reads ({', '.join(map(str, sorted(READABLE_VERSIONS)))}); "
            "resume with the version that wrote it"
        )

    return Contents(header.get("config_sha256"), tuple(rows))
