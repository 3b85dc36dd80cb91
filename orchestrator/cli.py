"""
The command line: arguments, subcommands, exit codes, and what humans read.

This is the only module that prints for people (stdout) and the one exit
point: an :class:`OrchestratorError` becomes one line on stderr and a named
exit code; anything else is a bug and keeps its traceback.

It reads and dispatches; the work is elsewhere. What ``run`` does between
its arguments and its summary (lock, resume, shard, the run itself, report,
metrics, exit code) is :mod:`orchestrator.job`, handed plain options rather
than the parsed namespace; the text of ``validate`` and ``run --dry-run`` is
:mod:`orchestrator.preview`; the codes are named in :mod:`orchestrator.exits`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import ssl
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import structlog
from rich.console import Console

from orchestrator import (
    __version__,
    auth,
    config,
    job,
    lock,
    logs,
    manifest,
    preview,
    report,
    status,
    summary,
)
from orchestrator.client import tls_context
from orchestrator.errors import (
    ConfigError,
    LockHeldError,
    OrchestratorError,
    ReportError,
)
from orchestrator.exits import (
    EXIT_AUTH,
    EXIT_BROKEN_PIPE,
    EXIT_FAILED,
    EXIT_LOCKED,
    EXIT_OK,
    EXIT_SIGINT,
    EXIT_SOFTWARE,
    EXIT_USAGE,
)
from orchestrator.progress import DEFAULT_INTERVAL_S

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

    logs.configure(log_format=args.log_format, verbosity=_verbosity(args))
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
    _print_lines(preview.validation_lines(settings))

    return EXIT_OK


def _cmd_run(args: argparse.Namespace) -> int:
    settings = _load_settings(args)
    options = _run_options(args)
    scope = job.scope_for(settings, options)
    if args.dry_run:
        _print_lines(preview.dry_run_lines(scope.settings, scope.shard, scope.done))
        return EXIT_OK

    return job.run(scope, options, on_report=_print_summary)


def _run_options(args: argparse.Namespace) -> job.Options:
    return job.Options(
        shard=args.shard,
        resume=args.resume,
        force=args.force,
        report_path=args.report,
        lock_dir=args.lock_dir,
        wait_lock_s=args.wait_lock,
        metrics_file=args.metrics_file,
        progress_every_s=args.progress_every,
        rate_limit_given=args.rate_limit is not None,
        concurrency_given=args.concurrency is not None,
        log_format=args.log_format,
        verbosity=_verbosity(args),
    )


def _verbosity(args: argparse.Namespace) -> int:
    return -1 if args.quiet else min(args.verbose, 1)


def _print_lines(lines: Iterable[str]) -> None:
    for line in lines:
        print(line)


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
    refusals = ("auth_failed", "tls_error")
    refused = None
    # The summary's counts say whether to look: a run's results are built as
    # they are read (0.7 s for 100,000).
    if any(reason in document["summary"]["reasons"] for reason in refusals):
        refused = next(r for r in document["results"] if r["reason"] in refusals)
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
