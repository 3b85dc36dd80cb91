"""
The command line: arguments, subcommands, exit codes, and what humans read.

This is the only module that prints for people (stdout) and the one exit
point: an :class:`OrchestratorError` becomes one line on stderr and a named
exit code; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import ssl
import sys
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import structlog

from orchestrator import __version__, auth, config, logs, report, targets
from orchestrator.client import ModelArtsClient, tls_context
from orchestrator.errors import (
    ConfigError,
    LockHeldError,
    OrchestratorError,
    ReportError,
)
from orchestrator.runner import Runner, RunResult

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_AUTH = 3
EXIT_LOCKED = 4
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
    except KeyboardInterrupt:  # Ctrl-C before the run installed its handlers
        print("modelarts-sync: interrupted before the run started", file=sys.stderr)
        return EXIT_SIGINT

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
    _add_overrides(run)
    run.set_defaults(handler=_cmd_run)

    validate = commands.add_parser(
        "validate", parents=[common], help="check CONFIG and print the plan"
    )
    validate.add_argument("config", type=Path, metavar="CONFIG")
    _add_overrides(validate)
    validate.set_defaults(handler=_cmd_validate)

    simulate = commands.add_parser(
        "simulate", parents=[common], help="serve a ModelArts stand-in on loopback"
    )
    simulate.add_argument("--host", default="127.0.0.1")
    simulate.add_argument("--port", type=int, default=0, help="0 picks a free port")
    simulate.add_argument("--plan", type=Path, metavar="FILE", help="fault plan")
    simulate.add_argument(
        "--log", type=Path, metavar="FILE", help="append each request as JSON"
    )
    simulate.set_defaults(handler=_cmd_simulate)

    return parser


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
    )


def _cmd_validate(args: argparse.Namespace) -> int:
    settings = _load_settings(args)
    plan = targets.plan(settings)
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
    print(
        f"targets     {len(plan)} ({len(settings.targets) - len(plan)} duplicates "
        f"merged); at least {duration_s:.1f} s at the rate limit"
    )
    for target in plan:
        print(f"  {target.project_id}/{target.dataset_id}")
    print("valid; nothing was sent")

    return EXIT_OK


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
    plan = targets.plan(settings)
    ssl_context = tls_context(settings.ca_bundle)
    credential = auth.resolve(
        settings.auth, os.environ, endpoint=settings.endpoint, ssl_context=ssl_context
    )
    report_path = args.report or report.default_path(datetime.now(UTC))
    _check_writable(report_path)
    log.info("run.configured", credential=credential.source, report=str(report_path))

    with asyncio.Runner(loop_factory=_loop_factory()) as loop_runner:
        result, signal_number = loop_runner.run(
            _run(settings, plan, credential, ssl_context)
        )

    document = report.build(result.outcomes, _facts(settings, result))
    written = report.write(document, report_path)
    log.info("report.written", path=str(written))
    _print_summary(document, written)

    if signal_number is not None:
        return _SIGNAL_EXIT[signal.Signals(signal_number)]
    if result.stop_reason == "tls_error":
        return EXIT_USAGE
    if any(outcome.reason == "auth_failed" for outcome in result.outcomes):
        return EXIT_AUTH

    return report.exit_code(document)


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
    plan: Sequence[config.Target],
    credential: auth.Auth,
    ssl_context: ssl.SSLContext | None,
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
        runner = Runner(settings, client)

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
            result = await runner.run(plan)
        finally:
            for number in _SIGNAL_EXIT:
                loop.remove_signal_handler(number)
            await credential.aclose()

    return result, (received[0] if received else None)


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
    summary = document["summary"]
    counts = ", ".join(
        f"{summary[status]} {status}"
        for status in ("succeeded", "failed", "cancelled", "skipped")
        if summary[status]
    )
    print(
        f"{summary['total']} targets: {counts or 'nothing to do'} "
        f"in {document['duration_s']:.1f} s "
        f"({summary['attempts']} requests, {summary['retries']} retries, "
        f"{summary['throttled']} throttled)"
    )
    stop_reason = document.get("stop_reason")
    if stop_reason:
        print(f"stopped early: {stop_reason}")
    print(f"report: {path}")


def _cmd_simulate(args: argparse.Namespace) -> int:
    from orchestrator import simulator  # the server is not needed for a run

    plan = simulator.load_plan(args.plan) if args.plan else simulator.Plan()
    simulator.serve_forever(plan, host=args.host, port=args.port, log_path=args.log)

    return EXIT_OK
