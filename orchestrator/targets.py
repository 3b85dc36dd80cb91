"""
The work list: the config's targets in order, each pair once; what a resumed
run skips; and the share of the list one shard runs.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Mapping, Sequence
from collections.abc import Set as AbstractSet
from dataclasses import dataclass

import structlog

from orchestrator.config import Settings, Target
from orchestrator.errors import ConfigError
from orchestrator.journal import SKIP_REASON
from orchestrator.report import Outcome

# Kubernetes sets it in each pod of an Indexed Job: 0, 1, ... completions-1.
JOB_INDEX_ENV = "JOB_COMPLETION_INDEX"

log = structlog.get_logger(__name__)


def plan(settings: Settings) -> tuple[Target, ...]:
    """
    Return the targets to sync, in file order, with repeated pairs merged.

    A repeat is logged as a warning naming both lines; the first one stays.
    """
    first_line: dict[Target, int | None] = {}
    for target in settings.targets:
        if target in first_line:
            log.warning(
                "config.duplicate_target_merged",
                project_id=target.project_id,
                dataset_id=target.dataset_id,
                path=str(settings.path),
                line=target.line,
                first_line=first_line[target],
            )
            continue
        first_line[target] = target.line

    return tuple(first_line)


def skip_done(
    work: Sequence[Target], done: AbstractSet[tuple[str, str]]
) -> tuple[tuple[Target, ...], tuple[Outcome, ...]]:
    """
    Split the plan into targets still to run and outcomes for those already done.

    ``done`` holds (project_id, dataset_id) pairs that succeeded before; matching
    by pair, not position, lets the config be reordered or extended in between.
    """
    now = time.time()
    remaining: list[Target] = []
    skipped: list[Outcome] = []
    for target in work:
        if (target.project_id, target.dataset_id) in done:
            skipped.append(
                Outcome(
                    project_id=target.project_id,
                    dataset_id=target.dataset_id,
                    status="skipped",
                    reason=SKIP_REASON,
                    started_at=now,
                    finished_at=now,
                )
            )
        else:
            remaining.append(target)

    return tuple(remaining), tuple(skipped)


@dataclass(frozen=True, slots=True)
class Shard:
    """
    One of ``count`` disjoint shares of the targets; ``index`` counts from 0.
    """

    index: int
    count: int

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"


def parse_shard(text: str, environ: Mapping[str, str]) -> Shard:
    """
    Read ``I/N`` or ``auto/N`` (index from ``JOB_COMPLETION_INDEX``).

    Raises:
        ConfigError: the text or the environment variable is not a valid shard.
    """
    index_text, _, count_text = text.partition("/")
    rule = "--shard must be I/N or auto/N with 0 <= I < N, such as 0/4"
    if index_text == "auto":
        if JOB_INDEX_ENV not in environ:
            raise ConfigError(
                f"--shard {text!r}: auto needs {JOB_INDEX_ENV} (set by a "
                "Kubernetes Indexed Job); give the index instead, such as 0/4"
            )
        index_text = environ[JOB_INDEX_ENV]
    if not (index_text.isdigit() and count_text.isdigit()):
        raise ConfigError(f"{rule}; got {text!r} (index {index_text!r})")
    index, count = int(index_text), int(count_text)
    if not 0 <= index < count:
        raise ConfigError(f"{rule}; got {text!r} (index {index})")

    return Shard(index, count)


def shard_of(target: Target, count: int) -> int:
    """
    Return which of ``count`` shards owns ``target``, stable across runs and hosts.

    Jump consistent hashing (Lamping and Veach, 2014) over a SHA-256 of the
    pair: a target's shard depends on nothing else in the list, so adding a
    target moves no other one, and going from N to N+1 shards moves only
    about 1/(N+1) of them. Python's ``hash`` is salted per process, so no.
    """
    digest = hashlib.sha256(f"{target.project_id}/{target.dataset_id}".encode())
    key = int.from_bytes(digest.digest()[:8], "big")
    bucket, candidate = -1, 0
    while candidate < count:
        bucket = candidate
        key = (key * 2862933555777941757 + 1) & 0xFFFFFFFFFFFFFFFF
        candidate = int((bucket + 1) * ((1 << 31) / ((key >> 33) + 1)))

    return bucket


def select_shard(work: Sequence[Target], shard: Shard) -> tuple[Target, ...]:
    """
    Return the targets of ``shard``, in plan order.
    """
    return tuple(t for t in work if shard_of(t, shard.count) == shard.index)
