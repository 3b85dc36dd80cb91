"""
The run's numbers as a Prometheus text file, for node_exporter's textfile collector.

Written once, at the end, atomically (prometheus_client writes a temp file and
renames it), so the collector never reads half a file. The values describe the
last run; ``modelarts_sync_last_success_timestamp_seconds`` is carried over
from the previous file when this run did not succeed, so an alert such as
``time() - modelarts_sync_last_success_timestamp_seconds > 26 * 3600`` fires
when the nightly run has not succeeded for a day, whatever happened since.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from pathlib import Path
from typing import Any

import structlog
from prometheus_client import CollectorRegistry, Gauge, write_to_textfile
from prometheus_client.parser import text_string_to_metric_families

from orchestrator.errors import ReportError

PREFIX = "modelarts_sync"
LAST_SUCCESS = f"{PREFIX}_last_success_timestamp_seconds"
_STATUSES = ("succeeded", "failed", "cancelled", "skipped")

log = structlog.get_logger(__name__)


def write(document: Mapping[str, Any], path: Path, *, exit_code: int) -> Path:
    """
    Write the report's numbers to ``path`` in Prometheus text format.

    Raises:
        ReportError: the file cannot be written.
    """
    registry = CollectorRegistry()
    summary = document["summary"]
    finished_s = _epoch(document["finished_at"])

    targets = Gauge(
        f"{PREFIX}_targets",
        "Targets of the last run by final status.",
        ["status"],
        registry=registry,
    )
    for status in _STATUSES:
        targets.labels(status=status).set(summary[status])
    _gauge(registry, "attempts", "Requests sent by the last run.", summary["attempts"])
    _gauge(
        registry,
        "throttled_responses",
        "429 answers the last run received.",
        summary["throttled"],
    )
    _gauge(
        registry,
        "duration_seconds",
        "Wall-clock duration of the last run.",
        document["duration_s"],
    )
    _gauge(registry, "exit_code", "Exit code of the last run.", exit_code)
    _gauge(
        registry,
        "last_run_timestamp_seconds",
        "When the last run finished, Unix time.",
        finished_s,
    )
    last_success_s = finished_s if exit_code == 0 else _previous_success(path)
    if last_success_s is not None:
        _gauge(
            registry,
            "last_success_timestamp_seconds",
            "When a run last finished with exit code 0, Unix time.",
            last_success_s,
        )

    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        write_to_textfile(str(path), registry)
    except OSError as exc:
        raise ReportError(
            f"cannot write metrics {str(path)!r}: {exc.strerror}"
        ) from exc
    return path


def _gauge(registry: CollectorRegistry, name: str, text: str, value: float) -> None:
    Gauge(f"{PREFIX}_{name}", text, registry=registry).set(value)


def _previous_success(path: Path) -> float | None:
    """
    Return the last-success time the previous file held, if it held one.
    """
    try:
        text = path.read_text(encoding="utf-8")
    except OSError:
        return None
    try:
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                if sample.name == LAST_SUCCESS:
                    return float(sample.value)
    except ValueError:
        log.warning("metrics.previous_unreadable", path=str(path))
    return None


def _epoch(iso: str) -> float:
    return datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()
