"""
One scheduled run of a config, from its lock to its report.

``cli`` reads the command line and prints for people; this module is what
``run`` does in between: cut the config to its shard, skip what a resumed run
already did, take the config's lock, resolve and run the targets with
SIGINT/SIGTERM wired to a graceful stop, then write the report, the journal
and the metrics and decide the exit code. It takes plain values
(:class:`Options`), never the command line's namespace, and prints nothing
itself: the end-of-run summary is the caller's, through ``on_report``.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import os
import signal
import ssl
import sys
import time
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO, cast

import structlog
from rich.console import Console
from rich.file_proxy import FileProxy

from orchestrator import (
    __version__,
    auth,
    config,
    journal,
    lock,
    logs,
    report,
    runtime,
    targets,
    thresholds,
)
from orchestrator.client import client_for, tls_context
from orchestrator.errors import ConfigError, ReportError
from orchestrator.exits import EXIT_AUTH, EXIT_SIGINT, EXIT_SIGTERM, EXIT_USAGE
from orchestrator.progress import RunProgress
from orchestrator.runner import Runner, RunObserver, RunResult

_SIGNAL_EXIT = {signal.SIGINT: EXIT_SIGINT, signal.SIGTERM: EXIT_SIGTERM}

OnReport = Callable[[dict[str, Any], Path], None]

log = structlog.get_logger(__name__)


@dataclass(frozen=True, slots=True, kw_only=True)
class Options:
    """
    How to run a config, as the command line gave it.
    """

    shard: str | None  # "I/N" or "auto/N", as typed
    resume: Path | None  # a report or journal of the run to resume
    force: bool  # resume even from another config's report
    report_path: Path | None  # None: a timestamped file under reports/
    lock_dir: Path | None  # None: from the environment
    wait_lock_s: float
    metrics_file: Path | None
    progress_every_s: float
    rate_limit_given: bool  # a shard keeps a rate limit given on the command line
    concurrency_given: bool  # likewise for concurrency
    log_format: logs.LogFormat
    verbosity: int  # as logs.configure takes it: -1 quiet, 0 info, 1 debug


@dataclass(frozen=True, slots=True)
class Scope:
    """
    What one run covers: its settings, its shard, and the pairs already done.
    """

    settings: config.Settings  # with the limits of this shard's share
    shard: targets.Shard | None
    done: frozenset[tuple[str, str]]


def scope_for(settings: config.Settings, options: Options) -> Scope:
    """
    Cut the run to its shard and read which targets a resumed run already did.

    Raises:
        ConfigError: the shard is not valid, or the run resumed was of another
            config and ``force`` is not set.
    """
    shard = None
    if options.shard is not None:
        shard = targets.parse_shard(options.shard, os.environ)
        settings = _shard_limits(options, settings, shard)
        log.info("run.sharded", shard=str(shard))
    done = _resumed(options, settings)

    return Scope(settings, shard, done)


def run(scope: Scope, options: Options, *, on_report: OnReport) -> int:
    """
    Run the scope while holding the config's lock and return the exit code.

    ``on_report`` receives the report once it is written, before the metrics.

    Raises:
        ReportError: the report could not be written where it would go.
        LockHeldError: another run of the same config (and shard) holds the lock.
    """
    report_path = options.report_path or report.default_path(datetime.now(UTC))
    _check_writable(report_path)
    lock_path = lock.path_for(
        scope.settings.path,
        options.lock_dir or lock.default_dir(os.environ),
        None if scope.shard is None else str(scope.shard),
    )
    with lock.held(lock_path, wait_s=options.wait_lock_s):
        return _locked_run(scope, options, report_path, on_report)


def _locked_run(
    scope: Scope, options: Options, report_path: Path, on_report: OnReport
) -> int:
    """
    Run the config while holding its lock; write report and journal.
    """
    settings = scope.settings
    ssl_context = tls_context(settings.ca_bundle)
    credential = auth.resolve(
        settings.auth, os.environ, endpoint=settings.endpoint, ssl_context=ssl_context
    )
    log.info("run.configured", credential=credential.source, report=str(report_path))
    run_journal = journal.Journal(
        journal.path_for(report_path),
        config_path=settings.path,
        config_sha256=settings.sha256,
    )
    # A first estimate; the exact count is set once discovery has run.
    progress = _progress(options, len(settings.targets) + len(settings.selectors))

    narrow = functools.partial(targets.narrow, shard=scope.shard, done=scope.done)
    log.debug(
        "run.event_loop_chosen",
        event_loop="asyncio" if runtime.loop_factory() is None else "uvloop",
    )
    try:
        result, signal_number = runtime.run(
            _resolve_and_run(
                settings, credential, ssl_context, [run_journal, progress], narrow
            )
        )
    finally:
        run_journal.close()
        _restore_logs(options)

    return _finish(scope, options, result, signal_number, report_path, on_report)


def _finish(
    scope: Scope,
    options: Options,
    result: RunResult,
    signal_number: int | None,
    report_path: Path,
    on_report: OnReport,
) -> int:
    """
    Write the report and the metrics of a finished run; return its exit code.
    """
    settings, shard = scope.settings, scope.shard
    document = report.assemble(result.outcomes, _facts(settings, result))
    if shard is not None:
        document["shard"] = {"index": shard.index, "count": shard.count}
    written = report.write(document, report_path)
    log.info("report.written", path=str(written))
    on_report(document, written)

    code = _run_exit_code(document, settings, result, signal_number)
    if options.metrics_file is not None:
        from orchestrator import metrics  # prometheus_client: only when asked

        metrics.write(document, options.metrics_file, exit_code=code)
        log.info("metrics.written", path=str(options.metrics_file))

    return code


def _run_exit_code(
    document: dict[str, Any],
    settings: config.Settings,
    result: RunResult,
    signal_number: int | None,
) -> int:
    if signal_number is not None:
        return _SIGNAL_EXIT[signal.Signals(signal_number)]
    if result.stop_reason == "tls_error":
        return EXIT_USAGE
    if any(outcome.reason == "auth_failed" for outcome in result.outcomes):
        return EXIT_AUTH

    return thresholds.exit_code(document, settings.max_failure_ratio)


def _shard_limits(
    options: Options, settings: config.Settings, shard: targets.Shard
) -> config.Settings:
    """
    Divide rate_limit and concurrency among the shards, unless given as flags.

    The config's limits are for the whole job; N shards each taking all of
    them would send N times the rate the account was planned for.
    """
    rate_limit_per_s = settings.rate_limit_per_s
    if not options.rate_limit_given:
        rate_limit_per_s /= shard.count
    concurrency = settings.concurrency
    if not options.concurrency_given:
        concurrency = max(concurrency // shard.count, 1)

    return replace(settings, rate_limit_per_s=rate_limit_per_s, concurrency=concurrency)


def _progress(options: Options, total: int) -> RunProgress:
    """
    Return the run's progress display: a bar on a terminal, else log events.

    With the bar live, log lines go through its console so they print above it.
    """
    if not sys.stderr.isatty() or options.verbosity < 0:
        return RunProgress(total, interval_s=options.progress_every_s)
    console = Console(stderr=True)
    logs.configure(
        log_format=options.log_format,
        verbosity=options.verbosity,
        stream=cast(TextIO, FileProxy(console, sys.stderr)),
    )

    return RunProgress(total, console=console)


def _restore_logs(options: Options) -> None:
    logs.configure(log_format=options.log_format, verbosity=options.verbosity)


def _resumed(options: Options, settings: config.Settings) -> frozenset[tuple[str, str]]:
    """
    Return the (project, dataset) pairs that succeeded in the run being resumed.

    Raises:
        ConfigError: the journal or report was written for another config and
            ``--force`` was not given.
    """
    if options.resume is None:
        return frozenset()
    before = journal.read(options.resume)
    if before.config_sha256 != settings.sha256 and not options.force:
        raise ConfigError(
            f"--resume {str(options.resume)!r} was written for config sha256 "
            f"{str(before.config_sha256)[:12]}, but {str(settings.path)!r} has "
            f"{settings.sha256[:12]}; pass --force to resume anyway"
        )
    done = before.succeeded()
    log.info("run.resumed", path=str(options.resume), succeeded_before=len(done))

    return done


def _check_writable(path: Path) -> None:
    """
    Refuse to start a run whose report could not be written at the end.

    Raises:
        ReportError: the report's folder cannot be created or written.
    """
    folder = path.parent
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ReportError(
            f"report folder {str(folder)!r} cannot be created: {exc.strerror}"
        ) from exc
    if not os.access(folder, os.W_OK):
        raise ReportError(f"report folder {str(folder)!r} is not writable")
    if path.is_dir():
        raise ReportError(f"report path {str(path)!r} is a folder; name a file")


async def _resolve_and_run(
    settings: config.Settings,
    credential: auth.Auth,
    ssl_context: ssl.SSLContext | None,
    observers: Sequence[RunObserver],
    narrow: Callable[[targets.Resolved], targets.Resolved],
) -> tuple[RunResult, int | None]:
    """
    Resolve the targets, then run them with SIGINT/SIGTERM wired to a graceful stop.

    ``narrow`` cuts the resolved work to this shard and skips what a resumed
    run already did: after discovery, so datasets found by name count too.

    The first signal stops dispatching and lets requests in flight finish
    within the grace period; a second one cancels them at once. Discovery's
    list calls share the run's client, rate limit and retry policy.
    """
    received: list[int] = []
    async with client_for(settings, credential, ssl_context) as client:
        if settings.halt is not None:
            halt = thresholds.HaltWatch(settings.halt, lambda r: runner.stop(r))
            observers = (*observers, halt)
        runner = Runner(settings, client, observers=observers)

        def on_signal(number: int) -> None:
            received.append(number)
            log.warning("run.signalled", signal=signal.Signals(number).name)
            if len(received) == 1:
                runner.stop("interrupted")
            else:
                runner.abort("interrupted")

        loop = asyncio.get_running_loop()
        for number in _SIGNAL_EXIT:
            loop.add_signal_handler(number, on_signal, number)
        try:
            async with _showing(observers) as progress:
                started_at = time.time()
                runner.start_deadline()
                list_page = targets.paced_lister(runner, client)
                resolved = narrow(await targets.resolve(settings, list_page))
                if progress is not None:
                    progress.set_total(len(resolved.items))
                for outcome in resolved.decided:
                    runner.record(outcome)
                result = await runner.run(resolved.targets)
            result = dataclasses.replace(
                result,
                outcomes=resolved.merge(result.outcomes),
                started_at=started_at,
            )
        finally:
            for number in _SIGNAL_EXIT:
                loop.remove_signal_handler(number)
            await credential.aclose()

    return result, (received[0] if received else None)


@contextlib.asynccontextmanager
async def _showing(
    observers: Sequence[RunObserver],
) -> AsyncIterator[RunProgress | None]:
    """
    Show the progress display among the observers while the run lasts, if any.
    """
    for observer in observers:
        if isinstance(observer, RunProgress):
            async with observer.running():
                yield observer
            return
    yield None


def _facts(settings: config.Settings, result: RunResult) -> report.RunFacts:
    return report.RunFacts(
        tool_version=__version__,
        config_path=str(settings.path),
        config_sha256=settings.sha256,
        endpoint=settings.endpoint,
        rate_limit_per_s=settings.rate_limit_per_s,
        concurrency=settings.concurrency,
        started_at=result.started_at,
        finished_at=result.finished_at,
        stop_reason=result.stop_reason,
    )
