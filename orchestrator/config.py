"""
Read a config file into frozen settings, checking every field once, at the edge.

Every error names the file, line, field path and bad value, states the rule and,
where there is one, the fix, on one line: ``configs/nightly.yaml:14
targets[3].dataset_id: must be 1-64 characters of A-Z a-z 0-9 _ -; got 'a/b'``.
Command-line overrides follow the same rules and name the flag instead.

This module is the schema: which keys exist, how sections nest, which
combinations are refused. The rules for single values (a rate, a URL, a number
of seconds) are in `orchestrator.rules`.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, TypeVar

from yaml.nodes import MappingNode, Node, ScalarNode

from orchestrator import rules
from orchestrator.errors import ConfigError
from orchestrator.yamldoc import (
    Document,
    RuleError,
    StreamedList,
    line,
    message,
    opened,
    short,
)

DEFAULT_RATE_LIMIT_PER_S = 10.0
DEFAULT_CONCURRENCY = 8
DEFAULT_TIMEOUT_S = 30.0
DEFAULT_SHUTDOWN_GRACE_S = 10.0
DEFAULT_POLL_INTERVAL_S = 10.0
DEFAULT_WAIT_TIMEOUT_S = 3600.0
DEFAULT_TOKEN_ENV = "MODELARTS_AUTH_TOKEN"  # noqa: S105 - a variable name, no secret
# The Huawei Cloud SDK's own variable names, so one environment serves both.
DEFAULT_AK_ENV = "HUAWEICLOUD_SDK_AK"
DEFAULT_SK_ENV = "HUAWEICLOUD_SDK_SK"
DEFAULT_SECURITY_TOKEN_ENV = "HUAWEICLOUD_SDK_SECURITY_TOKEN"  # noqa: S105 - a name


@dataclass(frozen=True, slots=True)
class Target:
    """
    One dataset to sync; ``line`` is where the config lists it (not compared).

    Discovery fills ``dataset_name`` and sets ``already_running`` for a dataset
    the list showed synchronizing (status 5), which is then not POSTed again.
    Neither is compared: a dataset is its (project_id, dataset_id) pair.
    """

    project_id: str
    dataset_id: str
    line: int | None = field(default=None, compare=False, repr=False)
    dataset_name: str | None = field(default=None, compare=False)
    already_running: bool = field(default=False, compare=False, repr=False)


@dataclass(frozen=True, slots=True)
class Selector:
    """
    A config entry naming datasets by name, glob or ``all``; resolved at run time.

    Exactly one of ``dataset_name`` (one exact name), ``patterns`` (shell globs
    on names) or ``everything`` is set. ``after`` counts the explicit targets
    listed before it, which keeps file order once it is resolved.
    """

    project_id: str
    dataset_name: str | None = None
    patterns: tuple[str, ...] = ()
    everything: bool = False
    after: int = 0
    line: int | None = field(default=None, compare=False, repr=False)

    def describe(self) -> str:
        """
        Return the entry as the config wrote it, such as ``dataset_names: [a*]``.
        """
        if self.dataset_name is not None:
            return f"dataset_name: {self.dataset_name}"
        if self.patterns:
            return f"dataset_names: [{', '.join(self.patterns)}]"
        return "datasets: all"


@dataclass(frozen=True, slots=True)
class WaitSettings:
    """
    Whether and how long to follow each accepted sync until it ends.

    Polls start ``poll_interval_s`` after the POST and grow by half each time
    up to ``max_poll_interval_s``: ten intervals, or 60 s if that is more,
    never less than one interval.
    """

    enabled: bool = False
    poll_interval_s: float = DEFAULT_POLL_INTERVAL_S
    timeout_s: float = DEFAULT_WAIT_TIMEOUT_S

    @property
    def max_poll_interval_s(self) -> float:
        """
        Return the longest pause between two polls of one sync.
        """
        return min(10.0 * self.poll_interval_s, max(60.0, self.poll_interval_s))


@dataclass(frozen=True, slots=True)
class RetrySettings:
    """
    How often and how patiently one target is retried after transient failures.
    """

    max_attempts: int = 5
    initial_backoff_s: float = 1.0
    max_backoff_s: float = 60.0
    # The run's retries may number at most budget_ratio of its first attempts
    # plus budget_floor (a floor so a small run can still retry).
    budget_ratio: float = 0.1
    budget_floor: int = 20


@dataclass(frozen=True, slots=True)
class CircuitSettings:
    """
    When to stop sending to an endpoint that keeps failing; failures 0 is off.
    """

    failures: int = 10
    cooldown_s: float = 30.0
    probes: int = 3


@dataclass(frozen=True, slots=True)
class HaltSettings:
    """
    When to stop dispatching early: most finished targets failed.

    Checked once at least ``min_targets`` have finished; above ``failure_ratio``
    of them failed, the run stops and the rest end ``cancelled`` (``halted``).
    """

    failure_ratio: float = 0.5
    min_targets: int = 20


@dataclass(frozen=True, slots=True)
class AuthSettings:
    """
    Which credential to use; only names of environment variables, never secrets.
    """

    type: str = "token"
    token_env: str = DEFAULT_TOKEN_ENV
    ak_env: str = DEFAULT_AK_ENV
    sk_env: str = DEFAULT_SK_ENV
    security_token_env: str = DEFAULT_SECURITY_TOKEN_ENV
    user: str = ""
    domain: str = ""
    password_env: str = ""
    iam_endpoint: str | None = None


@dataclass(frozen=True, slots=True)
class Settings:
    """
    One validated config file, with command-line overrides applied.
    """

    path: Path
    sha256: str
    endpoint: str
    targets: tuple[Target, ...]
    auth: AuthSettings | None = None
    ca_bundle: Path | None = None
    rate_limit_per_s: float = DEFAULT_RATE_LIMIT_PER_S
    rate_window_s: float = 1.0
    rate_burst: int = 1
    concurrency: int = DEFAULT_CONCURRENCY
    timeout_s: float = DEFAULT_TIMEOUT_S
    deadline_s: float | None = None
    shutdown_grace_s: float = DEFAULT_SHUTDOWN_GRACE_S
    retry: RetrySettings = field(default_factory=RetrySettings)
    max_failure_ratio: float = 0.0
    halt: HaltSettings | None = None
    wait: WaitSettings = field(default_factory=WaitSettings)
    selectors: tuple[Selector, ...] = ()
    circuit: CircuitSettings = field(default_factory=CircuitSettings)


_ENV_VARIABLE_FIX = (
    "put the secret in an environment variable and name that variable with "
    "auth.token_env, auth.sk_env or auth.password_env"
)

_TOP_KEYS = (
    "endpoint",
    "auth",
    "ca_bundle",
    "rate_limit",
    "concurrency",
    "timeout",
    "deadline",
    "shutdown_grace",
    "retry",
    "max_failure_ratio",
    "halt",
    "wait",
    "circuit",
    "targets",
)
# Which auth keys each type takes; "type" goes with all of them.
_AUTH_TYPE_KEYS = {
    "token": ("token_env",),
    "aksk": ("ak_env", "sk_env", "security_token_env"),
    "password": ("user", "domain", "password_env", "iam_endpoint"),
}
_AUTH_KEYS = ("type", *(key for keys in _AUTH_TYPE_KEYS.values() for key in keys))
_AUTH_TYPES = tuple(_AUTH_TYPE_KEYS)
_RETRY_KEYS = (
    "max_attempts",
    "initial_backoff",
    "max_backoff",
    "budget_ratio",
    "budget_floor",
)
_HALT_KEYS = ("failure_ratio", "min_targets")
_CIRCUIT_KEYS = ("failures", "cooldown", "probes")
_RATE_KEYS = ("limit", "burst")
# A target names its datasets by exactly one of these, beside project_id.
_TARGET_SELECTORS = ("dataset_id", "dataset_name", "datasets", "dataset_names")
_WAIT_KEYS = ("enabled", "poll_interval", "timeout")
_MAX_PATTERNS = 1000
# Ids go into the request path; '/', '.', '%' or a space would change the URL.
_ID_PATTERN = re.compile(r"[A-Za-z0-9_-]{1,64}")
_ID_RULE = "1-64 characters of A-Z a-z 0-9 _ -"

_T = TypeVar("_T")


def load(path: Path) -> Settings:
    """
    Read, parse and check one config file.

    The file must be UTF-8 and at most 50 MiB. Reading stops past 1,000,000 YAML
    nodes, each alias use counted again, which caps a file at about 200,000
    targets (five nodes each). A target that a YAML alias lists (``- *t``) gets
    the line of its anchor: the parser keeps no trace of where an alias was used.

    Raises:
        ConfigError: The file cannot be read, is not YAML, or breaks a rule.
    """
    too_large_fix = "split the targets over several files"
    with opened(
        path,
        "config file",
        too_large_fix,
        _ENV_VARIABLE_FIX,
        streamed={"targets": _target},
    ) as doc:
        return _settings(doc, path)


def apply_overrides(
    settings: Settings,
    *,
    endpoint: str | None = None,
    rate_limit: float | str | None = None,
    concurrency: int | None = None,
    wait: bool | None = None,
) -> Settings:
    """
    Return ``settings`` with the command-line values that were given.

    Raises:
        ConfigError: A value breaks the rule the config file's field follows.
    """
    if endpoint is not None:
        endpoint = _flag("--endpoint", endpoint, rules.endpoint)
    if rate_limit is not None:
        per_s, window_s = _flag("--rate-limit", _plain(rate_limit), rules.rate_limit)
        settings = replace(
            settings,
            rate_limit_per_s=per_s,
            rate_window_s=window_s,
            rate_burst=min(settings.rate_burst, rules.window_count(per_s, window_s)),
        )
    if concurrency is not None:
        concurrency = _flag("--concurrency", concurrency, rules.concurrency)

    return replace(
        settings,
        endpoint=settings.endpoint if endpoint is None else endpoint,
        concurrency=settings.concurrency if concurrency is None else concurrency,
        wait=settings.wait if not wait else replace(settings.wait, enabled=True),
    )


def _plain(value: float | str) -> object:
    """
    Read a flag's text as a number when it spells one ("50"), else keep it.
    """
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return value
    return value


def _flag(flag: str, value: object, check: Callable[[object], _T]) -> _T:
    """
    Check one command-line value, naming the flag in the error.
    """
    try:
        return check(value)
    except RuleError as exc:
        raise ConfigError(message(flag, "", exc.rule, exc.shown, exc.fix)) from None


def _settings(doc: Document, path: Path) -> Settings:
    """
    Return the settings the document describes.
    """
    if doc.root is None:
        text = f"{doc.file}:1: the file is empty; it needs endpoint and targets"
        raise ConfigError(text)
    fields = doc.mapping(
        doc.root,
        "",
        _TOP_KEYS,
        "must be a mapping of settings such as endpoint and targets",
        required=("endpoint", "targets"),
    )
    targets, selectors = _targets(doc, fields["targets"])

    return Settings(
        path=path,
        sha256=doc.sha256,
        endpoint=doc.check(fields["endpoint"], "endpoint", rules.endpoint),
        auth=_auth(doc, fields.get("auth")),
        ca_bundle=_ca_bundle(doc, fields.get("ca_bundle"), path),
        **_pace(doc, fields.get("rate_limit")),
        concurrency=doc.optional(
            fields, "concurrency", rules.concurrency, DEFAULT_CONCURRENCY
        ),
        timeout_s=doc.optional(fields, "timeout", rules.timeout, DEFAULT_TIMEOUT_S),
        deadline_s=doc.optional(fields, "deadline", rules.deadline, None),
        shutdown_grace_s=doc.optional(
            fields, "shutdown_grace", rules.shutdown_grace, DEFAULT_SHUTDOWN_GRACE_S
        ),
        retry=_retry(doc, fields.get("retry")),
        max_failure_ratio=doc.optional(fields, "max_failure_ratio", rules.ratio, 0.0),
        halt=_halt(doc, fields.get("halt")),
        wait=_wait(doc, fields.get("wait")),
        circuit=_circuit(doc, fields.get("circuit")),
        targets=targets,
        selectors=selectors,
    )


def _auth(doc: Document, node: Node | None) -> AuthSettings | None:
    """
    Return the auth settings, or None when the file has no ``auth`` key.

    Each type takes its own keys; a key of another type is an error rather
    than silently ignored.
    """
    if node is None:
        return None
    fields = doc.mapping(
        node, "auth", _AUTH_KEYS, "must be a mapping such as {type: token}"
    )
    kind = doc.optional(fields, "type", _auth_type, "token", "auth.")
    for key, value in fields.items():
        if key != "type" and key not in _AUTH_TYPE_KEYS[kind]:
            rule = f"is not a key of auth type {kind!r}"
            fix = f"{kind} takes {', '.join(_AUTH_TYPE_KEYS[kind])}"
            raise doc.error(value, f"auth.{key}", rule, fix=fix)
    if kind == "password":
        return _password_auth(doc, node, fields)

    default = AuthSettings()
    return AuthSettings(
        type=kind,
        token_env=doc.optional(
            fields, "token_env", rules.env_name, default.token_env, "auth."
        ),
        ak_env=doc.optional(fields, "ak_env", rules.env_name, default.ak_env, "auth."),
        sk_env=doc.optional(fields, "sk_env", rules.env_name, default.sk_env, "auth."),
        security_token_env=doc.optional(
            fields,
            "security_token_env",
            rules.env_name,
            default.security_token_env,
            "auth.",
        ),
    )


def _password_auth(doc: Document, node: Node, fields: dict[str, Node]) -> AuthSettings:
    """
    Return IAM password settings: who, in which account, and where the password is.
    """
    for key in ("user", "domain", "password_env"):
        if key not in fields:
            raise doc.error(node, f"auth.{key}", "required for auth type 'password'")
    iam_endpoint = None
    if "iam_endpoint" in fields:
        iam_endpoint = doc.check(
            fields["iam_endpoint"], "auth.iam_endpoint", rules.endpoint
        )

    return AuthSettings(
        type="password",
        user=doc.check(fields["user"], "auth.user", rules.name),
        domain=doc.check(fields["domain"], "auth.domain", rules.name),
        password_env=doc.check(
            fields["password_env"], "auth.password_env", rules.env_name
        ),
        iam_endpoint=iam_endpoint,
    )


def _ca_bundle(doc: Document, node: Node | None, config_path: Path) -> Path | None:
    """
    Return the CA bundle's path, relative paths taken from the config's folder.
    """
    if node is None:
        return None
    written = doc.check(node, "ca_bundle", rules.name)
    path = Path(written).expanduser()
    if not path.is_absolute():
        path = config_path.parent / path
    if not path.is_file():
        fix = "name a PEM file holding the CA certificate(s) that signed the server's"
        raise doc.error(
            node, "ca_bundle", "is not a readable file", short(written), fix
        )

    return path


def _pace(doc: Document, node: Node | None) -> dict[str, Any]:
    """
    Return the rate limit's settings: a number, "N/T" or {limit: ..., burst: N}.
    """
    if node is None:
        return {}
    if not isinstance(node, MappingNode):
        per_s, window_s = doc.check(node, "rate_limit", rules.rate_limit)
        return {"rate_limit_per_s": per_s, "rate_window_s": window_s}
    fields = doc.mapping(
        node,
        "rate_limit",
        _RATE_KEYS,
        "must be a number, 'N/period' or a mapping such as {limit: 300/min, burst: 5}",
        required=("limit",),
    )
    per_s, window_s = doc.check(fields["limit"], "rate_limit.limit", rules.rate_limit)
    burst = doc.optional(fields, "burst", rules.burst, 1, "rate_limit.")
    if burst > (most := rules.window_count(per_s, window_s)):
        rule = f"must be <= the requests the limit allows per period ({most})"
        raise doc.error(fields["burst"], "rate_limit.burst", rule, short(burst))

    return {"rate_limit_per_s": per_s, "rate_window_s": window_s, "rate_burst": burst}


def _retry(doc: Document, node: Node | None) -> RetrySettings:
    """
    Return the retry settings, checking that the backoff range is not inverted.
    """
    default = RetrySettings()
    if node is None:
        return default
    fields = doc.mapping(
        node, "retry", _RETRY_KEYS, "must be a mapping such as {max_attempts: 5}"
    )

    retry = RetrySettings(
        max_attempts=doc.optional(
            fields, "max_attempts", rules.max_attempts, default.max_attempts, "retry."
        ),
        initial_backoff_s=doc.optional(
            fields,
            "initial_backoff",
            rules.backoff,
            default.initial_backoff_s,
            "retry.",
        ),
        max_backoff_s=doc.optional(
            fields, "max_backoff", rules.backoff, default.max_backoff_s, "retry."
        ),
        budget_ratio=doc.optional(
            fields, "budget_ratio", rules.budget_ratio, default.budget_ratio, "retry."
        ),
        budget_floor=doc.optional(
            fields, "budget_floor", rules.budget_floor, default.budget_floor, "retry."
        ),
    )
    if retry.max_backoff_s < retry.initial_backoff_s:
        raise _inverted_backoff(doc, fields, retry)
    return retry


def _halt(doc: Document, node: Node | None) -> HaltSettings | None:
    """
    Return the early-stop rule, or None when the file has no ``halt`` key.
    """
    if node is None:
        return None
    fields = doc.mapping(
        node,
        "halt",
        _HALT_KEYS,
        "must be a mapping such as {failure_ratio: 0.5, min_targets: 20}",
    )
    default = HaltSettings()

    return HaltSettings(
        failure_ratio=doc.optional(
            fields, "failure_ratio", rules.ratio, default.failure_ratio, "halt."
        ),
        min_targets=doc.optional(
            fields, "min_targets", rules.min_targets, default.min_targets, "halt."
        ),
    )


def _circuit(doc: Document, node: Node | None) -> CircuitSettings:
    """
    Return the circuit breaker's settings.
    """
    default = CircuitSettings()
    if node is None:
        return default
    fields = doc.mapping(
        node, "circuit", _CIRCUIT_KEYS, "must be a mapping such as {failures: 10}"
    )

    return CircuitSettings(
        failures=doc.optional(
            fields, "failures", rules.circuit_failures, default.failures, "circuit."
        ),
        cooldown_s=doc.optional(
            fields, "cooldown", rules.cooldown, default.cooldown_s, "circuit."
        ),
        probes=doc.optional(fields, "probes", rules.probes, default.probes, "circuit."),
    )


def _inverted_backoff(
    doc: Document, fields: dict[str, Node], retry: RetrySettings
) -> ConfigError:
    """
    Describe a max_backoff below initial_backoff, blaming the key written.
    """
    if "max_backoff" in fields:
        node = fields["max_backoff"]
        rule = f"must be >= retry.initial_backoff ({retry.initial_backoff_s:g})"
        return doc.error(node, "retry.max_backoff", rule, doc.preview(node))

    node = fields["initial_backoff"]
    rule = f"must be <= retry.max_backoff, which defaults to {retry.max_backoff_s:g}"
    fix = "set retry.max_backoff too"
    return doc.error(node, "retry.initial_backoff", rule, doc.preview(node), fix)


def _targets(
    doc: Document, node: Node
) -> tuple[tuple[Target, ...], tuple[Selector, ...]]:
    """
    Return the explicit targets and the selectors, each with its item's line.

    A plain list was read item by item while the file was parsed (see `load`);
    one given by an alias or with an anchor is read here.
    """
    rule = "must be a non-empty list of {project_id: ..., dataset_id: ...}"
    if isinstance(node, StreamedList):
        read = node.results
    else:
        read = [
            _target(doc, item, i)
            for i, item in enumerate(doc.items(node, "targets", rule))
        ]
    if not read:
        raise doc.error(node, "targets", rule, doc.preview(node))

    targets: list[Target] = []
    selectors: list[Selector] = []
    for entry in read:
        if isinstance(entry, Target):
            targets.append(entry)
        else:
            assert isinstance(entry, Selector)
            selectors.append(replace(entry, after=len(targets)))
    return tuple(targets), tuple(selectors)


def _target(doc: Document, item: Node, index: int) -> Target | Selector:
    """
    Return one item of ``targets``: a dataset by id, or a selector to resolve.

    A selector's ``after`` is filled in by `_targets`, which sees the whole list.
    """
    field = f"targets[{index}]"
    fields = doc.mapping(
        item,
        field,
        ("project_id", *_TARGET_SELECTORS),
        "must be a mapping such as {project_id: ..., dataset_id: ...}",
        required=("project_id",),
    )
    project_id = _identifier(doc, fields["project_id"], f"{field}.project_id")
    chosen = [key for key in _TARGET_SELECTORS if key in fields]
    if not chosen:
        fix = "or name datasets with dataset_name, datasets or dataset_names"
        rule = "required key is missing"
        raise doc.error(item, f"{field}.dataset_id", rule, fix=fix)
    if len(chosen) > 1:
        rule = f"takes only one of {', '.join(_TARGET_SELECTORS)}"
        raise doc.error(item, field, rule, ", ".join(chosen))
    key = chosen[0]
    where = f"{field}.{key}"
    if key == "dataset_id":
        dataset_id = _identifier(doc, fields[key], where)
        return Target(project_id, dataset_id, line=line(item))
    selector = Selector(project_id, after=0, line=line(item))
    if key == "dataset_name":
        name = doc.check(fields[key], where, rules.dataset_name)
        return replace(selector, dataset_name=name)
    if key == "datasets":
        doc.check(fields[key], where, rules.all_word)
        return replace(selector, everything=True)
    return replace(selector, patterns=_patterns(doc, fields[key], where))


def _patterns(doc: Document, node: Node, field: str) -> tuple[str, ...]:
    """
    Return a non-empty list of name globs (``*``, ``?``, ``[...]``).
    """
    rule = "must be a non-empty list of dataset name globs such as ['cars-*']"
    items = doc.items(node, field, rule)
    if not items or len(items) > _MAX_PATTERNS:
        raise doc.error(node, field, rule, doc.preview(node))

    return tuple(
        doc.check(item, f"{field}[{i}]", rules.dataset_name)
        for i, item in enumerate(items)
    )


def _wait(doc: Document, node: Node | None) -> WaitSettings:
    """
    Return how accepted syncs are followed; ``--wait`` can switch it on too.
    """
    default = WaitSettings()
    if node is None:
        return default
    fields = doc.mapping(
        node, "wait", _WAIT_KEYS, "must be a mapping such as {enabled: true}"
    )

    return WaitSettings(
        enabled=doc.optional(fields, "enabled", rules.flag_value, False, "wait."),
        poll_interval_s=doc.optional(
            fields,
            "poll_interval",
            rules.poll_interval,
            default.poll_interval_s,
            "wait.",
        ),
        timeout_s=doc.optional(
            fields, "timeout", rules.wait_timeout, default.timeout_s, "wait."
        ),
    )


def _identifier(doc: Document, node: Node, field: str) -> str:
    """
    Return a project or dataset id, refusing numbers YAML read from bare digits.
    """
    value = doc.value(node, field)
    if isinstance(value, str) and _ID_PATTERN.fullmatch(value):
        return value

    rule = f"must be {_ID_RULE}"
    fix = None
    if not isinstance(value, str):
        rule = f"must be a string of {_ID_RULE}"
        written = node.value if isinstance(node, ScalarNode) else ""
        if _ID_PATTERN.fullmatch(written):
            fix = f"quote it: '{written}'"
    raise doc.error(node, field, rule, short(value), fix)


def _auth_type(value: object) -> str:
    """
    Check the kind of credential.
    """
    if isinstance(value, str) and value in _AUTH_TYPES:
        return value
    supported = ", ".join(_AUTH_TYPES)
    fix = "leave auth out to use the default credential chain"
    raise RuleError(f"must be a supported auth type ({supported})", short(value), fix)
