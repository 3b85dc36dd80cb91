"""
The command line: arguments, subcommands, exit codes, and what humans read.

This is the only module that prints for people (stdout) and the one exit
point: an :class:`OrchestratorError` becomes one line on stderr and a named
exit code; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import functools
import json
import os
import signal
import ssl
import sys
import time
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import replace
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
    manifest,
    report,
    status,
    summary,
    targets,
    thresholds,
)
from orchestrator.client import client_for, sync_path, tls_context
from orchestrator.errors import (
    ConfigError,
    LockHeldError,
    OrchestratorError,
    ReportError,
)
from orchestrator.progress import DEFAULT_INTERVAL_S, RunProgress
from orchestrator.runner import Runner, RunObserver, RunResult

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_AUTH = 3
EXIT_LOCKED = 4
EXIT_SOFTWARE = 70  # sysexits.h EX_SOFTWARE: an internal error, a bug to report
EXIT_BROKEN_PIPE = 141  # 128 + SIGPIPE, what a shell reports for a closed pipe
EXIT_SIGINT = 130
EXIT_SIGTERM = 143
_SIGNAL_EXIT = {signal.SIGINT: EXIT_SIGINT, signal.SIGTERM: EXIT_SIGTERM}

log = structlog.get_logger(__name__)


def main(argv: Sequence[str] | None = None) -> int:
    """
    Run the command line and return the process exit code.
    """
    parser = _parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse has printed usage or --help already
        return exc.code if isinstance(exc.code, int) else EXIT_USAGE

    verbosity = -1 if args.quiet else min(args.verbose, 1)
    logs.configure(log_format=args.log_format, verbosity=verbosity)
    try:
        code: int = args.handler(args)
    except OrchestratorError as error:
        log.debug("cli.failed", exc_info=True)
        print(f"modelarts-sync: error: {logs.scrub(str(error))}", file=sys.stderr)
        return _exit_code_for(error)
    except BrokenPipeError:
        # The reader went away (`validate | head`); end quietly like other tools,
        # pointing stdout at /dev/null so the interpreter's final flush is silent.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_BROKEN_PIPE
    except KeyboardInterrupt:  # Ctrl-C before the run installed its handlers
        print("modelarts-sync: interrupted before the run started", file=sys.stderr)
        return EXIT_SIGINT
    except Exception:
        # A bug, not a user error: keep the whole traceback, but through the
        # log so the secret redactor sees it before anything is printed.
        log.critical("cli.crashed", exc_info=True)
        return EXIT_SOFTWARE

    return code


def _exit_code_for(error: OrchestratorError) -> int:
    if isinstance(error, LockHeldError):
        return EXIT_LOCKED
    if isinstance(error, ConfigError | ReportError):
        return EXIT_USAGE

    return EXIT_FAILED


def _parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--log-format",
        choices=["auto", "json", "console"],
        default="auto",
        help="log format on stderr (default: console on a terminal, else JSON)",
    )
    common.add_argument("-v", "--verbose", action="count", default=0, help="debug logs")
    common.add_argument(
        "-q", "--quiet", action="store_true", help="warnings and errors only"
    )

    parser = argparse.ArgumentParser(
        prog="modelarts-sync",
        description="Sync many ModelArts datasets with their data sources.",
    )
    parser.add_argument("--version", action="version", version=__version__)
    commands = parser.add_subparsers(dest="command", required=True)

    run = commands.add_parser(
        "run", parents=[common], help="sync every target in CONFIG"
    )
    run.add_argument("config", type=Path, metavar="CONFIG")
    run.add_argument("--report", type=Path, metavar="PATH", help="report file")
    run.add_argument(
        "--shard",
        metavar="I/N",
        help="run only shard I of N (0-based; auto/N reads JOB_COMPLETION_INDEX)",
    )
    run.add_argument(
        "--dry-run",
        action="store_true",
        help="print the plan and the requests it would send; send nothing",
    )
    run.add_argument(
        "--metrics-file",
        type=Path,
        metavar="PATH",
        help="write Prometheus metrics here at the end (textfile collector)",
    )
    run.add_argument(
        "--progress-every",
        type=float,
        default=DEFAULT_INTERVAL_S,
        metavar="SECONDS",
        help="log run.progress this often when stderr is not a terminal",
    )
    run.add_argument(
        "--lock-dir",
        type=Path,
        metavar="DIR",
        help=f"where lock files go (default: ${lock.LOCK_DIR_ENV}, "
        "$XDG_RUNTIME_DIR or the temp folder)",
    )
    run.add_argument(
        "--wait-lock",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help="wait this long for another run of CONFIG to finish (default: refuse)",
    )
    run.add_argument(
        "--resume",
        type=Path,
        metavar="PATH",
        help="skip targets that succeeded in this report or journal",
    )
    run.add_argument(
        "--force",
        action="store_true",
        help="resume even if PATH was written for a different config",
    )
    run.add_argument(
        "--wait",
        action="store_true",
        default=None,
        help="follow each accepted sync until it ends (wait.enabled)",
    )
    _add_overrides(run)
    run.set_defaults(handler=_cmd_run)

    states = commands.add_parser(
        "status", parents=[common], help="show each target's sync state; read-only"
    )
    states.add_argument("config", type=Path, metavar="CONFIG")
    states.add_argument(
        "--json",
        action="store_true",
        help="print JSON (the default when stdout is not a terminal)",
    )
    _add_overrides(states)
    states.set_defaults(handler=_cmd_status)

    validate = commands.add_parser(
        "validate", parents=[common], help="check CONFIG and print the plan"
    )
    validate.add_argument("config", type=Path, metavar="CONFIG")
    _add_overrides(validate)
    validate.set_defaults(handler=_cmd_validate)

    _add_report_commands(commands, common)

    simulate = commands.add_parser(
        "simulate", parents=[common], help="serve a ModelArts stand-in on loopback"
    )
    simulate.add_argument("--host", default="127.0.0.1")
    simulate.add_argument("--port", type=int, default=0, help="0 picks a free port")
    simulate.add_argument("--plan", type=Path, metavar="FILE", help="fault plan")
    simulate.add_argument(
        "--log", type=Path, metavar="FILE", help="append each request as JSON"
    )
    simulate.add_argument(
        "--tls-cert", type=Path, metavar="PEM", help="serve HTTPS with this chain"
    )
    simulate.add_argument(
        "--tls-key", type=Path, metavar="PEM", help="the certificate's private key"
    )
    simulate.set_defaults(handler=_cmd_simulate)

    return parser


def _add_report_commands(
    commands: argparse._SubParsersAction[argparse.ArgumentParser],
    common: argparse.ArgumentParser,
) -> None:
    group = commands.add_parser("report", help="read, join and reuse saved reports")
    actions = group.add_subparsers(dest="report_command", required=True)

    show = actions.add_parser(
        "show", parents=[common], help="print a saved report's summary"
    )
    show.add_argument("report", type=Path, metavar="REPORT")
    show.set_defaults(handler=_cmd_report_show)

    merge = actions.add_parser(
        "merge", parents=[common], help="join shard reports into one"
    )
    merge.add_argument("reports", type=Path, nargs="+", metavar="REPORT")
    merge.add_argument("-o", "--output", type=Path, required=True, metavar="FILE")
    merge.set_defaults(handler=_cmd_report_merge)

    failures = actions.add_parser(
        "failures",
        parents=[common],
        help="write a config of the targets that did not succeed",
    )
    failures.add_argument("report", type=Path, metavar="REPORT")
    failures.add_argument("-o", "--output", type=Path, required=True, metavar="FILE")
    failures.set_defaults(handler=_cmd_report_failures)


def _add_overrides(command: argparse.ArgumentParser) -> None:
    command.add_argument("--endpoint", metavar="URL", help="override endpoint")
    command.add_argument(
        "--rate-limit",
        metavar="N",
        help="override rate_limit: per second, or N per period such as 300/min",
    )
    command.add_argument(
        "--concurrency", type=int, metavar="N", help="override concurrency"
    )


def _load_settings(args: argparse.Namespace) -> config.Settings:
    settings = config.load(args.config)
    return config.apply_overrides(
        settings,
        endpoint=args.endpoint,
        rate_limit=args.rate_limit,
        concurrency=args.concurrency,
        wait=getattr(args, "wait", None),
    )


def _cmd_validate(args: argparse.Namespace) -> int:
    settings = _load_settings(args)
    plan = targets.plan(settings)
    _print_plan(settings, plan, merged=len(settings.targets) - len(plan))
    for target in plan:
        print(f"  {target.project_id}/{target.dataset_id}")
    _print_selectors(settings)
    print("valid; nothing was sent")

    return EXIT_OK


def _print_plan(
    settings: config.Settings,
    plan: Sequence[config.Target],
    *,
    merged: int,
    skipped: int = 0,
) -> None:
    """
    Print the settings a run would use and how long its plan takes at least.
    """
    try:
        credential = auth.resolve(
            settings.auth, os.environ, endpoint=settings.endpoint
        ).source
    except ConfigError as error:
        credential = f"none found ({error}); 'run' would stop with exit code 2"

    duration_s = len(plan) / settings.rate_limit_per_s
    print(f"config      {settings.path} (sha256 {settings.sha256[:12]})")
    print(f"endpoint    {settings.endpoint}")
    print(f"credential  {credential}")
    print(
        f"pacing      {_pace(settings)}, "
        f"{settings.concurrency} in flight, timeout {settings.timeout_s:g} s"
    )
    print(
        f"retry       up to {settings.retry.max_attempts} attempts, backoff "
        f"{settings.retry.initial_backoff_s:g}-{settings.retry.max_backoff_s:g} s, "
        f"budget {settings.retry.budget_ratio:.0%} of first attempts "
        f"+ {settings.retry.budget_floor}"
    )
    circuit = settings.circuit
    print(
        f"circuit     opens after {circuit.failures} failing targets in a row, "
        f"probes every {circuit.cooldown_s:g} s, stops after {circuit.probes}"
        if circuit.failures
        else "circuit     off"
    )
    deadline = f"{settings.deadline_s:g} s" if settings.deadline_s else "none"
    print(f"deadline    {deadline}")
    wait = settings.wait
    print(
        f"wait        every {wait.poll_interval_s:g}-{wait.max_poll_interval_s:g} s "
        f"for up to {wait.timeout_s:g} s"
        if wait.enabled
        else "wait        no (the report shows accepted syncs only)"
    )
    resumed = f", {skipped} already succeeded" if skipped else ""
    print(
        f"targets     {len(plan)} ({merged} duplicates merged{resumed}); "
        f"at least {duration_s:.1f} s at the rate limit"
    )


def _dry_run(
    settings: config.Settings,
    shard: targets.Shard | None,
    done: frozenset[tuple[str, str]],
) -> int:
    """
    Print the plan and every request the run would send; send none.

    Targets chosen by name or glob are only listed at run time, so they are
    shown as the selectors they are.
    """
    explicit = targets.plan(settings)
    narrowed = targets.narrow(targets.Resolved(explicit), shard=shard, done=done)
    plan, skipped = narrowed.targets, narrowed.decided
    _print_plan(
        settings,
        plan,
        merged=len(settings.targets) - len(explicit),
        skipped=len(skipped),
    )
    if shard is not None:
        print(f"shard       {shard}: {len(plan) + len(skipped)} targets of this shard")
    print(f"requests    {len(plan)} first attempts, without retries:")
    for target in plan:
        path = sync_path(target.project_id, target.dataset_id)
        print(f"  POST {settings.endpoint}{path}")
    _print_selectors(settings)
    print("dry run; nothing was sent")

    return EXIT_OK


def _print_selectors(settings: config.Settings) -> None:
    for selector in settings.selectors:
        print(f"  {selector.project_id}/{{{selector.describe()}}} (listed at run time)")


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


def _cmd_run(args: argparse.Namespace) -> int:
    settings = _load_settings(args)
    shard = None
    if args.shard is not None:
        shard = targets.parse_shard(args.shard, os.environ)
        settings = _shard_limits(args, settings, shard)
        log.info("run.sharded", shard=str(shard))
    args.resolved_shard = shard  # auto/N made concrete, for the lock and report
    done = _resumed(args, settings)
    if args.dry_run:
        return _dry_run(settings, shard, done)
    report_path = args.report or report.default_path(datetime.now(UTC))
    _check_writable(report_path)
    lock_path = lock.path_for(
        settings.path,
        args.lock_dir or lock.default_dir(os.environ),
        None if shard is None else str(shard),
    )
    with lock.held(lock_path, wait_s=args.wait_lock):
        return _locked_run(args, settings, shard, done, report_path)


def _locked_run(
    args: argparse.Namespace,
    settings: config.Settings,
    shard: targets.Shard | None,
    done: frozenset[tuple[str, str]],
    report_path: Path,
) -> int:
    """
    Run the config while holding its lock; write report and journal.
    """
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
    progress = _progress(args, len(settings.targets) + len(settings.selectors))

    narrow = functools.partial(targets.narrow, shard=shard, done=done)
    try:
        with asyncio.Runner(loop_factory=_loop_factory()) as loop_runner:
            result, signal_number = loop_runner.run(
                _run(settings, credential, ssl_context, [run_journal, progress], narrow)
            )
    finally:
        run_journal.close()
        _restore_logs(args)

    document = report.build(result.outcomes, _facts(settings, result))
    if shard is not None:
        document["shard"] = {"index": shard.index, "count": shard.count}
    written = report.write(document, report_path)
    log.info("report.written", path=str(written))
    _print_summary(document, written)

    code = _run_exit_code(document, settings, result, signal_number)
    if args.metrics_file is not None:
        from orchestrator import metrics  # prometheus_client: only when asked

        metrics.write(document, args.metrics_file, exit_code=code)
        log.info("metrics.written", path=str(args.metrics_file))

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
    args: argparse.Namespace, settings: config.Settings, shard: targets.Shard
) -> config.Settings:
    """
    Divide rate_limit and concurrency among the shards, unless given as flags.

    The config's limits are for the whole job; N shards each taking all of
    them would send N times the rate the account was planned for.
    """
    rate_limit_per_s = settings.rate_limit_per_s
    if args.rate_limit is None:
        rate_limit_per_s /= shard.count
    concurrency = settings.concurrency
    if args.concurrency is None:
        concurrency = max(concurrency // shard.count, 1)

    return replace(settings, rate_limit_per_s=rate_limit_per_s, concurrency=concurrency)


def _progress(args: argparse.Namespace, total: int) -> RunProgress:
    """
    Return the run's progress display: a bar on a terminal, else log events.

    With the bar live, log lines go through its console so they print above it.
    """
    if not sys.stderr.isatty() or args.quiet:
        return RunProgress(total, interval_s=args.progress_every)
    console = Console(stderr=True)
    logs.configure(
        log_format=args.log_format,
        verbosity=min(args.verbose, 1),
        stream=cast(TextIO, FileProxy(console, sys.stderr)),
    )

    return RunProgress(total, console=console)


def _restore_logs(args: argparse.Namespace) -> None:
    verbosity = -1 if args.quiet else min(args.verbose, 1)
    logs.configure(log_format=args.log_format, verbosity=verbosity)


def _resumed(
    args: argparse.Namespace, settings: config.Settings
) -> frozenset[tuple[str, str]]:
    """
    Return the (project, dataset) pairs that succeeded in the run being resumed.

    Raises:
        ConfigError: the journal or report was written for another config and
            ``--force`` was not given.
    """
    if args.resume is None:
        return frozenset()
    before = journal.read(args.resume)
    if before.config_sha256 != settings.sha256 and not args.force:
        raise ConfigError(
            f"--resume {str(args.resume)!r} was written for config sha256 "
            f"{str(before.config_sha256)[:12]}, but {str(settings.path)!r} has "
            f"{settings.sha256[:12]}; pass --force to resume anyway"
        )
    done = before.succeeded()
    log.info("run.resumed", path=str(args.resume), succeeded_before=len(done))

    return done


def _loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    """
    Return uvloop's loop factory when uvloop is installed, else None (asyncio's).

    uvloop is optional: it cut the CPU per request when measured in bench/.
    """
    try:
        import uvloop  # optional: looked for at run time
    except ImportError:
        return None
    factory: Callable[[], asyncio.AbstractEventLoop] = uvloop.new_event_loop
    log.debug("run.event_loop_chosen", event_loop="uvloop")

    return factory


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


async def _run(
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


def _print_summary(document: dict[str, Any], path: Path) -> None:
    print(summary.line(document))
    states = document["summary"].get("sync_states")
    if states:
        tally = ", ".join(f"{count} {state}" for state, count in states.items())
        print(
            f"syncs: {tally}; {document['summary']['samples_added']} samples added, "
            f"{document['summary']['samples_deleted']} deleted "
            f"({document['summary']['status_polls']} status polls)"
        )
    stop_reason = document.get("stop_reason")
    if stop_reason:
        print(f"stopped early: {stop_reason}")
    refused = next(
        (r for r in document["results"] if r["reason"] in ("auth_failed", "tls_error")),
        None,
    )
    if refused is not None:
        print(f"refused: {refused['error_msg']}")
    if sys.stdout.isatty():
        summary.render(document, Console())
    print(f"report: {path}")


def _server_tls(cert: Path | None, key: Path | None) -> ssl.SSLContext | None:
    """
    Return the simulator's TLS context, or None to serve plain HTTP.

    Raises:
        ConfigError: only one of the two files given, or they do not load.
    """
    if cert is None and key is None:
        return None
    if cert is None or key is None:
        raise ConfigError("--tls-cert and --tls-key go together")
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    try:
        context.load_cert_chain(cert, key)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(f"--tls-cert/--tls-key: cannot load: {exc}") from exc

    return context


def _cmd_report_failures(args: argparse.Namespace) -> int:
    document = report.load(args.report)
    count = manifest.write_failures(document, args.report, args.output)
    if count == 0:
        print(
            f"every target in {args.report} succeeded or was skipped; no file written"
        )
        return EXIT_OK
    print(f"{count} targets that did not succeed written to {args.output}")
    print(f"next: modelarts-sync run {args.output}")

    return EXIT_OK


def _cmd_report_show(args: argparse.Namespace) -> int:
    document = report.load(args.report)
    print(summary.line(document))
    if document.get("stop_reason"):
        print(f"stopped early: {document['stop_reason']}")
    summary.render(document, Console())

    return EXIT_OK


def _cmd_report_merge(args: argparse.Namespace) -> int:
    documents = [report.load(path) for path in args.reports]
    merged = report.merge(documents, __version__)
    written = report.write(merged, args.output)
    print(f"{len(documents)} reports merged")
    _print_summary(merged, written)

    return report.exit_code(merged)


_STATUS_COLUMNS = (
    ("project_id", "PROJECT"),
    ("dataset_id", "DATASET"),
    ("dataset_name", "NAME"),
    ("state", "STATE"),
    ("add_sample_count", "ADDED"),
    ("deleted_sample_count", "DELETED"),
    ("total_sample_count", "TOTAL"),
    ("task_id", "TASK"),
    ("error", "ERROR"),
)


def _cmd_status(args: argparse.Namespace) -> int:
    """
    Print each target's current sync state; sends no POST.

    Exit 0 when every state was read, 1 when some could not be (unknown
    name, failed call), 3 when the credential was refused.
    """
    settings = _load_settings(args)
    ssl_context = tls_context(settings.ca_bundle)
    credential = auth.resolve(
        settings.auth, os.environ, endpoint=settings.endpoint, ssl_context=ssl_context
    )
    rows = asyncio.run(status.read_states(settings, credential, ssl_context))

    if args.json or not sys.stdout.isatty():
        print(json.dumps({"targets": rows}, ensure_ascii=False, indent=1))
    else:
        _print_table(rows)
    if any(row["error"] == "auth_failed" for row in rows):
        return EXIT_AUTH

    return EXIT_FAILED if any(row["error"] for row in rows) else EXIT_OK


def _print_table(rows: list[dict[str, Any]]) -> None:
    cells = [[title for _, title in _STATUS_COLUMNS]]
    for row in rows:
        cells.append([_cell(row, key) for key, _ in _STATUS_COLUMNS])
    widths = [max(len(line[i]) for line in cells) for i in range(len(_STATUS_COLUMNS))]
    for line in cells:
        print(
            "  ".join(
                cell.ljust(width) for cell, width in zip(line, widths, strict=True)
            ).rstrip()
        )


def _cell(row: dict[str, Any], key: str) -> str:
    if key == "error" and row["skipped"]:
        return f"skipped: {row['skipped']}"
    value = row[key]

    return "-" if value is None else str(value)


def _cmd_simulate(args: argparse.Namespace) -> int:
    from orchestrator import simulator  # the server is not needed for a run

    plan = simulator.load_plan(args.plan) if args.plan else simulator.Plan()
    simulator.serve_forever(
        plan,
        host=args.host,
        port=args.port,
        log_path=args.log,
        ssl_context=_server_tls(args.tls_cert, args.tls_key),
    )

    return EXIT_OK
