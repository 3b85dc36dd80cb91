"""
One run per config at a time: an exclusive ``flock`` on a lock file.

The lock file is keyed by the config's resolved path (and the shard, if any),
so two schedules of the same config never overlap while different configs run
side by side. The holder writes its pid and start time into the file for the
message a refused run prints. The kernel drops a ``flock`` when its holder
dies, ``kill -9`` included, so a crashed run never leaves a stale lock; the
file itself stays (deleting it would let a waiting run lock an unlinked inode
while a third one creates a fresh file).

Locks are per machine: ``flock`` on NFS is not to be trusted, and runs on
different hosts should be kept apart by the scheduler (a CronJob's
``concurrencyPolicy: Forbid``) or by sharding.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import tempfile
import time
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime
from pathlib import Path

import structlog

from orchestrator.errors import LockHeldError, ReportError

LOCK_DIR_ENV = "MODELARTS_SYNC_LOCK_DIR"
POLL_INTERVAL_S = 0.1

log = structlog.get_logger(__name__)


def default_dir(environ: Mapping[str, str]) -> Path:
    """
    Return where lock files go: $MODELARTS_SYNC_LOCK_DIR, $XDG_RUNTIME_DIR, or /tmp.
    """
    chosen = environ.get(LOCK_DIR_ENV) or environ.get("XDG_RUNTIME_DIR")

    return Path(chosen or tempfile.gettempdir())


def path_for(config_path: Path, folder: Path, shard: str | None = None) -> Path:
    """
    Return the lock file for one config (and shard) in ``folder``.
    """
    key = str(config_path.resolve()) + (f"#{shard}" if shard else "")
    digest = hashlib.sha256(key.encode()).hexdigest()[:16]

    return folder / f"modelarts-sync-{config_path.stem}-{digest}.lock"


@contextlib.contextmanager
def held(path: Path, *, wait_s: float = 0.0) -> Iterator[None]:
    """
    Hold the exclusive lock at ``path`` for the ``with`` block.

    Waits up to ``wait_s`` seconds for another holder to let go.

    Raises:
        LockHeldError: another process still holds the lock after ``wait_s``.
        ReportError: the lock file cannot be created.
    """
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as exc:
        raise ReportError(
            f"cannot open lock file {str(path)!r}: {exc.strerror}"
        ) from exc
    try:
        _acquire(fd, path, wait_s)
        _write_holder(fd)
        yield
    finally:
        os.close(fd)  # closing the last descriptor releases the flock


def _acquire(fd: int, path: Path, wait_s: float) -> None:
    """
    Take the flock, polling until ``wait_s`` has passed.
    """
    give_up_at = time.monotonic() + wait_s
    waiting = False
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return
        except BlockingIOError:
            holder = _holder(fd)
            if time.monotonic() >= give_up_at:
                raise LockHeldError(
                    f"another run holds the lock {str(path)!r} ({holder}); "
                    "wait for it to finish or pass --wait-lock SECONDS"
                ) from None
            if not waiting:
                log.warning(
                    "lock.waiting", path=str(path), holder=holder, wait_s=wait_s
                )
                waiting = True
            time.sleep(POLL_INTERVAL_S)


def _write_holder(fd: int) -> None:
    started = datetime.now(UTC).isoformat(timespec="seconds")
    record = json.dumps({"pid": os.getpid(), "started_at": started}) + "\n"
    os.ftruncate(fd, 0)
    os.pwrite(fd, record.encode(), 0)


def _holder(fd: int) -> str:
    """
    Describe the holder from what it wrote: ``pid 123, started 2026-...``.
    """
    try:
        record = json.loads(os.pread(fd, 4096, 0) or b"{}")
    except (OSError, ValueError):
        record = {}
    if not isinstance(record, dict) or "pid" not in record:
        return "holder unknown"

    return f"pid {record['pid']}, started {record.get('started_at')}"
