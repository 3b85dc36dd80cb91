"""
The end-of-run summary for people: counts by status, top errors, failed targets.

The same tables serve ``run`` on a terminal and ``report show`` for a saved
report, since both read a report document. Rich renders plain text when the
output is not a terminal, so ``report show`` can be piped to a file or grep.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from rich.console import Console
from rich.table import Table

MAX_FAILED_SHOWN = 20
MAX_ERRORS_SHOWN = 5
_STATUSES = ("succeeded", "failed", "cancelled", "skipped")
_NOT_OK = frozenset({"failed", "cancelled"})


def line(document: Mapping[str, Any]) -> str:
    """
    Return the one-line summary: counts, duration, requests, retries, throttling.
    """
    summary = document["summary"]
    counts = ", ".join(
        f"{summary[status]} {status}" for status in _STATUSES if summary[status]
    )

    return (
        f"{summary['total']} targets: {counts or 'nothing to do'} "
        f"in {document['duration_s']:.1f} s "
        f"({summary['attempts']} requests, {summary['retries']} retries, "
        f"{summary['throttled']} throttled)"
    )


def render(document: Mapping[str, Any], console: Console) -> None:
    """
    Print the status counts, the top error codes and up to 20 failed targets.
    """
    summary = document["summary"]
    console.print(_counts(summary))
    errors = list(summary["errors_by_code"].items())[:MAX_ERRORS_SHOWN]
    if errors:
        console.print(_errors(errors))
    failed = [row for row in document["results"] if row.get("status") in _NOT_OK]
    if failed:
        console.print(_failed(failed))


def _counts(summary: Mapping[str, Any]) -> Table:
    table = Table(title="targets by status", title_justify="left")
    table.add_column("status")
    table.add_column("count", justify="right")
    styles = {"succeeded": "green", "failed": "red", "cancelled": "yellow"}
    for status in _STATUSES:
        table.add_row(status, str(summary[status]), style=styles.get(status))
    table.add_row("total", str(summary["total"]), style="bold")

    return table


def _errors(errors: list[tuple[str, int]]) -> Table:
    table = Table(title="top error codes (attempts)", title_justify="left")
    table.add_column("error code")
    table.add_column("attempts", justify="right")
    for code, count in errors:
        table.add_row(code, str(count))

    return table


def _failed(failed: list[Mapping[str, Any]]) -> Table:
    shown = failed[:MAX_FAILED_SHOWN]
    more = len(failed) - len(shown)
    title = "targets that did not succeed"
    if more:
        title += f" (first {len(shown)}; {more} more in the report)"
    table = Table(title=title, title_justify="left")
    for column in ("project_id", "dataset_id", "status", "reason", "http", "error"):
        # Ids are copied into configs and consoles: wrap them, never cut them.
        table.add_column(column, overflow="fold")
    for row in shown:
        table.add_row(
            row["project_id"],
            row["dataset_id"],
            row["status"],
            row.get("reason") or "",
            "" if row.get("http_status") is None else str(row["http_status"]),
            row.get("error_code") or "",
        )

    return table
