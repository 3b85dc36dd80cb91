"""
The scheduling examples in deploy/: each parses, and the CLI accepts its command.
"""

from __future__ import annotations

import shlex
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from orchestrator import cli

DEPLOY = Path(__file__).resolve().parent.parent / "deploy"


def accepted(argv: list[str]) -> Any:
    """
    Return the parsed arguments of ``modelarts-sync ARGV``; fail if refused.
    """
    assert Path(argv[0]).name == "modelarts-sync", argv
    try:
        return cli._parser().parse_args(argv[1:])
    except SystemExit:
        pytest.fail(f"the CLI refuses {shlex.join(argv)}")


def crontab_commands() -> Iterator[list[str]]:
    for line in (DEPLOY / "crontab").read_text().splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        command = shlex.split(line)[5:]
        yield [word for word in command if not word.startswith((">", "2>"))]


def systemd_values(path: Path, key: str) -> list[str]:
    """
    Return the values of ``key=``, joining backslash-continued lines as systemd does.
    """
    text = path.read_text().replace("\\\n", " ")
    prefix = f"{key}="
    return [
        line.removeprefix(prefix)
        for line in text.splitlines()
        if line.startswith(prefix)
    ]


def containers(path: Path) -> Iterator[dict[str, Any]]:
    for document in yaml.safe_load_all(path.read_text()):
        spec = document["spec"]
        if document["kind"] == "CronJob":
            spec = spec["jobTemplate"]["spec"]
        yield from spec["template"]["spec"]["containers"]


def test_crontab_line_runs_a_command_the_cli_accepts() -> None:
    """The cron line is a run with a report and metrics file."""
    (command,) = crontab_commands()

    args = accepted(command)

    assert args.command == "run"
    assert args.metrics_file is not None


def test_systemd_service_and_timer_are_consistent() -> None:
    """The service is a oneshot whose ExecStart the CLI accepts; the timer is daily."""
    service = DEPLOY / "systemd" / "modelarts-sync.service"
    (exec_start,) = systemd_values(service, "ExecStart")

    args = accepted(shlex.split(exec_start))

    assert args.command == "run"
    assert systemd_values(service, "Type") == ["oneshot"]
    timer = DEPLOY / "systemd" / "modelarts-sync.timer"
    assert systemd_values(timer, "OnCalendar") == ["*-*-* 02:15:00"]
    assert systemd_values(timer, "Persistent") == ["true"]


@pytest.mark.parametrize(
    "name",
    [
        pytest.param("cronjob.yaml", id="cronjob"),
        pytest.param("indexed-job.yaml", id="indexed-job"),
    ],
)
def test_kubernetes_containers_run_commands_the_cli_accepts(name: str) -> None:
    """Each container's command and args parse; credentials come from a Secret."""
    path = DEPLOY / "kubernetes" / name

    for container in containers(path):
        accepted([*container["command"], *container["args"]])
        secrets = [
            env["valueFrom"]["secretKeyRef"]
            for env in container["env"]
            if "secretKeyRef" in env.get("valueFrom", {})
        ]
        assert {ref["key"] for ref in secrets} == {"ak", "sk"}
        assert "/reports" in {m["mountPath"] for m in container["volumeMounts"]}


def test_cronjob_forbids_overlapping_runs() -> None:
    """concurrencyPolicy Forbid keeps a slow night from overlapping the next."""
    (cronjob,) = yaml.safe_load_all(
        (DEPLOY / "kubernetes" / "cronjob.yaml").read_text()
    )

    assert cronjob["spec"]["concurrencyPolicy"] == "Forbid"


def test_indexed_job_runs_one_shard_per_index() -> None:
    """completions equals the N of --shard auto/N, and the mode is Indexed."""
    path = DEPLOY / "kubernetes" / "indexed-job.yaml"
    (job,) = yaml.safe_load_all(path.read_text())
    (container,) = containers(path)

    args = accepted([*container["command"], *container["args"]])

    assert job["spec"]["completionMode"] == "Indexed"
    assert args.shard == f"auto/{job['spec']['completions']}"
