"""
Credentials: the chain, AK/SK signing and IAM password tokens, against the simulator.
"""

from __future__ import annotations

import os
import stat
from collections import Counter
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from structlog.testing import capture_logs

from orchestrator import signer
from orchestrator.auth import (
    AkSkAuth,
    Auth,
    PasswordAuth,
    RequestInfo,
    Secret,
    TokenAuth,
    iam_endpoint_for,
    resolve,
)
from orchestrator.client import ModelArtsClient
from orchestrator.config import AuthSettings, Target
from orchestrator.errors import ConfigError, CredentialUnavailableError
from orchestrator.runner import Runner, RunResult
from orchestrator.simulator import Plan, Simulator
from tests.conftest import PROJECT, settings_for, targets

StartSimulator = Callable[[Plan], Awaitable[Simulator]]
PlanFrom = Callable[[dict[str, Any]], Plan]

AK = "AKSIMULATOR0000000001"
SK = "sk-simulator-secret-value"
OTHER_PROJECT = "7d1e3a5c9b2f4e6a8c0d2b4f6a8e0c3d"


async def run_with(
    sim: Simulator, credential: Auth, work: tuple[Target, ...], **fields: Any
) -> RunResult:
    """
    Run ``work`` against ``sim`` with ``credential`` and return the outcomes.
    """
    settings = settings_for(sim.url, work, **fields)
    async with ModelArtsClient(
        sim.url, credential, timeout_s=5, concurrency=settings.concurrency
    ) as client:
        try:
            return await Runner(settings, client).run(work)
        finally:
            await credential.aclose()


def write_credentials(home: Path, text: str, mode: int = 0o600) -> Path:
    path = home / ".huaweicloud" / "credentials"
    path.parent.mkdir(parents=True)
    path.write_text(text)
    path.chmod(mode)
    return path


# The credential chain -------------------------------------------------------


@pytest.mark.parametrize(
    ("environ", "with_file", "expected"),
    [
        pytest.param(
            {"MODELARTS_AUTH_TOKEN": "tok-123456", "HUAWEICLOUD_SDK_AK": "AK1"},
            True,
            "token from $MODELARTS_AUTH_TOKEN",
            id="token-first",
        ),
        pytest.param(
            {"HUAWEICLOUD_SDK_AK": "AKENV00001", "HUAWEICLOUD_SDK_SK": "sk-env-1234"},
            True,
            "access key AKEN...0001 from $HUAWEICLOUD_SDK_AK",
            id="env-pair-before-file",
        ),
        pytest.param(
            {},
            True,
            "access key AKFI...0001 from {home}/.huaweicloud/credentials",
            id="file-last",
        ),
    ],
)
def test_chain_takes_the_first_credential_found(
    tmp_path: Path, environ: dict[str, str], with_file: bool, expected: str
) -> None:
    """Token env, then AK/SK env, then the credentials file, like the SDK."""
    if with_file:
        write_credentials(tmp_path, "[basic]\nak = AKFILE0001\nsk = sk-file-1234\n")

    credential = resolve(None, environ, endpoint="https://x.example", home=tmp_path)

    assert credential.source == expected.format(home=tmp_path)


def test_chain_reads_the_file_named_by_the_sdk_variable(tmp_path: Path) -> None:
    """HUAWEICLOUD_SDK_CREDENTIALS_FILE points the chain at another file."""
    path = tmp_path / "creds.ini"
    path.write_text("[basic]\nak = AKNAMED001\nsk = sk-named-12\nsecurity_token = st\n")
    path.chmod(0o600)
    environ = {"HUAWEICLOUD_SDK_CREDENTIALS_FILE": str(path)}

    credential = resolve(None, environ, endpoint="https://x.example", home=tmp_path)

    assert credential.source == f"temporary access key AKNA...D001 from {path}"


def test_no_credential_names_every_place_looked(tmp_path: Path) -> None:
    """Without any credential the error lists the variables and the file."""
    with pytest.raises(ConfigError) as caught:
        resolve(None, {}, endpoint="https://x.example", home=tmp_path)

    message = str(caught.value)
    assert "$MODELARTS_AUTH_TOKEN" in message
    assert "$HUAWEICLOUD_SDK_AK + HUAWEICLOUD_SDK_SK" in message
    assert str(tmp_path / ".huaweicloud" / "credentials") in message


def test_half_a_key_pair_is_an_error(tmp_path: Path) -> None:
    """An AK without its SK is a mistake to report, not a reason to fall through."""
    with pytest.raises(ConfigError, match="HUAWEICLOUD_SDK_SK is not"):
        resolve(
            None,
            {"HUAWEICLOUD_SDK_AK": "AKONLY0001"},
            endpoint="https://x.example",
            home=tmp_path,
        )


def test_readable_credentials_file_gets_a_warning(tmp_path: Path) -> None:
    """A credentials file group or others can read is used, with a warning."""
    path = write_credentials(
        tmp_path, "[basic]\nak = AKFILE0001\nsk = sk-file-1234\n", mode=0o644
    )

    with capture_logs() as logged:
        resolve(None, {}, endpoint="https://x.example", home=tmp_path)

    (warning,) = [e for e in logged if e["event"] == "auth.credentials_file_exposed"]
    assert warning["path"] == str(path)
    assert warning["mode"] == oct(0o644)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o644


def test_private_credentials_file_gets_no_warning(tmp_path: Path) -> None:
    """A 0600 credentials file is used silently."""
    write_credentials(tmp_path, "[basic]\nak = AKFILE0001\nsk = sk-file-1234\n")

    with capture_logs() as logged:
        resolve(None, {}, endpoint="https://x.example", home=tmp_path)

    assert not [e for e in logged if e["event"] == "auth.credentials_file_exposed"]


def test_explicit_aksk_reads_the_named_variables(tmp_path: Path) -> None:
    """auth: {type: aksk, ak_env, sk_env} reads those variables only."""
    settings = AuthSettings(type="aksk", ak_env="MY_AK", sk_env="MY_SK")
    environ = {
        "MY_AK": "AKMINE0001",
        "MY_SK": "sk-mine-123",
        "MODELARTS_AUTH_TOKEN": "t",
    }

    credential = resolve(settings, environ, endpoint="https://x.example", home=tmp_path)

    assert credential.source == "access key AKMI...0001 from $MY_AK"


def test_password_without_its_variable_is_refused(tmp_path: Path) -> None:
    """An IAM password that is not in its environment variable stops the run."""
    settings = AuthSettings(
        type="password", user="ops", domain="acme", password_env="IAM_PW"
    )

    with pytest.raises(ConfigError, match=r"\$IAM_PW"):
        resolve(settings, {}, endpoint="https://modelarts.cn-north-4.myhuaweicloud.com")


@pytest.mark.parametrize(
    ("endpoint", "iam"),
    [
        pytest.param(
            "https://modelarts.cn-north-4.myhuaweicloud.com",
            "https://iam.cn-north-4.myhuaweicloud.com",
            id="china",
        ),
        pytest.param(
            "https://modelarts.eu-west-101.myhuaweicloud.eu",
            "https://iam.eu-west-101.myhuaweicloud.eu",
            id="europe",
        ),
        pytest.param("http://127.0.0.1:8080", "http://127.0.0.1:8080", id="loopback"),
    ],
)
def test_iam_endpoint_follows_the_modelarts_region(endpoint: str, iam: str) -> None:
    """The IAM endpoint defaults to the ModelArts endpoint's region."""
    assert iam_endpoint_for(endpoint) == iam


def test_iam_endpoint_cannot_be_guessed_for_other_hosts() -> None:
    """A custom host needs auth.iam_endpoint, and the error says so."""
    with pytest.raises(ConfigError, match=r"auth\.iam_endpoint"):
        iam_endpoint_for("https://gateway.example.com")


def test_secret_repr_hides_the_value() -> None:
    """A Secret never shows its value in repr or str."""
    secret = Secret("do-not-show-me")

    assert "do-not-show-me" not in repr(secret)
    assert "do-not-show-me" not in str(secret)
    assert "do-not-show-me" not in repr(TokenAuth(secret, source="x").__dict__)


# AK/SK signing against the simulator ------------------------------------------


async def test_signed_requests_are_accepted_and_carry_the_signed_headers(
    simulator: StartSimulator, plan_from: PlanFrom
) -> None:
    """Every POST is signed over X-Sdk-Date, Host and the target's X-Project-Id."""
    sim = await simulator(plan_from({"token": None, "access_keys": {AK: SK}}))
    work = (*targets(3), *targets(2, OTHER_PROJECT))
    credential = AkSkAuth(AK, Secret(SK), security_token=None, source="test")

    result = await run_with(sim, credential, work)

    assert {o.status for o in result.outcomes} == {"succeeded"}
    for request in sim.sync_requests():
        authorization = request.headers["Authorization"]
        assert authorization == "<redacted>"  # the simulator logs no secrets
        assert request.headers["X-Project-Id"] == request.project_id
        assert signer.HEADER_DATE in request.headers
    assert Counter(r.project_id for r in sim.sync_requests()) == {
        PROJECT: 3,
        OTHER_PROJECT: 2,
    }


async def test_temporary_key_sends_and_signs_its_security_token(
    simulator: StartSimulator, plan_from: PlanFrom
) -> None:
    """A temporary key adds X-Security-Token, and the signature still verifies."""
    sim = await simulator(plan_from({"token": None, "access_keys": {AK: SK}}))
    credential = AkSkAuth(
        AK, Secret(SK), security_token=Secret("security-token-1234"), source="test"
    )

    result = await run_with(sim, credential, targets(2))

    assert {o.status for o in result.outcomes} == {"succeeded"}
    assert all("X-Security-Token" in r.headers for r in sim.sync_requests())


async def test_wrong_secret_key_stops_after_the_first_refusal(
    simulator: StartSimulator, plan_from: PlanFrom
) -> None:
    """A bad signature is not repeated: one 401 and the run stops (AK lockout)."""
    sim = await simulator(plan_from({"token": None, "access_keys": {AK: SK}}))
    credential = AkSkAuth(AK, Secret("sk-wrong-value"), security_token=None, source="t")

    result = await run_with(sim, credential, targets(25), concurrency=1)

    assert len(sim.sync_requests()) == 1
    assert result.stop_reason == "auth_failed"
    assert Counter(o.status for o in result.outcomes) == {"failed": 1, "cancelled": 24}


async def test_clock_skew_is_named_when_signatures_are_refused(
    simulator: StartSimulator, plan_from: PlanFrom
) -> None:
    """A server clock 20 minutes off gives a message about the clock."""
    plan = plan_from({"token": None, "access_keys": {AK: SK}, "clock_offset_s": 1200})
    sim = await simulator(plan)
    credential = AkSkAuth(AK, Secret(SK), security_token=None, source="test")

    result = await run_with(sim, credential, targets(1))

    (outcome,) = result.outcomes
    assert outcome.reason == "auth_failed"
    assert "clock is 20 minutes behind" in (outcome.error_msg or "")


# IAM password tokens against the simulator --------------------------------------


def password_auth(sim: Simulator, *, clock: Callable[[], float] | None = None) -> Any:
    kwargs: dict[str, Any] = {"clock": clock} if clock else {}
    return PasswordAuth(
        user="ops",
        domain="acme",
        password=Secret("iam-password-123"),
        iam_endpoint=sim.url,
        **kwargs,
    )


async def test_one_token_fetch_per_project_however_many_targets(
    simulator: StartSimulator, plan_from: PlanFrom
) -> None:
    """Concurrent targets of a project share one IAM request for its token."""
    sim = await simulator(plan_from({"iam_password": "iam-password-123"}))
    work = (*targets(20), *targets(20, OTHER_PROJECT))

    result = await run_with(sim, password_auth(sim), work, concurrency=8)

    assert {o.status for o in result.outcomes} == {"succeeded"}
    tokens = [r for r in sim.received if r.kind == "token"]
    assert Counter(r.project_id for r in tokens) == {PROJECT: 1, OTHER_PROJECT: 1}


async def test_refused_password_is_tried_once_and_nothing_is_posted(
    simulator: StartSimulator, plan_from: PlanFrom
) -> None:
    """A wrong password: one IAM request, no sync POST, every target auth_failed."""
    sim = await simulator(plan_from({"iam_password": "the-right-one"}))
    work = (*targets(5), *targets(5, OTHER_PROJECT))

    result = await run_with(sim, password_auth(sim), work, concurrency=2)

    assert len([r for r in sim.received if r.kind == "token"]) == 1
    assert sim.sync_requests() == []
    assert {(o.status, o.reason) for o in result.outcomes} == {
        ("failed", "auth_failed")
    }
    assert all(o.attempts == 0 for o in result.outcomes)


async def test_expired_token_is_refetched_once_and_the_target_succeeds(
    simulator: StartSimulator, plan_from: PlanFrom
) -> None:
    """A 401 on an old cached token drops it, fetches a new one and retries once."""
    sim = await simulator(plan_from({}))
    now = [1000.0]
    credential = password_auth(sim, clock=lambda: now[0])
    request = RequestInfo("POST", sim.url, PROJECT, b"", {})  # type: ignore[arg-type]
    await credential.headers(request)  # cache a token
    sim.revoke_tokens()
    now[0] += 3600

    result = await run_with(sim, credential, targets(1))

    (outcome,) = result.outcomes
    assert outcome.status == "succeeded"
    assert [a.http_status for a in outcome.history] == [401, 200]
    assert len([r for r in sim.received if r.kind == "token"]) == 2


async def test_fresh_token_refused_is_not_refetched(
    simulator: StartSimulator, plan_from: PlanFrom
) -> None:
    """A token refused right after it was issued is final: no refetch loop."""
    sim = await simulator(plan_from({}))
    credential = password_auth(sim)
    request = RequestInfo("POST", sim.url, PROJECT, b"", {})  # type: ignore[arg-type]
    await credential.headers(request)
    sim.revoke_tokens()

    result = await run_with(sim, credential, targets(1))

    (outcome,) = result.outcomes
    assert (outcome.status, outcome.reason) == ("failed", "auth_failed")
    assert len([r for r in sim.received if r.kind == "token"]) == 1


async def test_token_is_refetched_before_it_expires(
    simulator: StartSimulator, plan_from: PlanFrom
) -> None:
    """Close to expiry the cached token is replaced before it is sent again."""
    sim = await simulator(plan_from({}))
    now = [0.0]
    credential = password_auth(sim, clock=lambda: now[0])
    request = RequestInfo("POST", sim.url, PROJECT, b"", {})  # type: ignore[arg-type]

    await credential.headers(request)
    now[0] += 24 * 3600 - 60  # a minute before the simulator's 24 h expiry
    await credential.headers(request)
    await credential.aclose()

    assert len([r for r in sim.received if r.kind == "token"]) == 2


async def test_no_token_for_a_refused_project_raises_without_a_request(
    simulator: StartSimulator, plan_from: PlanFrom
) -> None:
    """After one IAM refusal, asking again raises at once."""
    sim = await simulator(plan_from({"iam_password": "right"}))
    credential = password_auth(sim)
    request = RequestInfo("POST", sim.url, PROJECT, b"", {})  # type: ignore[arg-type]

    for _ in range(3):
        with pytest.raises(CredentialUnavailableError):
            await credential.headers(request)
    await credential.aclose()

    assert len(sim.received) == 1
