"""
What a run would do, in words: for ``validate`` and ``run --dry-run``.

The lines describe the settings a run would use, its targets and the requests
it would send; nothing here sends anything. They are yielded one at a time
for ``cli`` to print: it stays the only module that prints for people.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence

from orchestrator import auth, config, targets
from orchestrator.client import sync_path
from orchestrator.errors import ConfigError


def validation_lines(settings: config.Settings) -> Iterator[str]:
    """
    Describe the settings and every target of a valid config.
    """
    plan = targets.plan(settings)
    yield from _plan_lines(settings, plan, merged=len(settings.targets) - len(plan))
    for target in plan:
        yield f"  {target.project_id}/{target.dataset_id}"
    yield from _selector_lines(settings)
    yield "valid; nothing was sent"


def dry_run_lines(
    settings: config.Settings,
    shard: targets.Shard | None,
    done: frozenset[tuple[str, str]],
) -> Iterator[str]:
    """
    Describe the plan and every request the run would send; send none.

    Targets chosen by name or glob are only listed at run time, so they are
    shown as the selectors they are.
    """
    explicit = targets.plan(settings)
    narrowed = targets.narrow(targets.Resolved(explicit), shard=shard, done=done)
    plan, skipped = narrowed.targets, narrowed.decided
    yield from _plan_lines(
        settings,
        plan,
        merged=len(settings.targets) - len(explicit),
        skipped=len(skipped),
    )
    if shard is not None:
        yield f"shard       {shard}: {len(plan) + len(skipped)} targets of this shard"
    yield f"requests    {len(plan)} first attempts, without retries:"
    for target in plan:
        path = sync_path(target.project_id, target.dataset_id)
        yield f"  POST {settings.endpoint}{path}"
    yield from _selector_lines(settings)
    yield "dry run; nothing was sent"


def _plan_lines(
    settings: config.Settings,
    plan: Sequence[config.Target],
    *,
    merged: int,
    skipped: int = 0,
) -> Iterator[str]:
    """
    Describe the settings a run would use and how long its plan takes at least.
    """
    yield from _settings_lines(settings)
    duration_s = len(plan) / settings.rate_limit_per_s
    resumed = f", {skipped} already succeeded" if skipped else ""
    yield (
        f"targets     {len(plan)} ({merged} duplicates merged{resumed}); "
        f"at least {duration_s:.1f} s at the rate limit"
    )


def _settings_lines(settings: config.Settings) -> Iterator[str]:
    """
    Describe the endpoint, credential, pacing, retries, circuit, deadline and wait.
    """
    try:
        credential = auth.resolve(
            settings.auth, os.environ, endpoint=settings.endpoint
        ).source
    except ConfigError as error:
        credential = f"none found ({error}); 'run' would stop with exit code 2"

    yield f"config      {settings.path} (sha256 {settings.sha256[:12]})"
    yield f"endpoint    {settings.endpoint}"
    yield f"credential  {credential}"
    yield (
        f"pacing      {_pace(settings)}, "
        f"{settings.concurrency} in flight, timeout {settings.timeout_s:g} s"
    )
    yield (
        f"retry       up to {settings.retry.max_attempts} attempts, backoff "
        f"{settings.retry.initial_backoff_s:g}-{settings.retry.max_backoff_s:g} s, "
        f"budget {settings.retry.budget_ratio:.0%} of first attempts "
        f"+ {settings.retry.budget_floor}"
    )
    circuit = settings.circuit
    yield (
        f"circuit     opens after {circuit.failures} failing targets in a row, "
        f"probes every {circuit.cooldown_s:g} s, stops after {circuit.probes}"
        if circuit.failures
        else "circuit     off"
    )
    deadline = f"{settings.deadline_s:g} s" if settings.deadline_s else "none"
    yield f"deadline    {deadline}"
    wait = settings.wait
    yield (
        f"wait        every {wait.poll_interval_s:g}-{wait.max_poll_interval_s:g} s "
        f"for up to {wait.timeout_s:g} s"
        if wait.enabled
        else "wait        no (the report shows accepted syncs only)"
    )


def _selector_lines(settings: config.Settings) -> Iterator[str]:
    for selector in settings.selectors:
        yield f"  {selector.project_id}/{{{selector.describe()}}} (listed at run time)"


def _pace(settings: config.Settings) -> str:
    """
    Describe the rate limit as the user wrote it: ``10/s`` or ``300 per 60 s``.
    """
    if settings.rate_window_s == 1.0:
        text = f"{settings.rate_limit_per_s:g}/s"
    else:
        count = settings.rate_limit_per_s * settings.rate_window_s
        text = f"{count:g} per {settings.rate_window_s:g} s"
    if settings.rate_burst > 1:
        text += f" (burst {settings.rate_burst})"

    return text
