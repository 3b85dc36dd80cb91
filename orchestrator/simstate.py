"""
The simulated ModelArts itself: its datasets, their sync tasks and its rate window.

The simulator's HTTP layer (`orchestrator.simulator`) routes a request, checks its
credential and plays faults; what is left is answered here, from state that lasts
as long as the server:

- the catalogue: which datasets each project has (``Plan.datasets``; without one,
  every dataset exists), listed page by page and shown one at a time;
- one sync task per dataset, whose state follows from the clock::

      POST sync-data -> QUEUING (first tenth of Plan.sync_duration_s) -> RUNNING
                     -> COMPLETED, or FAILED for Plan.failed_syncs;
      Plan.stuck_syncs stay RUNNING; no task yet -> NOT_EXIST

- `Admission`, the server's own rate limit: a sliding one-second window.

Every answer is a `Reply`, a status and a JSON-ready payload; ``now`` is always the
request's arrival time on the simulator's clock, so state changes at arrival.
"""

from __future__ import annotations

import math
import time
import uuid
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from orchestrator.faultplan import Dataset, Plan

# Codes from the ModelArts error table; the messages are our own words.
DATASET_MISSING = ("ModelArts.6623", "The dataset does not exist")
TYPE_UNSUPPORTED = (
    "ModelArts.4383",
    "The operation is not supported for this dataset type",
)
_BAD_PARAMETER = "ModelArts.4101"
_SYNC_EXISTS = ("ModelArts.4355", "A synchronization task already exists")
_SYNC_FAILED = ("ModelArts.4360", "The synchronization task failed")

# Text datasets (types 100-199) cannot be synced, per the sync-data API reference.
_TEXT_TYPES = range(100, 200)
# A sync reports QUEUING for the first tenth of its duration, then RUNNING, so a
# client meets both in-progress states; the share itself is arbitrary.
_QUEUED_SHARE = 0.1


@dataclass(frozen=True, slots=True)
class Reply:
    """
    One answer of the dataset APIs: a status and the JSON-ready body to send.

    ``error_code`` repeats the body's code for the request's record.
    """

    status: int
    payload: Mapping[str, Any]
    error_code: str | None = None


@dataclass(frozen=True, slots=True)
class _SyncTask:
    """
    One accepted sync; its state follows from the clock, so nothing updates it.
    """

    task_id: str
    started_s: float
    create_time_ms: int
    fails: bool
    stuck: bool = False


def _ok(payload: Mapping[str, Any]) -> Reply:
    return Reply(200, payload)


def _error(status: int, error: tuple[str, str]) -> Reply:
    code, message = error
    return Reply(status, {"error_code": code, "error_msg": message}, code)


class DatasetService:
    """
    The datasets a plan describes and the sync tasks accepted for them.

    Each method answers one API call as it arrives at ``now``; a sync task, once
    accepted, lives as long as the object.
    """

    def __init__(self, plan: Plan) -> None:
        self.plan = plan
        self._catalogue = _index(plan.datasets)
        self._tasks: dict[tuple[str, str], _SyncTask] = {}

    def list_datasets(
        self, project_id: str, query: Mapping[str, str], now: float
    ) -> Reply:
        """
        Answer the list API: one page of the project's catalogue.
        """
        try:
            offset, limit = _paging(query)
        except ValueError as exc:
            return _error(400, (_BAD_PARAMETER, f"Invalid paging: {exc}"))
        datasets = list((self._catalogue or {}).get(project_id, {}).values())
        first = offset * limit if self.plan.list_offset_mode == "pages" else offset
        repeat = self.plan.list_repeat_page
        if repeat is not None and first // limit == repeat + 1:
            first -= limit  # a server bug on purpose: the page before, again
        page = datasets[first : first + limit]

        return _ok(
            {
                "total_number": len(datasets),
                "datasets": [
                    _dataset_json(d, self._status_of(project_id, d, now)) for d in page
                ],
            }
        )

    def show(self, project_id: str, dataset_id: str, now: float) -> Reply:
        """
        Answer the show API: one dataset, status 5 while a sync runs.
        """
        dataset = self._lookup(project_id, dataset_id)
        if dataset is None:
            return _error(404, DATASET_MISSING)

        return _ok(_dataset_json(dataset, self._status_of(project_id, dataset, now)))

    def sync(self, project_id: str, dataset_id: str, now: float) -> Reply:
        """
        Accept a sync task unless one is still running or the type cannot sync.
        """
        dataset = self._lookup(project_id, dataset_id)
        if dataset is None:
            return _error(404, DATASET_MISSING)
        if dataset.dataset_type in _TEXT_TYPES:
            return _error(501, TYPE_UNSUPPORTED)
        key = (project_id, dataset_id)
        task = self._tasks.get(key)
        if task is not None and self._state(task, now) in ("QUEUING", "RUNNING"):
            return _error(400, _SYNC_EXISTS)

        self._tasks[key] = _SyncTask(
            task_id=uuid.uuid4().hex[:20],
            started_s=now,
            create_time_ms=int(time.time() * 1000),
            fails=dataset_id in self.plan.failed_syncs,
            stuck=dataset_id in self.plan.stuck_syncs,
        )
        return _ok({})

    def sync_status(self, project_id: str, dataset_id: str, now: float) -> Reply:
        """
        Answer the sync status API: the dataset's latest task, or NOT_EXIST.
        """
        dataset = self._lookup(project_id, dataset_id)
        if dataset is None:
            return _error(404, DATASET_MISSING)
        task = self._tasks.get((project_id, dataset_id))
        if task is None:
            return _ok({"status": "NOT_EXIST", "dataset_id": dataset_id})
        state = self._state(task, now)
        elapsed_s = min(now - task.started_s, self.plan.sync_duration_s)
        payload: dict[str, Any] = {
            "status": state,
            "dataset_id": dataset_id,
            "task_id": task.task_id,
            "create_time": task.create_time_ms,
            "duration_time": round(elapsed_s * 1000),
            "add_sample_count": dataset.sample_count if state == "COMPLETED" else 0,
            "deleted_sample_count": 0,
            "total_sample_count": dataset.sample_count,
        }
        if state == "FAILED":
            payload["error_code"], payload["error_msg"] = _SYNC_FAILED

        return _ok(payload)

    def _lookup(self, project_id: str, dataset_id: str) -> Dataset | None:
        if self._catalogue is None:
            return Dataset(dataset_id)

        return self._catalogue.get(project_id, {}).get(dataset_id)

    def _state(self, task: _SyncTask, now: float) -> str:
        duration_s = self.plan.sync_duration_s
        elapsed_s = now - task.started_s
        if task.stuck:
            return "RUNNING"
        if elapsed_s >= duration_s:
            return "FAILED" if task.fails else "COMPLETED"

        return "QUEUING" if elapsed_s < duration_s * _QUEUED_SHARE else "RUNNING"

    def _status_of(self, project_id: str, dataset: Dataset, now: float) -> int:
        """
        Return the dataset's status code: 5 (synchronizing) while a sync runs.
        """
        task = self._tasks.get((project_id, dataset.dataset_id))
        if task is not None and self._state(task, now) in ("QUEUING", "RUNNING"):
            return 5

        return dataset.status


class Admission:
    """
    The server's own rate limit: at most ``floor(rate)`` admitted per second.

    The window slides and counts only admitted requests, so a refused one does
    not push later ones out.
    """

    def __init__(self, rate_per_s: float | None) -> None:
        self._window: deque[float] = deque()
        self._cap: int | None = None
        self.set_rate(rate_per_s)

    def set_rate(self, rate_per_s: float | None) -> None:
        """
        Change the limit from now on (None: no limit); the window is kept.
        """
        self._cap = None if rate_per_s is None else math.floor(rate_per_s)

    def admit(self, now: float) -> bool:
        """
        Admit a request if fewer than the limit were admitted in the last second.
        """
        if self._cap is None:
            return True
        window = self._window
        while window and window[0] <= now - 1.0:
            window.popleft()
        if len(window) >= self._cap:
            return False

        window.append(now)
        return True


def _paging(query: Mapping[str, str]) -> tuple[int, int]:
    """
    Return the list API's offset and limit; raise ValueError when out of range.
    """
    offset = int(query.get("offset", "0"))
    limit = int(query.get("limit", "10"))
    if offset < 0 or not 1 <= limit <= 100:
        raise ValueError(f"offset {offset} must be >= 0 and limit {limit} 1-100")

    return offset, limit


def _dataset_json(dataset: Dataset, status: int) -> dict[str, Any]:
    return {
        "dataset_id": dataset.dataset_id,
        "dataset_name": dataset.dataset_name or dataset.dataset_id,
        "dataset_type": dataset.dataset_type,
        "status": status,
        "data_sources": [
            {
                "data_type": 0,
                "data_path": dataset.data_path or f"/sim-bucket/{dataset.dataset_id}/",
            }
        ],
        "create_time": dataset.create_time,
        "update_time": dataset.update_time,
    }


def _index(
    datasets: Mapping[str, tuple[Dataset, ...]] | None,
) -> dict[str, dict[str, Dataset]] | None:
    if datasets is None:
        return None

    return {p: {d.dataset_id: d for d in items} for p, items in datasets.items()}
