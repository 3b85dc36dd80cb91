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
import os
import signal
import ssl
import sys
from collections.abc import Sequence
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
    summary,
    targets,
    thresholds,
)
from orchestrator.client import ModelArtsClient, sync_path, tls_context
from orchestrator.errors import (
    ConfigError,
    LockHeldError,
    OrchestratorError,
    ReportError,
)
from orchestrator.progress import DEFAULT_INTERVAL_S, RunProgress
from orchestrator.report import Outcome
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
    _add_overrides(run)
    run.set_defaults(handler=_cmd_run)

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
        "--rate-limit", type=float, metavar="N", help="override rate_limit (per s)"
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
    )


def _cmd_validate(args: argparse.Namespace) -> int:
    settings = _load_settings(args)
    plan = targets.plan(settings)
    _print_plan(settings, plan, merged=len(settings.targets) - len(plan))
    for target in plan:
        print(f"  {target.project_id}/{target.dataset_id}")
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
        f"pacing      {settings.rate_limit_per_s:g}/s, "
        f"{settings.concurrency} in flight, timeout {settings.timeout_s:g} s"
    )
    print(
        f"retry       up to {settings.retry.max_attempts} attempts, backoff "
        f"{settings.retry.initial_backoff_s:g}-{settings.retry.max_backoff_s:g} s"
    )
    deadline = f"{settings.deadline_s:g} s" if settings.deadline_s else "none"
    print(f"deadline    {deadline}")
    resumed = f", {skipped} already succeeded" if skipped else ""
    print(
        f"targets     {len(plan)} ({merged} duplicates merged{resumed}); "
        f"at least {duration_s:.1f} s at the rate limit"
    )


def _dry_run(
    settings: config.Settings,
    plan: Sequence[config.Target],
    skipped: Sequence[Outcome],
    *,
    merged: int,
    shard: targets.Shard | None,
) -> int:
    """
    Print the plan and every request the run would send; send none.
    """
    _print_plan(settings, plan, merged=merged, skipped=len(skipped))
    if shard is not None:
        print(f"shard       {shard}: {len(plan) + len(skipped)} targets of this shard")
    print(f"requests    {len(plan)} first attempts, without retries:")
    for target in plan:
        path = sync_path(target.project_id, target.dataset_id)
        print(f"  POST {settings.endpoint}{path}")
    print("dry run; nothing was sent")

    return EXIT_OK


def _cmd_run(args: argparse.Namespace) -> int:
    settings = _load_settings(args)
    full_plan = targets.plan(settings)
    merged = len(settings.targets) - len(full_plan)
    shard = None
    if args.shard is not None:
        shard = targets.parse_shard(args.shard, os.environ)
        settings = _shard_limits(args, settings, shard)
        full_plan = targets.select_shard(full_plan, shard)
        log.info("run.sharded", shard=str(shard), targets=len(full_plan))
    args.resolved_shard = shard  # auto/N made concrete, for the lock and report
    plan, skipped = _resume(args, settings, full_plan)
    if args.dry_run:
        return _dry_run(settings, plan, skipped, merged=merged, shard=shard)
    report_path = args.report or report.default_path(datetime.now(UTC))
    _check_writable(report_path)
    lock_path = lock.path_for(
        settings.path,
        args.lock_dir or lock.default_dir(os.environ),
        None if shard is None else str(shard),
    )
    with lock.held(lock_path, wait_s=args.wait_lock):
        return _locked_run(args, settings, full_plan, plan, skipped, report_path)


def _locked_run(
    args: argparse.Namespace,
    settings: config.Settings,
    full_plan: tuple[config.Target, ...],
    plan: tuple[config.Target, ...],
    skipped: tuple[Outcome, ...],
    report_path: Path,
) -> int:
    """
    Run the plan while holding the config's lock; write report and journal.
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
    for outcome in skipped:
        run_journal.on_outcome(outcome)
    progress = _progress(args, len(plan))

    try:
        result, signal_number = asyncio.run(
            _run(settings, plan, credential, ssl_context, [run_journal, progress])
        )
    finally:
        run_journal.close()
        _restore_logs(args)

    outcomes = _in_plan_order(full_plan, (*skipped, *result.outcomes))
    document = report.build(outcomes, _facts(settings, result))
    shard: targets.Shard | None = args.resolved_shard
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


def _resume(
    args: argparse.Namespace,
    settings: config.Settings,
    plan: tuple[config.Target, ...],
) -> tuple[tuple[config.Target, ...], tuple[Outcome, ...]]:
    """
    Return the targets still to run and ``skipped`` outcomes for those done before.

    Raises:
        ConfigError: the journal or report was written for another config and
            ``--force`` was not given.
    """
    if args.resume is None:
        return plan, ()
    before = journal.read(args.resume)
    if before.config_sha256 != settings.sha256 and not args.force:
        raise ConfigError(
            f"--resume {str(args.resume)!r} was written for config sha256 "
            f"{str(before.config_sha256)[:12]}, but {str(settings.path)!r} has "
            f"{settings.sha256[:12]}; pass --force to resume anyway"
        )
    remaining, skipped = targets.skip_done(plan, before.succeeded())
    log.info(
        "run.resumed",
        path=str(args.resume),
        skipped=len(skipped),
        remaining=len(remaining),
    )

    return remaining, skipped


def _in_plan_order(
    plan: Sequence[config.Target], outcomes: Sequence[Outcome]
) -> tuple[Outcome, ...]:
    position = {(t.project_id, t.dataset_id): i for i, t in enumerate(plan)}

    return tuple(sorted(outcomes, key=lambda o: position[(o.project_id, o.dataset_id)]))


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
    plan: Sequence[config.Target],
    credential: auth.Auth,
    ssl_context: ssl.SSLContext | None,
    observers: Sequence[RunObserver],
) -> tuple[RunResult, int | None]:
    """
    Run the plan with SIGINT/SIGTERM wired to a graceful stop.

    The first signal stops dispatching and lets requests in flight finish
    within the grace period; a second one cancels them at once.
    """
    received: list[int] = []
    async with ModelArtsClient(
        settings.endpoint,
        credential,
        timeout_s=settings.timeout_s,
        concurrency=settings.concurrency,
        ssl_context=ssl_context,
    ) as client:
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
            async with _showing(observers):
                result = await runner.run(plan)
        finally:
            for number in _SIGNAL_EXIT:
                loop.remove_signal_handler(number)
            await credential.aclose()

    return result, (received[0] if received else None)


def _showing(
    observers: Sequence[RunObserver],
) -> contextlib.AbstractAsyncContextManager[None]:
    """
    Return the progress display's context among the observers, if one is there.
    """
    for observer in observers:
        if isinstance(observer, RunProgress):
            return observer.running()
    return contextlib.nullcontext()


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
