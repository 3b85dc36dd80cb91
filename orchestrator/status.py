"""
Read every target's current sync state without changing anything.

Behind ``modelarts-sync status``: the config's targets are resolved as a run
resolves them, then each one's sync status is read, paced by the config's rate
limit and concurrency and retried by its policy. Nothing is POSTed. Each
target becomes one row of plain values, in plan order, for the CLI to print.
"""

from __future__ import annotations

import asyncio
import dataclasses
import ssl
from typing import Any

from orchestrator import targets
from orchestrator.auth import Auth
from orchestrator.client import ModelArtsClient, SyncStatus, client_for
from orchestrator.config import Settings, Target
from orchestrator.errors import ApiError, AuthError, StoppedError
from orchestrator.report import Outcome
from orchestrator.runner import Runner

# The status fields a row shows; the request id is for logs, not for people.
_STATE_FIELDS = tuple(
    f.name for f in dataclasses.fields(SyncStatus) if f.name != "request_id"
)


async def read_states(
    settings: Settings, credential: Auth, ssl_context: ssl.SSLContext | None
) -> list[dict[str, Any]]:
    """
    Return one row per target: ids, name, the status fields, and what went wrong.

    ``error`` is the one-word reason a state could not be read (``not_found``,
    ``ambiguous_name``, ``auth_failed``, ...), ``skipped`` the reason a target
    needs no sync (``unsupported_type``); both are None for a state read.
    """
    async with client_for(settings, credential, ssl_context) as client:
        runner = Runner(settings, client)
        try:
            list_page = targets.paced_lister(runner, client)
            resolved = await targets.resolve(settings, list_page)
            read = await asyncio.gather(
                *(_state_of(runner, client, t) for t in resolved.targets)
            )
        finally:
            await credential.aclose()

    ran = iter(read)
    return [
        _decided_row(item) if isinstance(item, Outcome) else next(ran)
        for item in resolved.items
    ]


async def _state_of(
    runner: Runner, client: ModelArtsClient, target: Target
) -> dict[str, Any]:
    """
    Return one target's row, its status read through the runner's limits.
    """
    row = _ids(target.project_id, target.dataset_id, target.dataset_name)
    try:
        state: SyncStatus = await runner.call(
            lambda on_sent: client.sync_status(
                target.project_id, target.dataset_id, on_sent=on_sent
            )
        )
    except StoppedError as error:
        return row | _unread(error.reason, str(error))
    except ApiError as error:
        reason = "auth_failed" if isinstance(error, AuthError) else error.reason
        return row | _unread(reason, error.error_msg or str(error))

    fields = {name: getattr(state, name) for name in _STATE_FIELDS}
    return row | fields | {"error": None, "error_detail": None, "skipped": None}


def _decided_row(outcome: Outcome) -> dict[str, Any]:
    """
    Return the row of a target discovery settled without a status to read.
    """
    row = _ids(outcome.project_id, outcome.dataset_id, outcome.dataset_name)
    if outcome.status == "skipped":
        return row | _unread(None, outcome.error_msg) | {"skipped": outcome.reason}

    return row | _unread(outcome.reason, outcome.error_msg)


def _ids(project_id: str, dataset_id: str, name: str | None) -> dict[str, Any]:
    return {
        "project_id": project_id,
        "dataset_id": dataset_id or None,
        "dataset_name": name,
    }


def _unread(reason: str | None, detail: str | None) -> dict[str, Any]:
    return dict.fromkeys(_STATE_FIELDS) | {
        "error": reason,
        "error_detail": detail,
        "skipped": None,
    }
