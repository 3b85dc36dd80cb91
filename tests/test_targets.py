"""
Discovery against the real loopback simulator: paging, names, globs, skips.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import replace
from typing import Any

import pytest
from structlog.testing import capture_logs

from orchestrator import targets
from orchestrator.auth import Secret, TokenAuth
from orchestrator.client import DatasetPage, ModelArtsClient
from orchestrator.config import RetrySettings, Selector, Settings, Target
from orchestrator.errors import ForbiddenError, ServerError
from orchestrator.report import Outcome
from orchestrator.runner import Runner
from orchestrator.simulator import Dataset, Plan, Simulator
from tests.conftest import PROJECT, TOKEN, settings_for

StartSimulator = Callable[[Plan], Awaitable[Simulator]]
OTHER = "9f8e7d6c5b4a39281706f5e4d3c2b1a0"


def catalogue(count: int, project_id: str = PROJECT) -> dict[str, tuple[Dataset, ...]]:
    """
    Return a catalogue of ``count`` datasets named cars-001, cars-002, ...
    """
    return {
        project_id: tuple(
            Dataset(f"id-{i:04d}", dataset_name=f"cars-{i:03d}")
            for i in range(1, count + 1)
        )
    }


async def resolve_with(
    sim: Simulator, settings: Settings
) -> tuple[targets.Resolved, list[str]]:
    """
    Resolve ``settings`` against ``sim`` through a runner; return the queries sent.
    """
    credential = TokenAuth(Secret(TOKEN), source="test")
    async with ModelArtsClient(
        settings.endpoint, credential, timeout_s=5.0, concurrency=4
    ) as client:
        runner = Runner(settings, client)

        async def list_page(project_id: str, offset: int, limit: int) -> DatasetPage:
            return await runner.call(
                lambda on_sent: client.list_datasets(
                    project_id, offset=offset, limit=limit, on_sent=on_sent
                )
            )

        resolved = await targets.resolve(settings, list_page)
    return resolved, [r.query for r in sim.received if r.kind == "list"]


def selecting(url: str, *selectors: Selector, explicit: Sequence[Target] = ()) -> Any:
    return replace(settings_for(url, tuple(explicit)), selectors=selectors)


@pytest.mark.parametrize(
    ("mode", "queries"),
    [
        pytest.param(
            "records",
            [
                "offset=0&limit=100",
                "offset=1&limit=100",
                "offset=100&limit=100",
                "offset=200&limit=100",
            ],
            id="records",
        ),
        pytest.param(
            "pages",
            ["offset=0&limit=100", "offset=1&limit=100", "offset=2&limit=100"],
            id="pages",
        ),
    ],
)
async def test_250_datasets_resolve_across_pages_in_either_offset_mode(
    simulator: StartSimulator, mode: str, queries: list[str]
) -> None:
    """All 250 datasets come back once, in list order, whichever rule offset follows."""
    plan = Plan(token=TOKEN, datasets=catalogue(250), list_offset_mode=mode)
    sim = await simulator(plan)

    resolved, sent = await resolve_with(
        sim, selecting(sim.url, Selector(PROJECT, everything=True))
    )

    ids = [t.dataset_id for t in resolved.targets]
    assert ids == [f"id-{i:04d}" for i in range(1, 251)]
    assert resolved.targets[0].dataset_name == "cars-001"
    assert sent == queries


@pytest.mark.parametrize("mode", [pytest.param("records"), pytest.param("pages")])
async def test_listing_stops_on_a_repeated_page(
    simulator: StartSimulator, mode: str
) -> None:
    """A server that answers page 2 with page 1 again ends the listing there."""
    plan = Plan(
        token=TOKEN,
        datasets=catalogue(250),
        list_offset_mode=mode,  # type: ignore[arg-type]
        list_repeat_page=1,
    )
    sim = await simulator(plan)

    resolved, sent = await resolve_with(
        sim, selecting(sim.url, Selector(PROJECT, everything=True))
    )

    assert [t.dataset_id for t in resolved.targets] == [
        f"id-{i:04d}" for i in range(1, 201)
    ]
    assert len(sent) <= 4


async def test_listing_caps_pages_against_an_endless_server() -> None:
    """A server that always answers a full new page is read for max_pages only."""
    calls: list[int] = []

    async def endless(project_id: str, offset: int, limit: int) -> DatasetPage:
        calls.append(offset)
        page = tuple(
            targets.DatasetInfo(f"d{offset}-{i}", f"n{offset}-{i}", 0, 1)
            for i in range(limit)
        )
        return DatasetPage(None, page)

    with capture_logs() as logs:
        listing = await targets.list_all(PROJECT, endless, page_size=10, max_pages=7)

    assert len(calls) == 7
    assert len(listing.datasets) == 70
    assert not listing.complete
    (warning,) = [e for e in logs if e["event"] == "discovery.listing_incomplete"]
    assert warning["page_cap_reached"]


async def test_short_first_page_needs_one_call(simulator: StartSimulator) -> None:
    """A project with fewer datasets than a page is listed in one request."""
    sim = await simulator(Plan(token=TOKEN, datasets=catalogue(7)))

    resolved, sent = await resolve_with(
        sim, selecting(sim.url, Selector(PROJECT, everything=True))
    )

    assert len(resolved.targets) == 7
    assert sent == ["offset=0&limit=100"]


async def test_name_resolves_to_its_one_dataset_in_file_order(
    simulator: StartSimulator,
) -> None:
    """A dataset_name entry becomes its id, kept between the explicit targets."""
    sim = await simulator(Plan(token=TOKEN, datasets=catalogue(120)))
    explicit = (Target(PROJECT, "id-0001"), Target(PROJECT, "id-0002"))
    settings = selecting(
        sim.url,
        Selector(PROJECT, dataset_name="cars-110", after=1),
        explicit=explicit,
    )

    resolved, _ = await resolve_with(sim, settings)

    assert [t.dataset_id for t in resolved.targets] == ["id-0001", "id-0110", "id-0002"]
    assert resolved.targets[1].dataset_name == "cars-110"


@pytest.mark.parametrize(
    ("names", "reason"),
    [
        pytest.param(["cars-001", "bikes"], "not_found", id="none"),
        pytest.param(["trucks", "trucks", "trucks"], "ambiguous_name", id="several"),
    ],
)
async def test_name_matching_none_or_several_fails_that_entry_only(
    simulator: StartSimulator, names: list[str], reason: str
) -> None:
    """An unknown or shared name is one failed result; other entries still resolve."""
    named = [*names, "solo"]
    datasets = tuple(Dataset(f"id-{i}", dataset_name=n) for i, n in enumerate(named))
    sim = await simulator(Plan(token=TOKEN, datasets={PROJECT: datasets}))
    settings = selecting(
        sim.url,
        Selector(PROJECT, dataset_name="trucks"),
        Selector(PROJECT, dataset_name="solo"),
    )

    resolved, sent = await resolve_with(sim, settings)

    assert [t.dataset_name for t in resolved.targets] == ["solo"]
    (failed,) = resolved.decided
    assert (failed.status, failed.reason) == ("failed", reason)
    assert failed.dataset_name == "trucks"
    assert failed.dataset_id == ""
    assert "trucks" in (failed.error_msg or "")
    assert len(sent) == 1, "one listing serves every entry of a project"


async def test_globs_text_types_and_running_datasets(
    simulator: StartSimulator,
) -> None:
    """Globs pick by name; text datasets are skipped; a syncing one is running."""
    datasets = (
        Dataset("a1", dataset_name="cars-a"),
        Dataset("t1", dataset_name="cars-text", dataset_type=101),
        Dataset("r1", dataset_name="cars-busy", status=5),
        Dataset("b1", dataset_name="bikes-a"),
        Dataset("x1", dataset_name="other"),
    )
    sim = await simulator(Plan(token=TOKEN, datasets={PROJECT: datasets}))
    settings = selecting(
        sim.url,
        Selector(PROJECT, patterns=("cars-*", "bikes-?", "nothing-*")),
    )

    resolved, _ = await resolve_with(sim, settings)

    assert [t.dataset_id for t in resolved.targets] == ["a1", "r1", "b1"]
    assert [t.already_running for t in resolved.targets] == [False, True, False]
    (skipped,) = resolved.decided
    assert (skipped.dataset_id, skipped.status, skipped.reason) == (
        "t1",
        "skipped",
        "unsupported_type",
    )


async def test_a_dataset_named_twice_is_synced_once(simulator: StartSimulator) -> None:
    """An explicit id that a glob also matches stays one target, the first one."""
    sim = await simulator(Plan(token=TOKEN, datasets=catalogue(3)))
    settings = selecting(
        sim.url,
        Selector(PROJECT, everything=True, after=1),
        explicit=(Target(PROJECT, "id-0002"),),
    )

    resolved, _ = await resolve_with(sim, settings)

    assert [t.dataset_id for t in resolved.targets] == ["id-0002", "id-0001", "id-0003"]


async def test_failed_listing_fails_its_entries_not_the_run() -> None:
    """A project the server refuses ends as failed results; others still resolve."""

    async def list_page(project_id: str, offset: int, limit: int) -> DatasetPage:
        if project_id == OTHER:
            raise ForbiddenError("HTTP 403 APIG.0302: no", http_status=403)
        return DatasetPage(1, (targets.DatasetInfo("id-1", "cars-1", 0, 1),))

    settings = selecting(
        "http://127.0.0.1:9",
        Selector(PROJECT, everything=True),
        Selector(OTHER, dataset_name="x"),
        Selector(OTHER, patterns=("cars-*",)),
    )

    resolved = await targets.resolve(settings, list_page)

    assert [t.dataset_id for t in resolved.targets] == ["id-1"]
    assert [(o.dataset_name, o.reason) for o in resolved.decided] == [
        ("x", "forbidden"),
        (None, "forbidden"),
    ]


async def test_transient_list_errors_are_retried(simulator: StartSimulator) -> None:
    """A 503 on the list call is retried by the run policy; the listing succeeds."""
    sim = await simulator(Plan(token=TOKEN, datasets=catalogue(5)))
    flaky = _FlakyLister(sim, failures=2)

    settings = selecting(sim.url, Selector(PROJECT, everything=True))
    credential = TokenAuth(Secret(TOKEN), source="test")
    async with ModelArtsClient(
        settings.endpoint, credential, timeout_s=5.0, concurrency=4
    ) as client:
        runner = Runner(settings, client)
        flaky.client = client

        async def list_page(project_id: str, offset: int, limit: int) -> DatasetPage:
            return await runner.call(lambda on_sent: flaky(project_id, offset, limit))

        resolved = await targets.resolve(settings, list_page)

    assert len(resolved.targets) == 5
    assert flaky.calls == 3


class _FlakyLister:
    """
    A list call that fails with a server error a few times, then asks the server.
    """

    def __init__(self, sim: Simulator, failures: int) -> None:
        self.sim = sim
        self.failures = failures
        self.calls = 0
        self.client: ModelArtsClient | None = None

    async def __call__(self, project_id: str, offset: int, limit: int) -> DatasetPage:
        self.calls += 1
        if self.calls <= self.failures:
            raise ServerError("HTTP 503: test", http_status=503)
        assert self.client is not None
        return await self.client.list_datasets(project_id, offset=offset, limit=limit)


def test_merge_puts_results_back_in_plan_order() -> None:
    """Outcomes of the run and decided results interleave as the plan listed them."""
    first, second = Target(PROJECT, "a"), Target(PROJECT, "c")
    decided = Outcome(PROJECT, "b", "skipped", reason="unsupported_type")
    resolved = targets.Resolved((first, decided, second))
    ran = (Outcome(PROJECT, "a", "succeeded"), Outcome(PROJECT, "c", "failed"))

    merged = resolved.merge(ran)

    assert [o.dataset_id for o in merged] == ["a", "b", "c"]


async def test_deadline_covers_discovery(simulator: StartSimulator) -> None:
    """A deadline passing while a listing keeps failing cancels it and the run."""
    sim = await simulator(Plan(token=TOKEN))
    settings = replace(
        selecting(
            sim.url,
            Selector(PROJECT, everything=True),
            explicit=(Target(PROJECT, "id-1"),),
        ),
        deadline_s=0.2,
        retry=RetrySettings(1000, 0.02, 0.02),
    )
    credential = TokenAuth(Secret(TOKEN), source="test")
    async with ModelArtsClient(
        settings.endpoint, credential, timeout_s=5.0, concurrency=4
    ) as client:
        runner = Runner(settings, client)

        async def failing(on_sent: Callable[[], None]) -> DatasetPage:
            raise ServerError("HTTP 503: test", http_status=503)

        async def list_page(project_id: str, offset: int, limit: int) -> DatasetPage:
            return await runner.call(failing)

        runner.start_deadline()
        resolved = await targets.resolve(settings, list_page)
        result = await runner.run(resolved.targets)

    outcomes = resolved.merge(result.outcomes)
    assert [(o.status, o.reason) for o in outcomes] == [("cancelled", "deadline")] * 2
    assert not sim.sync_requests()


async def test_a_full_page_holding_the_total_needs_no_second_call() -> None:
    """When the first page already holds total_number datasets, paging stops."""
    calls: list[int] = []

    async def exact(project_id: str, offset: int, limit: int) -> DatasetPage:
        calls.append(offset)
        page = tuple(targets.DatasetInfo(f"d{i}", f"n{i}", 0, 1) for i in range(limit))
        return DatasetPage(limit, page)

    listing = await targets.list_all(PROJECT, exact, page_size=10)

    assert calls == [0]
    assert listing.complete


def test_narrow_shards_and_resumes_discovered_work_exactly_once() -> None:
    """Shards split resolved work, decided results included, each item once."""
    found = [Target(PROJECT, f"found-{i}", dataset_name=f"n{i}") for i in range(60)]
    missing = Outcome(PROJECT, "", "failed", reason="not_found", dataset_name="gone")
    resolved = targets.Resolved((*found, missing))
    done = {(PROJECT, "found-3")}

    shares = [
        targets.narrow(resolved, shard=targets.Shard(i, 3), done=done) for i in range(3)
    ]

    keys = [
        (item.project_id, item.dataset_id or "gone")
        for share in shares
        for item in share.items
    ]
    assert sorted(keys) == sorted(
        [(PROJECT, t.dataset_id) for t in found] + [(PROJECT, "gone")]
    )
    skipped = [o for share in shares for o in share.decided if o.status == "skipped"]
    assert [(o.dataset_id, o.reason) for o in skipped] == [
        ("found-3", "already_succeeded")
    ]
