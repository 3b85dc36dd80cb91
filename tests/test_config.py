"""
Tests for reading, checking and overriding the config file.
"""

from __future__ import annotations

import dataclasses
import gc
import hashlib
import tracemalloc
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import yaml

from orchestrator import config
from orchestrator.config import (
    DEFAULT_CONCURRENCY,
    DEFAULT_RATE_LIMIT_PER_S,
    DEFAULT_SHUTDOWN_GRACE_S,
    DEFAULT_TIMEOUT_S,
    AuthSettings,
    RetrySettings,
    Settings,
    Target,
)
from orchestrator.errors import ConfigError

ENDPOINT = "endpoint: https://modelarts.example.com"
TARGETS = "targets:\n  - {project_id: p1, dataset_id: d1}"


def _yaml(*lines: str) -> str:
    """
    Join config lines into file text.
    """
    return "\n".join(lines) + "\n"


def _write(tmp_path: Path, text: str | bytes, name: str = "nightly.yaml") -> Path:
    """
    Write a config file and return its path.
    """
    path = tmp_path / name
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text, encoding="utf-8")
    return path


def _refused(path: Path) -> ConfigError:
    """
    Load a config that must be refused and return the error, checking it is one line.
    """
    with pytest.raises(ConfigError) as caught:
        config.load(path)
    message = str(caught.value)
    assert "\n" not in message
    assert "\r" not in message
    assert str(path) in message
    return caught.value


@pytest.fixture
def gc_state() -> Iterator[None]:
    """
    Put the collector back as it was, whatever a test did to it.
    """
    was_enabled = gc.isenabled()
    yield
    if was_enabled:
        gc.enable()
    else:
        gc.disable()


def test_loads_every_key_into_exact_settings(tmp_path: Path) -> None:
    """A file that sets every key becomes exactly the settings it describes."""
    text = _yaml(
        "# nightly sync",
        "endpoint: https://modelarts.cn-north-4.myhuaweicloud.com/",
        "auth: {type: token, token_env: NIGHTLY_TOKEN}",
        "rate_limit: 2.5",
        "concurrency: 4",
        "timeout: 12",
        "deadline: 3600",
        "shutdown_grace: 0",
        "retry:",
        "  max_attempts: 3",
        "  initial_backoff: 0.5",
        "  max_backoff: 20",
        "targets:",
        "  - {project_id: 0b2c5e7f9a1d4c3b8e6f0a2d4c6e8b1f,",
        "     dataset_id: WxCcHyPnRYbf1yqQ2hE}",
        "  - project_id: proj-2",
        "    dataset_id: data_2",
    )
    path = _write(tmp_path, text)

    settings = config.load(path)

    assert settings == Settings(
        path=path,
        sha256=hashlib.sha256(text.encode()).hexdigest(),
        endpoint="https://modelarts.cn-north-4.myhuaweicloud.com",
        targets=(
            Target("0b2c5e7f9a1d4c3b8e6f0a2d4c6e8b1f", "WxCcHyPnRYbf1yqQ2hE"),
            Target("proj-2", "data_2"),
        ),
        auth=AuthSettings(type="token", token_env="NIGHTLY_TOKEN"),
        rate_limit_per_s=2.5,
        concurrency=4,
        timeout_s=12.0,
        deadline_s=3600.0,
        shutdown_grace_s=0.0,
        retry=RetrySettings(max_attempts=3, initial_backoff_s=0.5, max_backoff_s=20.0),
    )
    assert [target.line for target in settings.targets] == [14, 16]
    assert isinstance(settings.timeout_s, float)


def test_omitted_keys_take_the_defaults(tmp_path: Path) -> None:
    """A file with only endpoint and targets gets every default."""
    path = _write(tmp_path, _yaml(ENDPOINT, TARGETS))

    settings = config.load(path)

    assert settings.auth is None
    assert settings.rate_limit_per_s == DEFAULT_RATE_LIMIT_PER_S
    assert settings.concurrency == DEFAULT_CONCURRENCY
    assert settings.timeout_s == DEFAULT_TIMEOUT_S
    assert settings.deadline_s is None
    assert settings.shutdown_grace_s == DEFAULT_SHUTDOWN_GRACE_S
    assert settings.retry == RetrySettings()


def test_partial_sections_fill_in_their_defaults(tmp_path: Path) -> None:
    """An auth or retry mapping that sets one key keeps the defaults of the others."""
    text = _yaml(ENDPOINT, "auth: {type: token}", "retry: {max_attempts: 2}", TARGETS)

    settings = config.load(_write(tmp_path, text))

    assert settings.auth == AuthSettings()
    assert settings.retry == RetrySettings(max_attempts=2)


def test_keeps_path_as_given_and_hashes_file_bytes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The settings keep the relative path given and the SHA-256 of the raw bytes."""
    data = ("\ufeff" + _yaml(ENDPOINT, TARGETS)).encode()
    _write(tmp_path, data)
    monkeypatch.chdir(tmp_path)

    settings = config.load(Path("nightly.yaml"))

    assert settings.path == Path("nightly.yaml")
    assert settings.sha256 == hashlib.sha256(data).hexdigest()


def test_keeps_duplicate_targets_in_file_order(tmp_path: Path) -> None:
    """Repeated targets all stay, in file order: de-duplication is not config's job."""
    text = _yaml(
        ENDPOINT,
        "targets:",
        "  - {project_id: b, dataset_id: '2'}",
        "  - {project_id: a, dataset_id: '1'}",
        "  - {project_id: b, dataset_id: '2'}",
    )

    settings = config.load(_write(tmp_path, text))

    assert [(t.project_id, t.dataset_id, t.line) for t in settings.targets] == [
        ("b", "2", 3),
        ("a", "1", 4),
        ("b", "2", 5),
    ]


def test_scalars_resolve_as_yaml_types(tmp_path: Path) -> None:
    """Numbers in any YAML spelling count; deadline null means no deadline."""
    text = _yaml(
        ENDPOINT,
        "rate_limit: 0x10",
        "concurrency: 1_000",
        "timeout: 1.5e+1",
        "deadline: ~",
        "shutdown_grace: 100000000000000000000000000000",
        TARGETS,
    )

    settings = config.load(_write(tmp_path, text))

    assert settings.rate_limit_per_s == 16.0
    assert settings.concurrency == 1000
    assert settings.timeout_s == 15.0
    assert settings.deadline_s is None
    assert settings.shutdown_grace_s == 1e29


def test_merge_keys_and_aliases_are_followed(tmp_path: Path) -> None:
    """A target may reuse another through an alias or a merge key."""
    text = _yaml(
        ENDPOINT,
        "targets:",
        "  - &first {project_id: p1, dataset_id: d1}",
        "  - {<<: *first, dataset_id: d2}",
        "  - *first",
    )

    settings = config.load(_write(tmp_path, text))

    assert settings.targets == (
        Target("p1", "d1"),
        Target("p1", "d2"),
        Target("p1", "d1"),
    )
    assert [target.line for target in settings.targets] == [3, 4, 3]


def _assert_names(path: Path, line: int, field: str, got: str | None) -> str:
    """
    Load a refused config and check its message names place, field and value.
    """
    message = str(_refused(path))

    head = f"{path}:{line} {field}: " if field else f"{path}:{line}: "
    assert message.startswith(head)
    if got is not None:
        assert f"; got {got}" in message
    return message


@pytest.mark.parametrize(
    ("lines", "line", "field", "got"),
    [
        pytest.param("auth: {type: ldap}", 2, "auth.type", "'ldap'", id="auth-type"),
        pytest.param(
            "auth:\n  token_env: MY-TOKEN", 3, "auth.token_env", "'MY-TOKEN'", id="env"
        ),
        pytest.param("auth: token", 2, "auth", "'token'", id="auth-not-mapping"),
        pytest.param("rate_limit: 0", 2, "rate_limit", "0", id="rate-limit-zero"),
        pytest.param("rate_limit: -3", 2, "rate_limit", "-3", id="rate-limit-negative"),
        pytest.param("rate_limit: true", 2, "rate_limit", "True", id="rate-limit-bool"),
        pytest.param("rate_limit: .nan", 2, "rate_limit", "nan", id="rate-limit-nan"),
        pytest.param("rate_limit: .inf", 2, "rate_limit", "inf", id="rate-limit-inf"),
        pytest.param("rate_limit: 1e3", 2, "rate_limit", "'1e3'", id="rate-limit-text"),
        pytest.param("rate_limit: [1]", 2, "rate_limit", "[1]", id="rate-limit-list"),
        pytest.param("rate_limit: 0x" + "f" * 300, 2, "rate_limit", "", id="huge"),
        pytest.param("concurrency: 0", 2, "concurrency", "0", id="concurrency-zero"),
        pytest.param(
            "concurrency: 1001", 2, "concurrency", "1001", id="concurrency-high"
        ),
        pytest.param(
            "concurrency: 8.0", 2, "concurrency", "8.0", id="concurrency-float"
        ),
        pytest.param(
            "concurrency: yes", 2, "concurrency", "True", id="concurrency-bool"
        ),
        pytest.param("timeout: 0", 2, "timeout", "0", id="timeout-zero"),
        pytest.param("timeout: 3601", 2, "timeout", "3601", id="timeout-high"),
        pytest.param("deadline: 0", 2, "deadline", "0", id="deadline-zero"),
        pytest.param("deadline: soon", 2, "deadline", "'soon'", id="deadline-text"),
        pytest.param("shutdown_grace: -1", 2, "shutdown_grace", "-1", id="grace"),
        pytest.param("retry: 5", 2, "retry", "5", id="retry-not-mapping"),
        pytest.param(
            "retry: {max_attempts: 0}", 2, "retry.max_attempts", "0", id="attempts-0"
        ),
        pytest.param(
            "retry: {max_attempts: 101}", 2, "retry.max_attempts", "101", id="attempts"
        ),
        pytest.param(
            "retry: {max_attempts: 2.5}", 2, "retry.max_attempts", "2.5", id="float"
        ),
        pytest.param(
            "retry:\n  initial_backoff: -0.5",
            3,
            "retry.initial_backoff",
            "-0.5",
            id="backoff-negative",
        ),
        pytest.param(
            "retry:\n  initial_backoff: 5\n  max_backoff: 2",
            4,
            "retry.max_backoff",
            "2",
            id="backoff-inverted",
        ),
        pytest.param(
            "retry:\n  initial_backoff: 120",
            3,
            "retry.initial_backoff",
            "120",
            id="backoff-above-default-max",
        ),
        pytest.param("retri: {max_attempts: 3}", 2, "retri", None, id="unknown-top"),
        pytest.param(
            "retry: {max_attemps: 3}", 2, "retry.max_attemps", None, id="unknown-retry"
        ),
        pytest.param(
            "rate_limit: !!python/name:os.system x", 2, "rate_limit", "'x'", id="tag"
        ),
        pytest.param("rate_limit: 5/fortnight", 2, "rate_limit", None, id="rate-unit"),
        pytest.param("rate_limit: 0/min", 2, "rate_limit", "'0/min'", id="rate-zero"),
        pytest.param("rate_limit: -5/min", 2, "rate_limit", None, id="rate-neg"),
        pytest.param(
            "rate_limit: {burst: 3}", 2, "rate_limit.limit", None, id="rate-no-limit"
        ),
        pytest.param(
            "rate_limit: {limit: 10/min, burst: 11}",
            2,
            "rate_limit.burst",
            "11",
            id="burst-above-n",
        ),
        pytest.param(
            "rate_limit: {limit: 10, burst: 0}",
            2,
            "rate_limit.burst",
            "0",
            id="burst-0",
        ),
        pytest.param(
            "rate_limit: {limit: 10, bust: 2}", 2, "rate_limit.bust", None, id="typo"
        ),
    ],
)
def test_refuses_a_bad_setting(
    tmp_path: Path, lines: str, line: int, field: str, got: str | None
) -> None:
    """A bad setting is refused on one line: file:line, field path, rule, value."""
    path = _write(tmp_path, _yaml(ENDPOINT, lines, TARGETS))

    _assert_names(path, line, field, got)


@pytest.mark.parametrize(
    ("endpoint", "got"),
    [
        pytest.param("ftp://h.example.com", None, id="ftp"),
        pytest.param("h.example.com", None, id="relative"),
        pytest.param("443", None, id="no-scheme"),
        pytest.param("https://h.example.com/v2", None, id="path"),
        pytest.param("https://h.example.com//", None, id="double-slash"),
        pytest.param("https://h.example.com/#a", None, id="fragment"),
        pytest.param(
            "https://h.example.com?a=1", "'https://h.example.com?***'", id="q"
        ),
        pytest.param("https://h.example.com:99999", None, id="port"),
        pytest.param("https://[::1", None, id="broken-ipv6"),
    ],
)
def test_refuses_a_bad_endpoint(tmp_path: Path, endpoint: str, got: str | None) -> None:
    """An endpoint that is not a bare https:// origin is refused."""
    path = _write(tmp_path, _yaml(f"endpoint: '{endpoint}'", TARGETS))

    _assert_names(path, 1, "endpoint", repr(endpoint) if got is None else got)


@pytest.mark.parametrize(
    ("item", "field", "got"),
    [
        pytest.param("p1/d1", "", "'p1/d1'", id="not-mapping"),
        pytest.param(
            "{project_id: p1, dataset_id: a/b}", "dataset_id", "'a/b'", id="slash"
        ),
        pytest.param(
            "{project_id: p1, dataset_id: ..}", "dataset_id", "'..'", id="dots"
        ),
        pytest.param(
            "{project_id: a%2F, dataset_id: d}", "project_id", "'a%2F'", id="percent"
        ),
        pytest.param(
            "{project_id: a b, dataset_id: d}", "project_id", "'a b'", id="space"
        ),
        pytest.param("{project_id: '', dataset_id: d}", "project_id", "''", id="empty"),
        pytest.param(
            "{project_id: p, dataset_id: " + "x" * 65 + "}",
            "dataset_id",
            repr("x" * 65),
            id="long",
        ),
        pytest.param(
            "{project_id: p, dataset_id: null}", "dataset_id", "None", id="null"
        ),
        pytest.param(
            "{project_id: p, dataset_id: d, region: x}",
            "region",
            None,
            id="unknown-key",
        ),
        pytest.param("{project_id: p}", "dataset_id", None, id="missing"),
    ],
)
def test_refuses_a_bad_target(
    tmp_path: Path, item: str, field: str, got: str | None
) -> None:
    """A bad target is refused naming its line, index and field."""
    text = _yaml(
        ENDPOINT, "targets:", "  - {project_id: p0, dataset_id: d0}", f"  - {item}"
    )
    path = _write(tmp_path, text)

    _assert_names(path, 4, f"targets[1].{field}" if field else "targets[1]", got)


@pytest.mark.parametrize(
    ("text", "line", "field", "got"),
    [
        pytest.param(_yaml(ENDPOINT), 1, "targets", None, id="targets-missing"),
        pytest.param(_yaml("endpoint: 443", TARGETS), 1, "endpoint", "443", id="int"),
        pytest.param(
            _yaml("# ...", TARGETS), 2, "endpoint", None, id="endpoint-missing"
        ),
        pytest.param(
            _yaml(ENDPOINT, "targets: []"), 2, "targets", "[]", id="no-targets"
        ),
        pytest.param(
            _yaml(ENDPOINT, "targets:"), 2, "targets", "None", id="null-targets"
        ),
        pytest.param(
            _yaml(ENDPOINT, "targets: {a: b}"),
            2,
            "targets",
            "{'a': 'b'}",
            id="targets-mapping",
        ),
        pytest.param(
            "[endpoint, targets]\n", 1, "", "['endpoint', 'targets']", id="list"
        ),
        pytest.param(
            "https://h.example.com\n", 1, "", "'https://h.example.com'", id="text"
        ),
    ],
)
def test_refuses_a_bad_shape(
    tmp_path: Path, text: str, line: int, field: str, got: str | None
) -> None:
    """A file without the required keys, or not a mapping at all, is refused."""
    path = _write(tmp_path, text)

    message = _assert_names(path, line, field, got)

    if got is None:
        assert message.endswith(f"{field}: required key is missing")


@pytest.mark.parametrize(
    ("line", "fix"),
    [
        pytest.param("retri: {}", "did you mean 'retry'?", id="close-match"),
        pytest.param(
            "rate_limit_per_s: 3", "did you mean 'rate_limit'?", id="field-name"
        ),
        pytest.param(
            "colour: red", "known keys: endpoint, auth, ca_bundle", id="no-match"
        ),
    ],
)
def test_unknown_key_suggests_the_closest_known_one(
    tmp_path: Path, line: str, fix: str
) -> None:
    """A misspelt key names the key it probably meant, else lists the known keys."""
    path = _write(tmp_path, _yaml(ENDPOINT, line, TARGETS))

    message = str(_refused(path))

    assert "unknown key" in message
    assert fix in message


@pytest.mark.parametrize(
    ("text", "line", "field", "first"),
    [
        pytest.param(
            _yaml(ENDPOINT, TARGETS, "endpoint: https://other.example.com"),
            4,
            "endpoint",
            1,
            id="top-level",
        ),
        pytest.param(
            _yaml(
                ENDPOINT, "retry:", "  max_attempts: 3", "  max_attempts: 4", TARGETS
            ),
            4,
            "retry.max_attempts",
            3,
            id="retry",
        ),
        pytest.param(
            _yaml(
                ENDPOINT,
                "targets:",
                "  - {project_id: a, dataset_id: b, project_id: c}",
            ),
            3,
            "targets[0].project_id",
            3,
            id="target",
        ),
    ],
)
def test_refuses_duplicate_keys(
    tmp_path: Path, text: str, line: int, field: str, first: int
) -> None:
    """A key written twice is refused at its second place, naming the first."""
    path = _write(tmp_path, text)

    message = str(_refused(path))

    assert message.startswith(f"{path}:{line} {field}: duplicate key")
    assert f"first given at line {first}" in message


@pytest.mark.parametrize(
    ("written", "got", "quoted"),
    [
        pytest.param("123", "123", "'123'", id="digits"),
        pytest.param("0123", "83", "'0123'", id="octal"),
        pytest.param("1_000", "1000", "'1_000'", id="underscores"),
        pytest.param(
            "2024-01-31", "datetime.date(2024, 1, 31)", "'2024-01-31'", id="date"
        ),
        pytest.param("1.5", "1.5", None, id="float"),
        pytest.param("true", "True", None, id="bool"),
    ],
)
def test_refuses_ids_yaml_reads_as_other_types(
    tmp_path: Path, written: str, got: str, quoted: str | None
) -> None:
    """An unquoted id that YAML reads as a number or date is refused, never str()-ed."""
    text = _yaml(
        ENDPOINT, "targets:", "  - project_id: p1", f"    dataset_id: {written}"
    )
    path = _write(tmp_path, text)

    message = str(_refused(path))

    assert message.startswith(f"{path}:4 targets[0].dataset_id: must be a string")
    assert f"; got {got}" in message
    if quoted is not None:
        assert message.endswith(f"quote it: {quoted}")


@pytest.mark.parametrize(
    ("key", "line", "field"),
    [
        pytest.param("  token: abc123", 3, "auth.token", id="auth-token"),
        pytest.param("  sk: abc123", 3, "auth.sk", id="auth-sk"),
        pytest.param("  Secret-Key: abc123", 3, "auth.Secret-Key", id="spelling"),
        pytest.param("  security_token: abc123", 3, "auth.security_token", id="sts"),
        pytest.param("  password: abc123", 3, "auth.password", id="password"),
    ],
)
def test_refuses_secrets_written_in_the_file_without_echoing_them(
    tmp_path: Path, key: str, line: int, field: str
) -> None:
    """A secret-looking key is refused, pointing to token_env, its value unshown."""
    path = _write(tmp_path, _yaml(ENDPOINT, "auth:", key, TARGETS))

    message = str(_refused(path))

    assert message.startswith(f"{path}:{line} {field}: secrets must not be written")
    assert "environment variable" in message
    assert "token_env" in message
    assert "abc123" not in message


def test_refuses_top_level_secret_key(tmp_path: Path) -> None:
    """A secret written at the top level is refused the same way."""
    path = _write(tmp_path, _yaml(ENDPOINT, "token: abc123", TARGETS))

    message = str(_refused(path))

    assert message.startswith(f"{path}:2 token: secrets must not be written")
    assert "abc123" not in message


def test_long_token_env_value_is_not_echoed(tmp_path: Path) -> None:
    """A token pasted into token_env is refused without printing it."""
    token = "MIIEhwYJKoZIhvcNAQcCoIIEeDCCBHQCAQExDTALBglghkgBZQMEAgEw.x-y"
    path = _write(tmp_path, _yaml(ENDPOINT, f"auth: {{token_env: {token}}}", TARGETS))

    message = str(_refused(path))

    assert message.startswith(f"{path}:2 auth.token_env: must name an environment")
    assert token[:20] not in message
    assert f"a {len(token)}-character string" in message


def test_endpoint_user_info_is_not_echoed(tmp_path: Path) -> None:
    """Credentials written into the endpoint URL do not reach the message."""
    text = _yaml("endpoint: https://ak:hunter2@h.example.com/?token=abc", TARGETS)
    path = _write(tmp_path, text)

    message = str(_refused(path))

    assert message.startswith(f"{path}:1 endpoint: must not contain user info")
    assert "hunter2" not in message
    assert "abc" not in message


@pytest.mark.parametrize(
    ("endpoint", "stored"),
    [
        pytest.param("http://localhost:8080", "http://localhost:8080", id="localhost"),
        pytest.param("http://127.0.0.1:8080/", "http://127.0.0.1:8080", id="ipv4"),
        pytest.param("http://127.8.9.10", "http://127.8.9.10", id="ipv4-block"),
        pytest.param("http://[::1]:9000", "http://[::1]:9000", id="ipv6"),
        pytest.param("HTTP://LOCALHOST/", "HTTP://LOCALHOST", id="upper-case"),
    ],
)
def test_accepts_plain_http_to_loopback(
    tmp_path: Path, endpoint: str, stored: str
) -> None:
    """Plain http is fine for this machine (the simulator, a tunnel)."""
    path = _write(tmp_path, _yaml(f"endpoint: '{endpoint}'", TARGETS))

    assert config.load(path).endpoint == stored


@pytest.mark.parametrize(
    "endpoint",
    [
        pytest.param("http://modelarts.example.com", id="name"),
        pytest.param("http://10.0.0.1", id="private-ipv4"),
        pytest.param("http://128.0.0.1", id="beside-loopback"),
        pytest.param("http://localhost.example.com", id="localhost-lookalike"),
        pytest.param("http://[::2]", id="ipv6"),
        pytest.param("http://[::ffff:127.0.0.1]", id="ipv4-mapped"),
    ],
)
def test_refuses_plain_http_to_other_hosts(tmp_path: Path, endpoint: str) -> None:
    """Plain http to any host but this machine is refused."""
    path = _write(tmp_path, _yaml(f"endpoint: '{endpoint}'", TARGETS))

    message = str(_refused(path))

    assert message.startswith(f"{path}:1 endpoint: must use https")
    assert f"; got {endpoint!r}" in message


@pytest.mark.parametrize(
    ("endpoint", "stored"),
    [
        pytest.param("https://h.example.com/", "https://h.example.com", id="slash"),
        pytest.param("https://h.example.com", "https://h.example.com", id="none"),
        pytest.param(
            "https://h.example.com:8443/", "https://h.example.com:8443", id="port"
        ),
    ],
)
def test_strips_the_endpoint_trailing_slash(
    tmp_path: Path, endpoint: str, stored: str
) -> None:
    """The endpoint is stored without a trailing slash."""
    path = _write(tmp_path, _yaml(f"endpoint: {endpoint}", TARGETS))

    assert config.load(path).endpoint == stored


@pytest.mark.parametrize(
    ("text", "where"),
    [
        pytest.param(
            _yaml(ENDPOINT, "targets: [{project_id: p1"), ":3:1: ", id="unclosed"
        ),
        pytest.param(_yaml(ENDPOINT, "\trate_limit: 3", TARGETS), ":2:1: ", id="tab"),
        pytest.param(
            _yaml(ENDPOINT, TARGETS, "---", ENDPOINT), ":4:1: ", id="two-docs"
        ),
        pytest.param(
            _yaml(ENDPOINT, "rate_limit: *limit", TARGETS), ":2:13: ", id="alias"
        ),
        pytest.param(
            _yaml(ENDPOINT, "rate_limit: 3\x07", TARGETS), ":2:14: ", id="control"
        ),
    ],
)
def test_translates_yaml_errors_with_line_and_column(
    tmp_path: Path, text: str, where: str
) -> None:
    """A YAML syntax error names file:line:column and the problem, chained."""
    path = _write(tmp_path, text)

    error = _refused(path)

    assert str(error).startswith(f"{path}{where}not valid YAML: ")
    assert isinstance(error.__cause__, yaml.YAMLError)


def test_missing_file_is_a_config_error_chained_from_os_error(tmp_path: Path) -> None:
    """A file that is not there is refused naming the file, chained from OSError."""
    error = _refused(tmp_path / "absent.yaml")

    assert "cannot read the config file" in str(error)
    assert isinstance(error.__cause__, FileNotFoundError)


def test_directory_is_a_config_error(tmp_path: Path) -> None:
    """A directory given as the config is refused as unreadable."""
    error = _refused(tmp_path)

    assert isinstance(error.__cause__, OSError)


def test_refuses_non_utf8_naming_the_line(tmp_path: Path) -> None:
    """A byte that is not UTF-8 is refused with its line, chained from the decoder."""
    path = _write(tmp_path, _yaml(ENDPOINT, TARGETS).encode() + b"# caf\xe9\n")

    error = _refused(path)

    assert str(error).startswith(f"{path}:4:6: not UTF-8 text")
    assert isinstance(error.__cause__, UnicodeDecodeError)


@pytest.mark.parametrize(
    "text",
    [
        pytest.param("", id="empty"),
        pytest.param("# only a comment\n", id="comment"),
    ],
)
def test_refuses_a_file_without_settings(tmp_path: Path, text: str) -> None:
    """An empty or comment-only file is refused."""
    path = _write(tmp_path, text)

    assert "the file is empty" in str(_refused(path))


def test_refuses_files_over_50_mib(tmp_path: Path) -> None:
    """A file over 50 MiB is refused before it is read."""
    path = tmp_path / "huge.yaml"
    with path.open("wb") as stream:
        stream.truncate(50 * 1024 * 1024 + 1)

    assert "larger than 50 MiB" in str(_refused(path))


def test_refuses_a_merge_key_alias_bomb(tmp_path: Path) -> None:
    """Merge keys that expand exponentially are cut off at the node ceiling."""
    lines = [ENDPOINT, "targets:", "  - &a0 {project_id: p, dataset_id: d}"]
    for level in range(1, 10):
        sources = ", ".join([f"*a{level - 1}"] * 10)
        lines.append(f"  - &a{level} {{<<: [{sources}]}}")
    path = _write(tmp_path, _yaml(*lines))

    message = str(_refused(path))

    assert "more than 1,000,000 YAML nodes" in message


def test_refuses_a_list_alias_bomb_without_expanding_it(tmp_path: Path) -> None:
    """The classic nested-list bomb is refused at its first item, unexpanded."""
    lines = [ENDPOINT, "targets:", "  - &l0 [lol, lol, lol, lol, lol, lol, lol, lol]"]
    for level in range(1, 12):
        lines.append(f"  - &l{level} [" + ", ".join([f"*l{level - 1}"] * 9) + "]")
    path = _write(tmp_path, _yaml(*lines))

    message = str(_refused(path))

    assert message.startswith(f"{path}:3 targets[0]: must be a mapping")
    assert len(message) < 400


def test_refuses_a_mapping_merged_into_itself(tmp_path: Path) -> None:
    """A merge key that points back at its own mapping is refused."""
    text = _yaml(ENDPOINT, "targets:", "  - &t {project_id: p, dataset_id: d, <<: *t}")
    path = _write(tmp_path, text)

    assert "merges a mapping into itself" in str(_refused(path))


def test_cuts_long_values_in_messages(tmp_path: Path) -> None:
    """A long bad value is cut to about 80 characters so the line stays readable."""
    long_id = "a/" * 300
    text = _yaml(
        ENDPOINT, "targets:", f"  - {{project_id: p, dataset_id: '{long_id}'}}"
    )
    path = _write(tmp_path, text)

    message = str(_refused(path))

    assert "got 'a/a/a/" in message
    assert "..." in message
    assert len(message) < len(str(path)) + 200


@pytest.mark.usefixtures("gc_state")
@pytest.mark.parametrize("enabled", [True, False], ids=["enabled", "disabled"])
@pytest.mark.parametrize("valid", [True, False], ids=["valid", "invalid"])
def test_restores_the_garbage_collector_state(
    tmp_path: Path, enabled: bool, valid: bool
) -> None:
    """Loading leaves the collector on or off as it found it, even on error."""
    path = _write(tmp_path, _yaml(ENDPOINT, TARGETS if valid else "targets: []"))
    if enabled:
        gc.enable()
    else:
        gc.disable()

    try:
        config.load(path)
    except ConfigError:
        assert not valid

    assert gc.isenabled() is enabled


def test_loads_20000_targets(tmp_path: Path) -> None:
    """A 20,000-target file loads completely, in order."""
    lines = [ENDPOINT, "targets:"]
    lines += [
        f"  - {{project_id: project{i:05d}, dataset_id: dataset{i:05d}}}"
        for i in range(20_000)
    ]
    path = _write(tmp_path, _yaml(*lines))

    settings = config.load(path)

    assert len(settings.targets) == 20_000
    assert settings.targets[-1] == Target("project19999", "dataset19999")
    assert settings.targets[-1].line == 20_002


def test_a_long_target_list_is_read_without_holding_its_node_tree(
    tmp_path: Path,
) -> None:
    """Reading 20,000 targets peaks far below what their YAML node tree would take."""
    lines = [ENDPOINT, "targets:"]
    lines += [
        f"  - {{project_id: project{i % 7}, dataset_id: dataset{i:05d}}}"
        for i in range(20_000)
    ]
    path = _write(tmp_path, _yaml(*lines))
    text = path.read_text(encoding="utf-8")

    def peak_bytes(read: Callable[[], object]) -> int:
        tracemalloc.start()
        try:
            read()
            return tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()

    streamed = peak_bytes(lambda: config.load(path))
    whole_tree = peak_bytes(lambda: yaml.compose(text, Loader=yaml.SafeLoader))

    # The targets themselves and the file's text stay; the nodes must not.
    assert streamed < whole_tree / 3, (streamed, whole_tree)


def test_an_anchored_target_list_reads_like_a_plain_one(tmp_path: Path) -> None:
    """A targets list with an anchor (composed whole) gives the same settings."""
    items = [
        "  - {project_id: p1, dataset_id: d1}",
        "  - {project_id: p2, datasets: all}",
    ]
    plain = config.load(_write(tmp_path, _yaml(ENDPOINT, "targets:", *items)))
    anchored = config.load(
        _write(tmp_path, _yaml(ENDPOINT, "targets: &all", *items), name="a.yaml")
    )

    assert anchored.targets == plain.targets == (Target("p1", "d1"),)
    assert anchored.selectors == plain.selectors
    assert [t.line for t in anchored.targets] == [3]


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    """
    Return settings loaded from a small valid file.
    """
    return config.load(_write(tmp_path, _yaml(ENDPOINT, TARGETS)))


def test_overrides_replace_the_file_values(settings: Settings) -> None:
    """Given flags replace endpoint, rate limit and concurrency in a new object."""
    overridden = config.apply_overrides(
        settings, endpoint="http://127.0.0.1:8080/", rate_limit=40, concurrency=16
    )

    assert overridden == dataclasses.replace(
        settings,
        endpoint="http://127.0.0.1:8080",
        rate_limit_per_s=40.0,
        concurrency=16,
    )
    assert isinstance(overridden.rate_limit_per_s, float)
    assert settings.endpoint == "https://modelarts.example.com"


def test_no_overrides_keep_the_settings(settings: Settings) -> None:
    """Without flags the settings come back equal."""
    assert config.apply_overrides(settings) == settings


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        pytest.param(
            {"rate_limit": -3},
            "--rate-limit: must be a number > 0; got -3",
            id="rate-limit-negative",
        ),
        pytest.param(
            {"rate_limit": float("nan")},
            "--rate-limit: must be a number > 0; got nan",
            id="rate-limit-nan",
        ),
        pytest.param(
            {"concurrency": 0},
            "--concurrency: must be a whole number >= 1 and <= 1000; got 0",
            id="concurrency-zero",
        ),
        pytest.param(
            {"concurrency": True},
            "--concurrency: must be a whole number >= 1 and <= 1000; got True",
            id="concurrency-bool",
        ),
        pytest.param(
            {"endpoint": "http://modelarts.example.com"},
            "--endpoint: must use https",
            id="endpoint-http",
        ),
        pytest.param(
            {"endpoint": "https://h.example.com/v2/p1"},
            "--endpoint: must not have a path",
            id="endpoint-path",
        ),
    ],
)
def test_overrides_are_checked_by_the_file_rules(
    settings: Settings, overrides: dict[str, object], message: str
) -> None:
    """A bad flag value is refused naming the flag instead of file:line."""
    with pytest.raises(ConfigError) as caught:
        config.apply_overrides(settings, **overrides)  # type: ignore[arg-type]

    assert str(caught.value).startswith(message)
    assert "\n" not in str(caught.value)


def test_reads_selectors_in_file_order_beside_explicit_targets(tmp_path: Path) -> None:
    """Names, globs and 'all' become selectors that remember their place."""
    text = _yaml(
        ENDPOINT,
        "targets:",
        "  - {project_id: p1, dataset_name: cars}",
        "  - {project_id: p1, dataset_id: d1}",
        "  - {project_id: p2, dataset_names: ['bikes-*', 'x?']}",
        "  - {project_id: p3, datasets: all}",
    )

    settings = config.load(_write(tmp_path, text))

    assert settings.targets == (Target("p1", "d1"),)
    assert settings.selectors == (
        config.Selector("p1", dataset_name="cars", after=0),
        config.Selector("p2", patterns=("bikes-*", "x?"), after=1),
        config.Selector("p3", everything=True, after=1),
    )
    assert [s.line for s in settings.selectors] == [3, 5, 6]
    assert settings.selectors[1].describe() == "dataset_names: [bikes-*, x?]"


@pytest.mark.parametrize(
    ("item", "field", "got"),
    [
        pytest.param(
            "{project_id: p, dataset_id: d, dataset_name: n}",
            "",
            "dataset_id, dataset_name",
            id="two-selectors",
        ),
        pytest.param(
            "{project_id: p, datasets: some}", "datasets", "'some'", id="some"
        ),
        pytest.param(
            "{project_id: p, dataset_names: []}", "dataset_names", "[]", id="empty"
        ),
        pytest.param(
            "{project_id: p, dataset_names: cars}",
            "dataset_names",
            "'cars'",
            id="not-list",
        ),
        pytest.param(
            "{project_id: p, dataset_name: ''}", "dataset_name", "''", id="blank"
        ),
        pytest.param(
            "{project_id: p, dataset_name: 12}", "dataset_name", "12", id="number"
        ),
    ],
)
def test_refuses_a_bad_selector(
    tmp_path: Path, item: str, field: str, got: str
) -> None:
    """A selector breaking its rule is refused naming line, index and field."""
    text = _yaml(ENDPOINT, "targets:", f"  - {item}")
    path = _write(tmp_path, text)

    _assert_names(path, 3, f"targets[0].{field}" if field else "targets[0]", got)


def test_reads_wait_settings_and_the_wait_override(tmp_path: Path) -> None:
    """wait.* fill WaitSettings; --wait switches waiting on without other changes."""
    text = _yaml(ENDPOINT, "wait: {poll_interval: 2, timeout: 600}", TARGETS)

    settings = config.load(_write(tmp_path, text))
    waiting = config.apply_overrides(settings, wait=True)

    assert settings.wait == config.WaitSettings(False, 2.0, 600.0)
    assert waiting.wait == config.WaitSettings(True, 2.0, 600.0)
    assert config.apply_overrides(settings, wait=None).wait == settings.wait
    assert settings.wait.max_poll_interval_s == 20.0
    assert config.WaitSettings(poll_interval_s=10).max_poll_interval_s == 60.0
    assert config.WaitSettings(poll_interval_s=120).max_poll_interval_s == 120.0


@pytest.mark.parametrize(
    ("lines", "field", "got"),
    [
        pytest.param(
            "wait: {enabled: yes please}", "wait.enabled", "'yes please'", id="flag"
        ),
        pytest.param("wait: {poll_interval: 0}", "wait.poll_interval", "0", id="zero"),
        pytest.param("wait: {timeout: -5}", "wait.timeout", "-5", id="negative"),
        pytest.param("wait: {timout: 5}", "wait.timout", None, id="typo"),
    ],
)
def test_refuses_bad_wait_settings(
    tmp_path: Path, lines: str, field: str, got: str | None
) -> None:
    """A bad wait setting is refused naming its line and field."""
    path = _write(tmp_path, _yaml(ENDPOINT, lines, TARGETS))

    _assert_names(path, 2, field, got)


@pytest.mark.parametrize(
    ("written", "per_s", "window_s", "burst"),
    [
        pytest.param("300/min", 5.0, 60.0, 1, id="per-min"),
        pytest.param("'300 / minute'", 5.0, 60.0, 1, id="spaced-long-unit"),
        pytest.param("20/s", 20.0, 1.0, 1, id="per-s"),
        pytest.param("100/10s", 10.0, 10.0, 1, id="per-10s"),
        pytest.param("3600/h", 1.0, 3600.0, 1, id="per-hour"),
        pytest.param("2.5", 2.5, 1.0, 1, id="number"),
        pytest.param("{limit: 300/min, burst: 10}", 5.0, 60.0, 10, id="burst"),
        pytest.param("{limit: 40}", 40.0, 1.0, 1, id="mapping-number"),
    ],
)
def test_rate_limit_reads_n_per_t_and_burst(
    tmp_path: Path, written: str, per_s: float, window_s: float, burst: int
) -> None:
    """rate_limit takes a number per second, 'N/T' text, or {limit, burst}."""
    path = _write(tmp_path, _yaml(ENDPOINT, f"rate_limit: {written}", TARGETS))

    settings = config.load(path)

    assert settings.rate_limit_per_s == pytest.approx(per_s)
    assert (settings.rate_window_s, settings.rate_burst) == (window_s, burst)


@pytest.mark.parametrize(
    ("flag", "per_s", "window_s"),
    [
        pytest.param("300/min", 5.0, 60.0, id="per-min"),
        pytest.param("50", 50.0, 1.0, id="number-text"),
    ],
)
def test_rate_limit_flag_takes_the_same_forms(
    settings: Settings, flag: str, per_s: float, window_s: float
) -> None:
    """--rate-limit accepts 'N/T' as well as a plain number."""
    overridden = config.apply_overrides(settings, rate_limit=flag)

    assert overridden.rate_limit_per_s == per_s
    assert overridden.rate_window_s == window_s


def test_rate_limit_flag_names_the_rule_for_bad_text(settings: Settings) -> None:
    """A --rate-limit that is neither a number nor N/T is refused, flag named."""
    with pytest.raises(ConfigError, match=r"^--rate-limit: must be a number > 0 "):
        config.apply_overrides(settings, rate_limit="fast")


@pytest.mark.parametrize(
    "name",
    [
        pytest.param("example.yaml", id="example"),
        pytest.param("nightly.yaml", id="nightly"),
    ],
)
def test_shipped_example_configs_load(name: str) -> None:
    """The configs/ examples the README points to pass every check."""
    path = Path(__file__).parent.parent / "configs" / name

    settings = config.load(path)

    assert settings.targets or settings.selectors
