"""
The work list: the config's targets in order, each pair once, names resolved;
what a resumed run skips; and the share of the list one shard runs.

A config entry names datasets by id, by exact name, by name globs or as
``datasets: all``. Ids need nothing from the server; the others are resolved
through the paginated list API before any POST (`resolve`), one listing per
project however many entries name it.

Paging: the docs call ``offset`` the "start page", and whether it counts pages
or records is unverified. The second request asks for ``offset=1``: if that
page is the first one shifted by one record, offset counts records, else pages.
Listing stops on a short or empty page, on a page that brings nothing new (a
server repeating itself), once ``total_number`` datasets are in hand, or after
`MAX_PAGES` pages; a listing that stopped short of ``total_number``, or at
the cap, is logged as incomplete and used as it is: a nightly run had better
sync what it found than nothing, and the warning says what is missing.
"""

from __future__ import annotations

import asyncio
import fnmatch
import hashlib
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from collections.abc import Set as AbstractSet
from dataclasses import dataclass
from typing import TYPE_CHECKING

import structlog

from orchestrator.client import DatasetInfo, DatasetPage, ModelArtsClient
from orchestrator.config import Selector, Settings, Target
from orchestrator.errors import ApiError, AuthError, ConfigError, StoppedError
from orchestrator.journal import SKIP_REASON
from orchestrator.report import Outcome

if TYPE_CHECKING:
    from orchestrator.runner import Runner

# Kubernetes sets it in each pod of an Indexed Job: 0, 1, ... completions-1.
JOB_INDEX_ENV = "JOB_COMPLETION_INDEX"

log = structlog.get_logger(__name__)

PAGE_SIZE = 100  # the list API's largest page
# 1,000 pages of 100 is far beyond any project seen; the cap only ends a
# listing that a misbehaving server would otherwise never end.
MAX_PAGES = 1000
# Text datasets (types 100-102 today) cannot be synced, per the sync-data API.
TEXT_TYPES = range(100, 200)
SYNCHRONIZING = 5  # the dataset status code for "synchronizing"

ListPage = Callable[[str, int, int], Awaitable[DatasetPage]]


@dataclass(frozen=True, slots=True)
class Listing:
    """
    A project's datasets in list order, and whether the listing got them all.
    """

    datasets: tuple[DatasetInfo, ...]
    complete: bool
    pages: int


@dataclass(frozen=True, slots=True)
class Resolved:
    """
    The work list in plan order: targets to sync and results already decided.

    A decided result is a config entry that needs no POST: a name no dataset
    has (or several have), a text dataset, a listing that failed.
    """

    items: tuple[Target | Outcome, ...]

    @property
    def targets(self) -> tuple[Target, ...]:
        """
        Return the targets to sync, in plan order.
        """
        return tuple(item for item in self.items if isinstance(item, Target))

    @property
    def decided(self) -> tuple[Outcome, ...]:
        """
        Return the results decided without a POST, in plan order.
        """
        return tuple(item for item in self.items if isinstance(item, Outcome))

    def merge(self, outcomes: Sequence[Outcome]) -> tuple[Outcome, ...]:
        """
        Return every result in plan order, given the outcomes of `targets`.
        """
        ran = iter(outcomes)
        merged = [
            item if isinstance(item, Outcome) else next(ran) for item in self.items
        ]

        return tuple(merged)


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


def narrow(
    resolved: Resolved, *, shard: Shard | None, done: AbstractSet[tuple[str, str]]
) -> Resolved:
    """
    Return the work cut to one shard, with targets that succeeded before skipped.

    Applied after discovery, so a dataset found by name is sharded and resumed
    like one listed by id. A result decided without a POST (a name nothing
    matches) belongs to the shard its project and name hash to, so merged
    shard reports hold it exactly once.
    """
    items: list[Target | Outcome] = []
    for item in resolved.items:
        if shard is not None and shard_of(_shard_key(item), shard.count) != shard.index:
            continue
        if isinstance(item, Target):
            remaining, skipped = skip_done((item,), done)
            items.extend(remaining or skipped)
        else:
            items.append(item)

    return Resolved(tuple(items))


def _shard_key(item: Target | Outcome) -> Target:
    if isinstance(item, Target):
        return item
    name = item.dataset_id or getattr(item, "dataset_name", None) or ""

    return Target(item.project_id, name)


def select_shard(work: Sequence[Target], shard: Shard) -> tuple[Target, ...]:
    """
    Return the targets of ``shard``, in plan order.
    """
    return tuple(t for t in work if shard_of(t, shard.count) == shard.index)


async def resolve(settings: Settings, list_page: ListPage) -> Resolved:
    """
    Return the work list with every selector resolved through ``list_page``.

    ``list_page(project_id, offset, limit)`` makes one list call; the caller
    paces and retries it. A listing that fails for good fails the entries that
    needed it, each as its own result; nothing here raises for one entry.
    """
    explicit = plan(settings)
    if not settings.selectors:
        return Resolved(explicit)

    projects = sorted({selector.project_id for selector in settings.selectors})
    listings = await asyncio.gather(
        *(_list_or_error(project_id, list_page) for project_id in projects)
    )
    by_project = dict(zip(projects, listings, strict=True))

    items: list[Target | Outcome] = []
    pending = sorted(settings.selectors, key=lambda selector: selector.after)
    for index in range(len(explicit) + 1):
        while pending and pending[0].after <= index:
            selector = pending.pop(0)
            items.extend(_select(selector, by_project[selector.project_id]))
        if index < len(explicit):
            items.append(explicit[index])

    return Resolved(tuple(_unique(items)))


def paced_lister(runner: Runner, client: ModelArtsClient) -> ListPage:
    """
    Return a list call paced, capped and retried as the run's requests are.
    """

    async def list_page(project_id: str, offset: int, limit: int) -> DatasetPage:
        return await runner.call(
            lambda on_sent: client.list_datasets(
                project_id, offset=offset, limit=limit, on_sent=on_sent
            )
        )

    return list_page


async def list_all(
    project_id: str,
    list_page: ListPage,
    *,
    page_size: int = PAGE_SIZE,
    max_pages: int = MAX_PAGES,
) -> Listing:
    """
    Return every dataset of a project, paging by whichever rule the server uses.

    Raises:
        ApiError: a list call failed for good.
        StoppedError: the run stopped while listing.
    """
    if page_size < 2:
        raise ValueError("page_size must be at least 2 to tell the paging rules apart")
    found: dict[str, DatasetInfo] = {}
    first = await list_page(project_id, 0, page_size)
    total = first.total_number
    _add(found, first.datasets)
    pages = 1
    if len(first.datasets) < page_size or _all_in_hand(found, total):
        return _listing(project_id, found, total, pages)

    probe = await list_page(project_id, 1, page_size)
    pages += 1
    ids = [d.dataset_id for d in first.datasets]
    probe_ids = [d.dataset_id for d in probe.datasets]
    by_records = probe_ids[: page_size - 1] == ids[1:] and probe_ids != ids
    log.debug("discovery.paging_detected", rule="records" if by_records else "pages")
    if by_records:
        offset, step, last = page_size, page_size, ids
    else:
        if not _add(found, probe.datasets) or len(probe_ids) < page_size:
            return _listing(project_id, found, total, pages)
        offset, step, last = 2, 1, probe_ids

    while not _all_in_hand(found, total):
        if pages >= max_pages:
            return _listing(project_id, found, total, pages, capped=True)
        page = await list_page(project_id, offset, page_size)
        pages += 1
        page_ids = [d.dataset_id for d in page.datasets]
        if page_ids == last or not _add(found, page.datasets):
            break
        if len(page_ids) < page_size:
            break
        offset, last = offset + step, page_ids

    return _listing(project_id, found, total, pages)


def _all_in_hand(found: dict[str, DatasetInfo], total: int | None) -> bool:
    return total is not None and len(found) >= total


def _add(found: dict[str, DatasetInfo], datasets: Iterable[DatasetInfo]) -> bool:
    """
    Keep the datasets not seen before; return whether there was any.
    """
    added = False
    for dataset in datasets:
        if dataset.dataset_id not in found:
            found[dataset.dataset_id] = dataset
            added = True

    return added


def _listing(
    project_id: str,
    found: dict[str, DatasetInfo],
    total: int | None,
    pages: int,
    *,
    capped: bool = False,
) -> Listing:
    """
    Return what was found, warning when it is known or likely to be short.
    """
    complete = not capped and (total is None or len(found) >= total)
    if not complete:
        log.warning(
            "discovery.listing_incomplete",
            project_id=project_id,
            found=len(found),
            total_number=total,
            pages=pages,
            page_cap_reached=capped,
        )
    log.info("discovery.listed", project_id=project_id, found=len(found), pages=pages)

    return Listing(tuple(found.values()), complete, pages)


async def _list_or_error(
    project_id: str, list_page: ListPage
) -> Listing | ApiError | StoppedError:
    try:
        return await list_all(project_id, list_page)
    except (ApiError, StoppedError) as error:
        failure = error
    # A server's refusal, not a bug: the message is enough, no traceback.
    log.error("discovery.failed", project_id=project_id, error=str(failure))
    return failure


def _select(
    selector: Selector, listing: Listing | ApiError | StoppedError
) -> list[Target | Outcome]:
    """
    Return what one selector stands for: targets to sync and decided results.
    """
    if not isinstance(listing, Listing):
        return [_listing_failed(selector, listing)]
    if selector.dataset_name is not None:
        return [_by_name(selector, selector.dataset_name, listing)]

    chosen: list[DatasetInfo] = []
    if selector.everything:
        chosen = list(listing.datasets)
    for pattern in selector.patterns:
        matches = [
            d for d in listing.datasets if fnmatch.fnmatchcase(d.dataset_name, pattern)
        ]
        if not matches:
            log.warning(
                "discovery.pattern_unmatched",
                project_id=selector.project_id,
                pattern=pattern,
                line=selector.line,
            )
        chosen.extend(matches)

    return [_work_item(selector.project_id, dataset) for dataset in chosen]


def _by_name(selector: Selector, name: str, listing: Listing) -> Target | Outcome:
    """
    Return the one dataset called ``name``, or a failed result saying why not.
    """
    matches = [d for d in listing.datasets if d.dataset_name == name]
    if len(matches) == 1:
        return _work_item(selector.project_id, matches[0])

    if matches:
        ids = ", ".join(d.dataset_id for d in matches[:10])
        message = (
            f"{len(matches)} datasets are named {name!r} ({ids}); "
            "list the one to sync by dataset_id"
        )
        return _decided(
            selector.project_id, "", name, "failed", "ambiguous_name", message
        )
    message = f"no dataset is named {name!r} in project {selector.project_id}"
    if not listing.complete:
        message += " (the list API did not return every dataset)"
    return _decided(selector.project_id, "", name, "failed", "not_found", message)


def _work_item(project_id: str, dataset: DatasetInfo) -> Target | Outcome:
    """
    Return a discovered dataset as a target, or as skipped when it cannot sync.
    """
    if dataset.dataset_type in TEXT_TYPES:
        message = f"dataset type {dataset.dataset_type} (text) cannot be synced"
        return _decided(
            project_id,
            dataset.dataset_id,
            dataset.dataset_name,
            "skipped",
            "unsupported_type",
            message,
        )

    return Target(
        project_id,
        dataset.dataset_id,
        dataset_name=dataset.dataset_name,
        already_running=dataset.status == SYNCHRONIZING,
    )


def _listing_failed(selector: Selector, error: ApiError | StoppedError) -> Outcome:
    if isinstance(error, StoppedError):
        status, reason = "cancelled", error.reason
    elif error.transient and not isinstance(error, AuthError):
        status, reason = "failed", "retries_exhausted"
    else:
        status, reason = "failed", error.reason
    message = f"listing datasets for {selector.describe()} failed: {error}"

    return _decided(
        selector.project_id, "", selector.dataset_name, status, reason, message
    )


def _decided(
    project_id: str,
    dataset_id: str,
    dataset_name: str | None,
    status: str,
    reason: str,
    message: str,
) -> Outcome:
    now = time.time()
    return Outcome(
        project_id=project_id,
        dataset_id=dataset_id,
        status=status,  # type: ignore[arg-type]
        reason=reason,
        error_msg=message,
        started_at=now,
        finished_at=now,
        dataset_name=dataset_name,
    )


def _unique(items: Iterable[Target | Outcome]) -> Iterable[Target | Outcome]:
    """
    Yield each dataset once, the first time it comes; named targets keep their name.
    """
    seen: set[tuple[str, str]] = set()
    for item in items:
        key = (item.project_id, item.dataset_id)
        if item.dataset_id and key in seen:
            log.debug(
                "discovery.duplicate_merged", project_id=key[0], dataset_id=key[1]
            )
            continue
        seen.add(key)
        yield item
