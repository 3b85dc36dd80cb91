"""
The command line as users and schedulers run it: real processes, real server.
"""

from __future__ import annotations

import asyncio
import json
import os
import pty
import signal
import ssl
import subprocess
import sys
from collections import Counter
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import trustme
import yaml

from orchestrator import report
from orchestrator.simulator import Plan, Simulator
from tests.conftest import PROJECT, SimProcess, cli_env

StartSim = Callable[[dict[str, Any]], SimProcess]
EXIT_TIMEOUT_S = 60


def write_config(tmp_path: Path, url: str, count: int = 5, **fields: Any) -> Path:
    """
    Write a config for ``count`` targets against ``url`` with quick retries.
    """
    document: dict[str, Any] = {
        "endpoint": url,
        "rate_limit": 200,
        "concurrency": 4,
        "timeout": 5,
        "retry": {"max_attempts": 3, "initial_backoff": 0.05, "max_backoff": 0.2},
        "targets": [
            {"project_id": PROJECT, "dataset_id": f"ds-{i:04d}"}
            for i in range(1, count + 1)
        ],
    }
    document.update(fields)
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(document, sort_keys=False))
    return path


def cli(
    *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """
    Run ``python -m orchestrator ARGS`` to completion and capture its output.
    """
    return subprocess.run(
        [sys.executable, "-m", "orchestrator", *args],
        capture_output=True,
        text=True,
        env=env if env is not None else cli_env(),
        timeout=EXIT_TIMEOUT_S,
        check=False,
    )


def start_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "orchestrator", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env if env is not None else cli_env(),
    )


def wait_for_log_event(process: subprocess.Popen[str], event: str) -> None:
    """
    Read the child's JSON log lines until ``event`` appears.
    """
    assert process.stderr is not None
    for line in process.stderr:
        if json.loads(line).get("event") == event:
            return
    raise AssertionError(f"the process ended without logging {event}")


def load_report(path: Path) -> dict[str, Any]:
    document: dict[str, Any] = json.loads(path.read_text())
    jsonschema.Draft202012Validator(report.schema()).validate(document)
    return document


def test_run_syncs_everything_and_writes_a_valid_report(
    tmp_path: Path, sim_process: StartSim
) -> None:
    """A healthy run exits 0, prints a summary and writes a schema-valid report."""
    sim = sim_process({"faults": {"ds-0002": [503]}})
    config = write_config(tmp_path, sim.url, count=6)
    report_path = tmp_path / "out" / "report.json"

    done = cli("run", str(config), "--report", str(report_path))

    assert done.returncode == 0, done.stderr
    assert "6 targets: 6 succeeded" in done.stdout
    assert str(report_path) in done.stdout
    document = load_report(report_path)
    assert document["summary"]["succeeded"] == 6
    assert document["summary"]["retries"] == 1
    assert document["summary"]["attempts"] == len(sim.requests()) == 7


def test_run_logs_json_lines_when_stderr_is_not_a_terminal(
    tmp_path: Path, sim_process: StartSim
) -> None:
    """Every stderr line is a JSON object with an event name."""
    sim = sim_process({})
    config = write_config(tmp_path, sim.url, count=2)

    done = cli("run", str(config), "--report", str(tmp_path / "r.json"))

    events = [json.loads(line)["event"] for line in done.stderr.splitlines()]
    assert events.count("sync.accepted") == 2
    assert "run.started" in events
    assert "report.written" in events


def test_failed_target_gives_exit_1(tmp_path: Path, sim_process: StartSim) -> None:
    """One missing dataset makes the exit code 1 and the report says not_found."""
    sim = sim_process({"always": {"ds-0001": {"status": 404}}})
    config = write_config(tmp_path, sim.url, count=3)
    report_path = tmp_path / "r.json"

    done = cli("run", str(config), "--report", str(report_path))

    assert done.returncode == 1
    results = load_report(report_path)["results"]
    assert [r["reason"] for r in results] == ["not_found", None, None]


def test_refused_credential_gives_exit_3(tmp_path: Path, sim_process: StartSim) -> None:
    """A 401 stops the run: exit 3, the rest cancelled with auth_failed."""
    sim = sim_process({})
    config = write_config(tmp_path, sim.url, count=20, concurrency=1)
    report_path = tmp_path / "r.json"

    done = cli(
        "run",
        str(config),
        "--report",
        str(report_path),
        env=cli_env(MODELARTS_AUTH_TOKEN="not-the-token"),
    )

    assert done.returncode == 3
    summary = load_report(report_path)["summary"]
    assert summary["failed"] == len(sim.requests()) == 1
    assert summary["cancelled"] == 19


def test_deadline_gives_exit_1_and_cancelled_results(
    tmp_path: Path, sim_process: StartSim
) -> None:
    """A run cut by its deadline exits 1 with every target accounted for."""
    sim = sim_process({})
    config = write_config(tmp_path, sim.url, count=30, rate_limit=10, deadline=0.5)
    report_path = tmp_path / "r.json"

    done = cli("run", str(config), "--report", str(report_path))

    assert done.returncode == 1
    document = load_report(report_path)
    reasons = Counter(r["reason"] for r in document["results"])
    assert document["stop_reason"] == "deadline"
    assert reasons["deadline"] == 30 - len(sim.requests())
    assert document["summary"]["total"] == 30


@pytest.mark.parametrize(
    ("signal_number", "exit_code"),
    [
        pytest.param(signal.SIGTERM, 143, id="sigterm"),
        pytest.param(signal.SIGINT, 130, id="sigint"),
    ],
)
def test_signal_mid_run_writes_a_complete_report(
    tmp_path: Path, sim_process: StartSim, signal_number: int, exit_code: int
) -> None:
    """A signal stops dispatch, in-flight requests finish, every target is reported."""
    sim = sim_process({"latency_ms": 200})
    config = write_config(tmp_path, sim.url, count=50, rate_limit=10)
    report_path = tmp_path / "r.json"
    process = start_cli("run", str(config), "--report", str(report_path))

    sim.wait_for_requests(5)
    process.send_signal(signal_number)
    _, stderr = process.communicate(timeout=EXIT_TIMEOUT_S)

    assert process.returncode == exit_code, stderr
    assert "Traceback" not in stderr
    document = load_report(report_path)
    statuses = Counter(r["status"] for r in document["results"])
    assert statuses["succeeded"] == len(sim.requests())
    assert statuses["succeeded"] + statuses["cancelled"] == 50
    assert document["stop_reason"] == "interrupted"


def test_second_signal_cancels_requests_in_flight(
    tmp_path: Path, sim_process: StartSim
) -> None:
    """With every request hung, a second SIGINT ends the run at once."""
    sim = sim_process({"always": {f"ds-{i:04d}": "hang" for i in range(1, 5)}})
    config = write_config(tmp_path, sim.url, count=4, timeout=300, shutdown_grace=300)
    report_path = tmp_path / "r.json"
    process = start_cli("run", str(config), "--report", str(report_path))

    sim.wait_for_requests(4)
    process.send_signal(signal.SIGINT)
    wait_for_log_event(process, "run.stopping")
    process.send_signal(signal.SIGINT)
    process.communicate(timeout=EXIT_TIMEOUT_S)

    assert process.returncode == 130
    results = load_report(report_path)["results"]
    assert {r["status"] for r in results} == {"cancelled"}
    assert all(r["history"][0]["ambiguous"] for r in results)


BAD_CONFIGS = [
    pytest.param({"rate_limt": 5}, "rate_limt", id="unknown-key"),
    pytest.param(
        {"targets": [{"project_id": PROJECT, "dataset_id": "a/../b"}]},
        "targets[0].dataset_id",
        id="slash-in-id",
    ),
    pytest.param(
        {"targets": [{"project_id": "p 1", "dataset_id": "d"}]},
        "targets[0].project_id",
        id="space-in-id",
    ),
    pytest.param({"targets": []}, "targets", id="empty-targets"),
    pytest.param({"rate_limit": -1}, "rate_limit", id="negative-rate"),
    pytest.param({"concurrency": "many"}, "concurrency", id="wrong-type"),
    pytest.param({"endpoint": "http://example.com"}, "endpoint", id="plain-http"),
    pytest.param({"endpoint": "modelarts.example"}, "endpoint", id="relative"),
    pytest.param({"retry": {"max_attempts": 0}}, "retry.max_attempts", id="zero"),
]


@pytest.mark.parametrize(("fields", "field_path"), BAD_CONFIGS)
def test_config_error_exits_2_with_one_line_and_sends_nothing(
    tmp_path: Path, sim_process: StartSim, fields: dict[str, Any], field_path: str
) -> None:
    """Every config error: exit 2, one line naming file and field, no request."""
    sim = sim_process({})
    config = write_config(tmp_path, sim.url, **fields)

    done = cli("run", str(config), "--report", str(tmp_path / "r.json"))

    assert done.returncode == 2
    assert done.stderr.count("\n") == 1, done.stderr
    assert "Traceback" not in done.stderr
    assert "config.yaml:" in done.stderr
    assert field_path in done.stderr
    assert sim.requests(kind=None) == []
    assert not (tmp_path / "r.json").exists()


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        pytest.param("targets: [unclosed", "config.yaml", id="yaml-syntax"),
        pytest.param("\x00\x01binary", "config.yaml", id="binary"),
        pytest.param("", "config.yaml", id="empty"),
    ],
)
def test_unparseable_config_exits_2(tmp_path: Path, text: str, needle: str) -> None:
    """A file that is not YAML at all is still one clean line and exit 2."""
    path = tmp_path / "config.yaml"
    path.write_text(text)

    done = cli("run", str(path))

    assert done.returncode == 2
    assert "Traceback" not in done.stderr
    assert needle in done.stderr


def test_missing_config_file_exits_2(tmp_path: Path) -> None:
    """A config path that does not exist is named in the error."""
    done = cli("validate", str(tmp_path / "nope.yaml"))

    assert done.returncode == 2
    assert "nope.yaml" in done.stderr
    assert "Traceback" not in done.stderr


def test_missing_credential_exits_2_and_sends_nothing(
    tmp_path: Path, sim_process: StartSim
) -> None:
    """Without any credential the run refuses to start and says where it looked."""
    sim = sim_process({})
    config = write_config(tmp_path, sim.url)
    env = cli_env()
    del env["MODELARTS_AUTH_TOKEN"]

    done = cli("run", str(config), env=env)

    assert done.returncode == 2
    assert "MODELARTS_AUTH_TOKEN" in done.stderr
    assert sim.requests(kind=None) == []


def test_unwritable_report_exits_2_before_sending(
    tmp_path: Path, sim_process: StartSim
) -> None:
    """A report path that cannot be written is refused before any request."""
    sim = sim_process({})
    config = write_config(tmp_path, sim.url)
    blocker = tmp_path / "file"
    blocker.write_text("")

    done = cli("run", str(config), "--report", str(blocker / "sub" / "r.json"))

    assert done.returncode == 2
    assert "Traceback" not in done.stderr
    assert sim.requests(kind=None) == []


def test_overrides_replace_file_values(tmp_path: Path, sim_process: StartSim) -> None:
    """--endpoint, --rate-limit and --concurrency win over the file."""
    sim = sim_process({})
    config = write_config(tmp_path, "https://unused.example.com", count=3)

    done = cli(
        "run",
        str(config),
        "--endpoint",
        sim.url,
        "--rate-limit",
        "50",
        "--concurrency",
        "2",
        "--report",
        str(tmp_path / "r.json"),
    )

    assert done.returncode == 0, done.stderr
    document = load_report(tmp_path / "r.json")
    assert document["config"]["rate_limit"] == 50
    assert document["config"]["concurrency"] == 2
    assert len(sim.requests()) == 3


def test_bad_override_exits_2(tmp_path: Path) -> None:
    """A bad flag value is named in a one-line error."""
    config = write_config(tmp_path, "https://modelarts.example.com")

    done = cli("validate", str(config), "--rate-limit", "0")

    assert done.returncode == 2
    assert "--rate-limit" in done.stderr


def test_validate_prints_the_plan_and_sends_nothing(
    tmp_path: Path, sim_process: StartSim
) -> None:
    """validate lists targets (duplicates merged), the credential source, no request."""
    sim = sim_process({})
    config = write_config(tmp_path, sim.url, count=3)
    document = yaml.safe_load(config.read_text())
    document["targets"].append(dict(document["targets"][0]))
    config.write_text(yaml.safe_dump(document))

    done = cli("validate", str(config))

    assert done.returncode == 0, done.stderr
    assert "targets     3 (1 duplicates merged)" in done.stdout
    assert "token from $MODELARTS_AUTH_TOKEN" in done.stdout
    assert f"{PROJECT}/ds-0003" in done.stdout
    assert sim.requests(kind=None) == []


def test_console_script_matches_python_m(tmp_path: Path) -> None:
    """`modelarts-sync` and `python -m orchestrator` are the same program."""
    config = write_config(tmp_path, "https://modelarts.example.com")
    script = Path(sys.executable).parent / "modelarts-sync"

    by_module = cli("validate", str(config))
    by_script = subprocess.run(
        [str(script), "validate", str(config)],
        capture_output=True,
        text=True,
        env=cli_env(),
        timeout=EXIT_TIMEOUT_S,
        check=False,
    )

    assert by_script.returncode == by_module.returncode == 0
    assert by_script.stdout == by_module.stdout


SENTINEL = "SENTINEL-token-7f3a9c"


@pytest.mark.parametrize(
    "scenario",
    [
        pytest.param("success", id="success"),
        pytest.param("refused", id="refused"),
        pytest.param("faults", id="faults"),
    ],
)
def test_token_never_appears_in_output_or_report(
    tmp_path: Path, sim_process: StartSim, scenario: str
) -> None:
    """The token stays out of stdout, stderr (debug logs too) and the report."""
    token = SENTINEL if scenario != "refused" else "different-token"
    plan: dict[str, Any] = {"token": token}
    if scenario == "faults":
        plan["faults"] = {"ds-0001": [503, "reset", {"status": 429}]}
        plan["always"] = {"ds-0002": {"status": 403}}
    sim = sim_process(plan)
    config = write_config(tmp_path, sim.url, count=3)
    report_path = tmp_path / "r.json"
    env = cli_env(MODELARTS_AUTH_TOKEN=SENTINEL)

    ran = cli("run", str(config), "-v", "--report", str(report_path), env=env)
    checked = cli("validate", str(config), "-v", env=env)

    for text in (ran.stdout, ran.stderr, checked.stdout, checked.stderr):
        assert SENTINEL not in text
    assert SENTINEL not in report_path.read_text()
    assert ran.returncode in (0, 1, 3)


# Authentication and TLS, end to end ------------------------------------------

AK = "AKSENTINEL00000001"
SK_SENTINEL = "SENTINEL-sk-4b1d9e"
SECURITY_TOKEN_SENTINEL = "SENTINEL-sts-8c2e7a"
PASSWORD_SENTINEL = "SENTINEL-pw-3f6a0b"


async def cli_async(*args: str, env: dict[str, str]) -> tuple[int, str, str]:
    """
    Run the CLI without blocking the event loop an in-process server runs on.
    """
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "orchestrator",
        *args,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    stdout, stderr = await asyncio.wait_for(process.communicate(), EXIT_TIMEOUT_S)
    assert process.returncode is not None
    return process.returncode, stdout.decode(), stderr.decode()


@pytest.fixture
async def tls_simulator(tmp_path: Path) -> AsyncIterator[tuple[Simulator, Path]]:
    """
    Serve the simulator over HTTPS with a certificate from a throwaway CA.
    """
    ca = trustme.CA()
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1", "localhost").configure_cert(context)
    bundle = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(bundle))
    sim = Simulator(Plan())
    await sim.start(ssl_context=context)
    try:
        yield sim, bundle
    finally:
        await sim.stop()


async def test_unknown_ca_stops_with_exit_2_and_a_clean_message(
    tmp_path: Path, tls_simulator: tuple[Simulator, Path]
) -> None:
    """A certificate from an unknown CA: one clear line, exit 2, nothing retried."""
    sim, _ = tls_simulator
    config = write_config(tmp_path, sim.url, count=5)

    code, stdout, stderr = await cli_async(
        "run", str(config), "--report", str(tmp_path / "r.json"), env=cli_env()
    )

    assert code == 2
    assert "Traceback" not in stderr
    assert "TLS handshake with 127.0.0.1 failed" in stdout
    assert "ca_bundle" in stdout
    assert sim.received == []
    summary = json.loads((tmp_path / "r.json").read_text())["summary"]
    assert summary["attempts"] == 0
    assert summary["reasons"]["tls_error"] >= 1


async def test_ca_bundle_trusts_a_private_ca(
    tmp_path: Path, tls_simulator: tuple[Simulator, Path]
) -> None:
    """With ca_bundle naming the CA, the same server is trusted and the run passes."""
    sim, bundle = tls_simulator
    config = write_config(tmp_path, sim.url, count=3, ca_bundle=str(bundle))

    code, _, stderr = await cli_async(
        "run", str(config), "--report", str(tmp_path / "r.json"), env=cli_env()
    )

    assert code == 0, stderr
    assert len(sim.sync_requests()) == 3


def test_aksk_from_the_environment_signs_and_validate_names_it(
    tmp_path: Path, sim_process: StartSim
) -> None:
    """AK/SK from the SDK variables sign every request; validate shows the AK masked."""
    sim = sim_process({"token": None, "access_keys": {AK: SK_SENTINEL}})
    config = write_config(tmp_path, sim.url, count=3)
    env = cli_env(HUAWEICLOUD_SDK_AK=AK, HUAWEICLOUD_SDK_SK=SK_SENTINEL)
    del env["MODELARTS_AUTH_TOKEN"]

    checked = cli("validate", str(config), env=env)
    ran = cli("run", str(config), "--report", str(tmp_path / "r.json"), env=env)

    assert "access key AKSE...0001 from $HUAWEICLOUD_SDK_AK" in checked.stdout
    assert ran.returncode == 0, ran.stderr
    assert len(sim.requests()) == 3


def test_wrong_secret_key_exits_3_after_one_request(
    tmp_path: Path, sim_process: StartSim
) -> None:
    """A refused signature stops the run at once: one request, exit 3."""
    sim = sim_process({"token": None, "access_keys": {AK: "the-real-secret"}})
    config = write_config(tmp_path, sim.url, count=30, concurrency=1)
    env = cli_env(HUAWEICLOUD_SDK_AK=AK, HUAWEICLOUD_SDK_SK=SK_SENTINEL)
    del env["MODELARTS_AUTH_TOKEN"]

    done = cli("run", str(config), "--report", str(tmp_path / "r.json"), env=env)

    assert done.returncode == 3
    assert "refused: Incorrect IAM authentication information" in done.stdout
    assert len(sim.requests()) == 1


def test_refused_iam_password_exits_3_without_posting(
    tmp_path: Path, sim_process: StartSim
) -> None:
    """A wrong IAM password: one token request, no sync POST, exit 3."""
    sim = sim_process({"iam_password": "the-right-password"})
    auth = {"type": "password", "user": "ops", "domain": "acme", "password_env": "PW"}
    config = write_config(tmp_path, sim.url, count=4, auth=auth)

    done = cli(
        "run",
        str(config),
        "--report",
        str(tmp_path / "r.json"),
        env=cli_env(PW=PASSWORD_SENTINEL),
    )

    assert done.returncode == 3
    assert sim.requests() == []
    assert len(sim.requests(kind="token")) == 1


def test_password_in_the_config_file_is_refused(tmp_path: Path) -> None:
    """A password written in the YAML is refused, pointing to password_env."""
    auth = {"type": "password", "user": "ops", "domain": "acme", "password": "x"}
    config = write_config(tmp_path, "https://modelarts.example.com", auth=auth)

    done = cli("validate", str(config))

    assert done.returncode == 2
    assert "auth.password" in done.stderr
    assert "password_env" in done.stderr


SECRET_SCENARIOS = [
    pytest.param("aksk", "ok", id="aksk-success"),
    pytest.param("aksk", "faults", id="aksk-faults"),
    pytest.param("aksk", "refused", id="aksk-refused"),
    pytest.param("password", "ok", id="password-success"),
    pytest.param("password", "faults", id="password-faults"),
    pytest.param("password", "refused", id="password-refused"),
]


@pytest.mark.parametrize(("kind", "scenario"), SECRET_SCENARIOS)
def test_no_secret_reaches_output_or_report(
    tmp_path: Path, sim_process: StartSim, kind: str, scenario: str
) -> None:
    """SK, security token and password stay out of stdout, stderr (-v) and report."""
    plan: dict[str, Any] = {}
    env = cli_env()
    del env["MODELARTS_AUTH_TOKEN"]
    fields: dict[str, Any] = {}
    if kind == "aksk":
        secret = SK_SENTINEL if scenario != "refused" else "another-secret"
        plan = {"token": None, "access_keys": {AK: secret}}
        env |= {
            "HUAWEICLOUD_SDK_AK": AK,
            "HUAWEICLOUD_SDK_SK": SK_SENTINEL,
            "HUAWEICLOUD_SDK_SECURITY_TOKEN": SECURITY_TOKEN_SENTINEL,
        }
    else:
        right = PASSWORD_SENTINEL if scenario != "refused" else "another-password"
        plan = {"iam_password": right}
        env["PW"] = PASSWORD_SENTINEL
        fields["auth"] = {
            "type": "password",
            "user": "ops",
            "domain": "acme",
            "password_env": "PW",
        }
    if scenario == "faults":
        plan["faults"] = {"ds-0001": [503, "reset", {"status": 429}]}
        plan["always"] = {"ds-0002": {"status": 403}}
    sim = sim_process(plan)
    config = write_config(tmp_path, sim.url, count=3, **fields)
    report_path = tmp_path / "r.json"

    ran = cli("run", str(config), "-v", "--report", str(report_path), env=env)
    checked = cli("validate", str(config), "-v", env=env)

    outputs = [ran.stdout, ran.stderr, checked.stdout, checked.stderr]
    outputs.append(report_path.read_text())
    outputs.append(sim.log_path.read_text())
    for sentinel in (SK_SENTINEL, SECURITY_TOKEN_SENTINEL, PASSWORD_SENTINEL):
        assert not any(sentinel in text for text in outputs)
    assert ran.returncode in (0, 1, 3)


def test_unexpected_error_keeps_its_traceback_without_the_secret(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A bug's traceback is logged in full, with registered secrets masked."""
    from orchestrator import cli as cli_module
    from orchestrator.auth import Secret

    Secret(SK_SENTINEL)

    def explode(args: Any) -> int:
        raise RuntimeError(f"bug while holding {SK_SENTINEL}")

    monkeypatch.setattr(cli_module, "_cmd_validate", explode)
    code = cli_module.main(["validate", "x.yaml", "--log-format", "json"])

    captured = capsys.readouterr()
    assert code == 70
    assert "Traceback" in captured.err
    assert "RuntimeError: bug while holding <redacted>" in captured.err
    assert SK_SENTINEL not in captured.err + captured.out


def test_wait_reports_sync_states_and_fails_on_timeout(
    tmp_path: Path, sim_process: StartSim
) -> None:
    """With --wait a completed sync succeeds, a stuck one fails: exit 1."""
    catalogue = {
        PROJECT: [{"dataset_id": f"ds-{i:04d}", "sample_count": 7} for i in range(1, 4)]
    }
    sim = sim_process(
        {"sync_duration_ms": 100, "stuck_syncs": ["ds-0002"], "catalogue": catalogue}
    )
    wait = {"poll_interval": 0.05, "timeout": 1}
    config = write_config(tmp_path, sim.url, count=3, wait=wait)
    report_path = tmp_path / "r.json"

    done = cli("run", str(config), "--wait", "--report", str(report_path))

    assert done.returncode == 1, done.stderr
    document = load_report(report_path)
    results = {r["dataset_id"]: r for r in document["results"]}
    assert results["ds-0001"]["sync"]["state"] == "COMPLETED"
    assert (results["ds-0002"]["status"], results["ds-0002"]["reason"]) == (
        "failed",
        "sync_timeout",
    )
    summary = document["summary"]
    assert summary["sync_states"] == {"COMPLETED": 2, "RUNNING": 1}
    assert summary["samples_added"] == 14
    assert summary["status_polls"] == len(sim.requests("status"))
    assert "syncs: 2 COMPLETED, 1 RUNNING; 14 samples added" in done.stdout


def test_names_and_globs_resolve_before_any_post(
    tmp_path: Path, sim_process: StartSim
) -> None:
    """Named targets resolve to ids shown beside their names; bad names fail alone."""
    catalogue = {
        PROJECT: [
            {"dataset_id": "id-cars", "dataset_name": "cars"},
            {"dataset_id": "id-bikes", "dataset_name": "bikes-2026"},
            {
                "dataset_id": "id-text",
                "dataset_name": "bikes-text",
                "dataset_type": 100,
            },
        ]
    }
    sim = sim_process({"catalogue": catalogue, "list_offset_mode": "pages"})
    chosen = [
        {"project_id": PROJECT, "dataset_name": "cars"},
        {"project_id": PROJECT, "dataset_names": ["bikes-*"]},
        {"project_id": PROJECT, "dataset_name": "trucks"},
    ]
    config = write_config(tmp_path, sim.url, targets=chosen)
    report_path = tmp_path / "r.json"

    done = cli("run", str(config), "--report", str(report_path))

    assert done.returncode == 1, done.stderr
    rows = [
        (r["dataset_name"], r["dataset_id"], r["status"], r["reason"])
        for r in load_report(report_path)["results"]
    ]
    assert rows == [
        ("cars", "id-cars", "succeeded", None),
        ("bikes-2026", "id-bikes", "succeeded", None),
        ("bikes-text", "id-text", "skipped", "unsupported_type"),
        ("trucks", None, "failed", "not_found"),
    ]
    posted = [row["dataset_id"] for row in sim.requests("sync")]
    assert sorted(posted) == ["id-bikes", "id-cars"]
    first_post = min(row["seq"] for row in sim.requests("sync"))
    assert all(row["seq"] < first_post for row in sim.requests("list"))


def test_status_prints_states_as_json_and_posts_nothing(
    tmp_path: Path, sim_process: StartSim
) -> None:
    """status reads each target's sync state; --json gives one JSON document."""
    catalogue = {
        PROJECT: [
            {"dataset_id": "ds-0001", "dataset_name": "one"},
            {"dataset_id": "ds-0002", "dataset_name": "two"},
            {"dataset_id": "ds-0009", "dataset_name": "text", "dataset_type": 102},
        ]
    }
    sim = sim_process({"catalogue": catalogue, "stuck_syncs": ["ds-0001"]})
    chosen = [
        {"project_id": PROJECT, "datasets": "all"},
        {"project_id": PROJECT, "dataset_name": "three"},
    ]
    config = write_config(tmp_path, sim.url, targets=chosen)
    assert cli("run", str(config), "--report", str(tmp_path / "r.json")).returncode

    done = cli("status", str(config), "--json")

    assert done.returncode == 1, done.stderr
    rows = json.loads(done.stdout)["targets"]
    assert [
        (r["dataset_name"], r["state"], r["error"], r["skipped"]) for r in rows
    ] == [
        ("one", "RUNNING", None, None),
        ("two", "COMPLETED", None, None),
        ("text", None, None, "unsupported_type"),
        ("three", None, "not_found", None),
    ]
    assert len(sim.requests("sync")) == 2, "status itself sent no POST"


def test_wait_config_errors_name_the_field(tmp_path: Path) -> None:
    """A bad wait setting is refused with file, line and field; exit 2."""
    config = write_config(tmp_path, "http://127.0.0.1:9", wait={"poll_interval": 0})

    done = cli("validate", str(config))

    assert done.returncode == 2
    assert "wait.poll_interval: must be a number > 0" in done.stderr


def test_status_prints_a_table_on_a_terminal(
    tmp_path: Path, sim_process: StartSim
) -> None:
    """With stdout on a terminal, status prints an aligned table, not JSON."""
    catalogue = {PROJECT: [{"dataset_id": "ds-0001", "dataset_name": "one"}]}
    sim = sim_process({"catalogue": catalogue})
    chosen = [{"project_id": PROJECT, "dataset_name": "one"}]
    config = write_config(tmp_path, sim.url, targets=chosen)
    primary, secondary = pty.openpty()
    try:
        done = subprocess.run(
            [sys.executable, "-m", "orchestrator", "status", str(config), "-q"],
            stdout=secondary,
            stderr=subprocess.PIPE,
            env=cli_env(),
            timeout=EXIT_TIMEOUT_S,
            check=False,
        )
        os.close(secondary)
        output = _read_all(primary)
    finally:
        os.close(primary)

    assert done.returncode == 0, done.stderr
    header, row = output.splitlines()[:2]
    assert header.split() == [
        *("PROJECT", "DATASET", "NAME", "STATE", "ADDED", "DELETED", "TOTAL"),
        *("TASK", "ERROR"),
    ]
    assert row.split()[:4] == [PROJECT, "ds-0001", "one", "NOT_EXIST"]
    assert header.index("STATE") == row.index("NOT_EXIST")


def _read_all(fd: int) -> str:
    chunks = []
    while True:
        try:
            chunk = os.read(fd, 4096)
        except OSError:  # Linux reports EIO once the other side is closed
            break
        if not chunk:
            break
        chunks.append(chunk)
    return b"".join(chunks).decode()


def test_run_in_process_gives_back_the_callers_garbage_collector(
    tmp_path: Path, sim_process: StartSim, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A run embedded in a program tunes the collector only while it lasts."""
    import gc

    from orchestrator import cli as cli_module

    sim = sim_process({})
    config = write_config(tmp_path, sim.url, count=3)
    for name, value in cli_env().items():
        monkeypatch.setenv(name, value)
    threshold = gc.get_threshold()
    gc.set_threshold(123, 4, 5)
    try:
        code = cli_module.main(["run", str(config), "--report", str(tmp_path / "r")])
        after = gc.get_threshold(), gc.get_freeze_count()
    finally:
        gc.set_threshold(*threshold)

    assert code == 0
    assert len(sim.requests()) == 3
    assert after == ((123, 4, 5), 0)
