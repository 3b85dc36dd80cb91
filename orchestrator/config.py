"""
Read a config file into frozen settings, checking every field once, at the edge.

Every error names the file, line, field path and bad value, states the rule and,
where there is one, the fix, on one line: ``configs/nightly.yaml:14
targets[3].dataset_id: must be 1-64 characters of A-Z a-z 0-9 _ -; got 'a/b'``.
Command-line overrides follow the same rules and name the flag instead.
"""

from __future__ import annotations

import codecs
import difflib
import gc
import hashlib
import ipaddress
import math
import os
import re
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TypeVar
from urllib.parse import urlsplit

import yaml
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from orchestrator.errors import ConfigError

DEFAULT_RATE_LIMIT_PER_S = 10.0
DEFAULT_CONCURRENCY = 8
DEFAULT_TIMEOUT_S = 30.0
DEFAULT_SHUTDOWN_GRACE_S = 10.0
DEFAULT_TOKEN_ENV = "MODELARTS_AUTH_TOKEN"  # noqa: S105 - a variable name, no secret


@dataclass(frozen=True, slots=True)
class Target:
    """
    One dataset to sync; ``line`` is where the config lists it (not compared).
    """

    project_id: str
    dataset_id: str
    line: int | None = field(default=None, compare=False, repr=False)


@dataclass(frozen=True, slots=True)
class RetrySettings:
    """
    How often and how patiently one target is retried after transient failures.
    """

    max_attempts: int = 5
    initial_backoff_s: float = 1.0
    max_backoff_s: float = 60.0


@dataclass(frozen=True, slots=True)
class AuthSettings:
    """
    Which credential to use; only names of environment variables, never secrets.
    """

    type: str = "token"
    token_env: str = DEFAULT_TOKEN_ENV


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
    rate_limit_per_s: float = DEFAULT_RATE_LIMIT_PER_S
    concurrency: int = DEFAULT_CONCURRENCY
    timeout_s: float = DEFAULT_TIMEOUT_S
    deadline_s: float | None = None
    shutdown_grace_s: float = DEFAULT_SHUTDOWN_GRACE_S
    retry: RetrySettings = field(default_factory=RetrySettings)


_MAX_FILE_BYTES = 50 * 1024 * 1024
# Aliases let a small file expand into an exponential tree ("billion laughs"); each
# alias use is counted again, so the ceiling bounds work, not file size.
_MAX_NODES = 1_000_000
_REPR_LIMIT = 80
_PREVIEW_ITEMS = 5
_LONG_ENV_VALUE = 32

# libyaml's parser made a 20,000-target file load in 0.5 s instead of 5.2 s and
# caps nesting at 1000 levels; scalars resolve the same either way (YAML 1.1).
_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)

_STR_TAG = "tag:yaml.org,2002:str"
_MAP_TAG = "tag:yaml.org,2002:map"
_SEQ_TAG = "tag:yaml.org,2002:seq"
_MERGE_TAG = "tag:yaml.org,2002:merge"

_TOP_KEYS = (
    "endpoint",
    "auth",
    "rate_limit",
    "concurrency",
    "timeout",
    "deadline",
    "shutdown_grace",
    "retry",
    "targets",
)
_AUTH_KEYS = ("type", "token_env")
_AUTH_TYPES = ("token",)
_RETRY_KEYS = ("max_attempts", "initial_backoff", "max_backoff")
_TARGET_KEYS = ("project_id", "dataset_id")
_SECRET_KEYS = frozenset(
    {
        "access_token",
        "api_key",
        "apikey",
        "auth_token",
        "passwd",
        "password",
        "private_key",
        "secret",
        "secret_access_key",
        "secret_key",
        "security_token",
        "sk",
        "token",
        "x_auth_token",
    }
)

# Ids go into the request path; '/', '.', '%' or a space would change the URL.
_ID_PATTERN = re.compile(r"[A-Za-z0-9_-]{1,64}")
_ID_RULE = "1-64 characters of A-Z a-z 0-9 _ -"
_ENV_PATTERN = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_KEY_PATTERN = re.compile(r"[A-Za-z0-9_-]{1,64}")
_URL_USERINFO = re.compile(r"(?<=://)[^/?#]*@")
_URL_QUERY = re.compile(r"\?[^#]*")

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
    file = _display(path)
    data = _read(path, file)
    text = _decode(data, file)

    gc_was_enabled = gc.isenabled()
    # The collector rescans the growing node tree again and again while nothing
    # in it can be garbage; pausing it took a 20,000-target load from 1.0 to 0.5 s.
    gc.disable()
    try:
        root = _compose(text, file)
        return _Walk(file).settings(root, path, hashlib.sha256(data).hexdigest())
    except RecursionError as exc:
        message = f"{file}: nested too deeply to read"
        raise ConfigError(message) from exc
    finally:
        if gc_was_enabled:
            gc.enable()


def apply_overrides(
    settings: Settings,
    *,
    endpoint: str | None = None,
    rate_limit: float | None = None,
    concurrency: int | None = None,
) -> Settings:
    """
    Return ``settings`` with the command-line values that were given.

    Raises:
        ConfigError: A value breaks the rule the config file's field follows.
    """
    if endpoint is not None:
        endpoint = _flag("--endpoint", endpoint, _endpoint)
    if rate_limit is not None:
        rate_limit = _flag("--rate-limit", rate_limit, _rate_limit)
    if concurrency is not None:
        concurrency = _flag("--concurrency", concurrency, _concurrency)

    return replace(
        settings,
        endpoint=settings.endpoint if endpoint is None else endpoint,
        rate_limit_per_s=(
            settings.rate_limit_per_s if rate_limit is None else rate_limit
        ),
        concurrency=settings.concurrency if concurrency is None else concurrency,
    )


def _flag(flag: str, value: object, check: Callable[[object], _T]) -> _T:
    """
    Check one command-line value, naming the flag in the error.
    """
    try:
        return check(value)
    except _RuleError as exc:
        raise ConfigError(_message(flag, "", exc.rule, exc.shown, exc.fix)) from None


def _read(path: Path, file: str) -> bytes:
    """
    Return the file's bytes, refusing files too large to be a config.
    """
    try:
        with open(path, "rb") as stream:
            size = os.fstat(stream.fileno()).st_size
            # Read one byte past the limit: pipes and /proc files report size 0.
            data = b"" if size > _MAX_FILE_BYTES else stream.read(_MAX_FILE_BYTES + 1)
    except OSError as exc:
        reason = exc.strerror or str(exc)
        raise ConfigError(f"{file}: cannot read the config file: {reason}") from exc

    if max(size, len(data)) > _MAX_FILE_BYTES:
        message = (
            f"{file}: the config file is larger than 50 MiB; "
            "split the targets over several files"
        )
        raise ConfigError(message)
    return data


def _decode(data: bytes, file: str) -> str:
    """
    Decode UTF-8 (with or without a byte-order mark), naming a bad byte's place.
    """
    body = data.removeprefix(codecs.BOM_UTF8)
    try:
        return body.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = body.count(b"\n", 0, exc.start) + 1
        column = exc.start - body.rfind(b"\n", 0, exc.start)
        message = (
            f"{file}:{line}:{column}: not UTF-8 text: byte {body[exc.start]:#04x} "
            "cannot be decoded; save the file as UTF-8"
        )
        raise ConfigError(message) from exc


def _compose(text: str, file: str) -> Node | None:
    """
    Parse the text into a node tree, translating YAML's errors.
    """
    try:
        return yaml.compose(text, Loader=_LOADER)
    except yaml.YAMLError as exc:
        raise ConfigError(_yaml_message(exc, text, file)) from exc


def _yaml_message(exc: yaml.YAMLError, text: str, file: str) -> str:
    """
    Describe a parse error in one line: file, line:column and the problem.
    """
    if isinstance(exc, yaml.MarkedYAMLError) and exc.problem_mark is not None:
        mark = exc.problem_mark
        where = f"{file}:{mark.line + 1}:{mark.column + 1}"
        problem = exc.problem or "cannot be parsed"
        if exc.context and exc.context_mark is not None:
            context_line = exc.context_mark.line + 1
            problem = f"{exc.context} at line {context_line}: {problem}"
        elif exc.context:
            problem = f"{exc.context}: {problem}"
    elif isinstance(exc, yaml.reader.ReaderError):
        line = text.count("\n", 0, exc.position) + 1
        column = exc.position - text.rfind("\n", 0, exc.position)
        where = f"{file}:{line}:{column}"
        character = exc.character
        shown = f"{character:#06x}" if isinstance(character, int) else repr(character)
        problem = f"character {shown} is not allowed: {exc.reason}"
    else:
        where, problem = file, str(exc)

    return f"{where}: not valid YAML: {' '.join(problem.split())}"


class _RuleError(Exception):
    """
    A value broke a rule; whoever catches it adds where the value came from.
    """

    def __init__(
        self, rule: str, shown: str | None = None, fix: str | None = None
    ) -> None:
        super().__init__(rule)
        self.rule = rule
        self.shown = shown
        self.fix = fix


class _Collection:
    """
    Stand for a YAML list or mapping where a single value belongs.

    Holds only a short preview, so a deep or aliased structure is never built.
    """

    __slots__ = ("_preview",)

    def __init__(self, preview: str) -> None:
        self._preview = preview

    def __repr__(self) -> str:
        return self._preview


class _Walk:
    """
    Check one composed YAML document against the schema, keeping line numbers.
    """

    __slots__ = ("_constructor", "_file", "_nodes")

    def __init__(self, file: str) -> None:
        self._file = file
        self._nodes = 0
        self._constructor = yaml.constructor.SafeConstructor()

    def settings(self, root: Node | None, path: Path, sha256: str) -> Settings:
        """
        Return the settings the document describes.
        """
        if root is None:
            message = (
                f"{self._file}:1: the file is empty; it needs endpoint and targets"
            )
            raise ConfigError(message)
        fields = self._mapping(
            root,
            "",
            _TOP_KEYS,
            "must be a mapping of settings such as endpoint and targets",
            required=("endpoint", "targets"),
        )

        return Settings(
            path=path,
            sha256=sha256,
            endpoint=self._check(fields["endpoint"], "endpoint", _endpoint),
            auth=self._auth(fields.get("auth")),
            rate_limit_per_s=self._optional(
                fields, "rate_limit", _rate_limit, DEFAULT_RATE_LIMIT_PER_S
            ),
            concurrency=self._optional(
                fields, "concurrency", _concurrency, DEFAULT_CONCURRENCY
            ),
            timeout_s=self._optional(fields, "timeout", _timeout, DEFAULT_TIMEOUT_S),
            deadline_s=self._optional(fields, "deadline", _deadline, None),
            shutdown_grace_s=self._optional(
                fields, "shutdown_grace", _shutdown_grace, DEFAULT_SHUTDOWN_GRACE_S
            ),
            retry=self._retry(fields.get("retry")),
            targets=self._targets(fields["targets"]),
        )

    def _auth(self, node: Node | None) -> AuthSettings | None:
        """
        Return the auth settings, or None when the file has no ``auth`` key.
        """
        if node is None:
            return None
        fields = self._mapping(
            node, "auth", _AUTH_KEYS, "must be a mapping such as {type: token}"
        )

        return AuthSettings(
            type=self._optional(fields, "type", _auth_type, "token", "auth."),
            token_env=self._optional(
                fields, "token_env", _env_name, DEFAULT_TOKEN_ENV, "auth."
            ),
        )

    def _retry(self, node: Node | None) -> RetrySettings:
        """
        Return the retry settings, checking that the backoff range is not inverted.
        """
        default = RetrySettings()
        if node is None:
            return default
        fields = self._mapping(
            node, "retry", _RETRY_KEYS, "must be a mapping such as {max_attempts: 5}"
        )

        retry = RetrySettings(
            max_attempts=self._optional(
                fields, "max_attempts", _max_attempts, default.max_attempts, "retry."
            ),
            initial_backoff_s=self._optional(
                fields, "initial_backoff", _backoff, default.initial_backoff_s, "retry."
            ),
            max_backoff_s=self._optional(
                fields, "max_backoff", _backoff, default.max_backoff_s, "retry."
            ),
        )
        if retry.max_backoff_s < retry.initial_backoff_s:
            raise self._inverted_backoff(fields, retry)
        return retry

    def _inverted_backoff(
        self, fields: dict[str, Node], retry: RetrySettings
    ) -> ConfigError:
        """
        Describe a max_backoff below initial_backoff, blaming the key written.
        """
        if "max_backoff" in fields:
            node = fields["max_backoff"]
            rule = f"must be >= retry.initial_backoff ({retry.initial_backoff_s:g})"
            return self._error(node, "retry.max_backoff", rule, self._preview(node))

        node = fields["initial_backoff"]
        rule = (
            f"must be <= retry.max_backoff, which defaults to {retry.max_backoff_s:g}"
        )
        fix = "set retry.max_backoff too"
        return self._error(
            node, "retry.initial_backoff", rule, self._preview(node), fix
        )

    def _targets(self, node: Node) -> tuple[Target, ...]:
        """
        Return the targets in file order, each with the line of its list item.
        """
        if not isinstance(node, SequenceNode) or node.tag != _SEQ_TAG or not node.value:
            rule = "must be a non-empty list of {project_id: ..., dataset_id: ...}"
            raise self._error(node, "targets", rule, self._preview(node))
        self._visit(node, "targets")

        targets = []
        for index, item in enumerate(node.value):
            field = f"targets[{index}]"
            fields = self._mapping(
                item,
                field,
                _TARGET_KEYS,
                "must be a mapping such as {project_id: ..., dataset_id: ...}",
                required=_TARGET_KEYS,
            )
            project_id = self._identifier(fields["project_id"], f"{field}.project_id")
            dataset_id = self._identifier(fields["dataset_id"], f"{field}.dataset_id")
            targets.append(Target(project_id, dataset_id, line=_line(item)))
        return tuple(targets)

    def _identifier(self, node: Node, field: str) -> str:
        """
        Return a project or dataset id, refusing numbers YAML read from bare digits.
        """
        value = self._value(node, field)
        if isinstance(value, str) and _ID_PATTERN.fullmatch(value):
            return value

        rule = f"must be {_ID_RULE}"
        fix = None
        if not isinstance(value, str):
            rule = f"must be a string of {_ID_RULE}"
            written = node.value if isinstance(node, ScalarNode) else ""
            if _ID_PATTERN.fullmatch(written):
                fix = f"quote it: '{written}'"
        raise self._error(node, field, rule, _short(value), fix)

    def _optional(
        self,
        fields: dict[str, Node],
        key: str,
        check: Callable[[object], _T],
        default: _T,
        prefix: str = "",
    ) -> _T:
        """
        Check the value of ``key`` if the mapping has it, else return ``default``.
        """
        node = fields.get(key)
        if node is None:
            return default
        return self._check(node, prefix + key, check)

    def _check(self, node: Node, field: str, check: Callable[[object], _T]) -> _T:
        """
        Construct one value and apply its rule, adding file:line to any error.
        """
        try:
            return check(self._value(node, field))
        except _RuleError as exc:
            raise self._error(node, field, exc.rule, exc.shown, exc.fix) from None

    def _mapping(
        self,
        node: Node,
        field: str,
        known: tuple[str, ...],
        expected: str,
        required: tuple[str, ...] = (),
    ) -> dict[str, Node]:
        """
        Return key -> value node of a mapping whose keys are all known and present.
        """
        pairs = self._pairs(node, field, known, expected, frozenset())
        for key in required:
            if key not in pairs:
                rule = "required key is missing"
                raise self._error(node, _child(field, key), rule)

        return {key: value for key, (_, value) in pairs.items()}

    def _pairs(
        self,
        node: Node,
        field: str,
        known: tuple[str, ...],
        expected: str,
        merging: frozenset[int],
    ) -> dict[str, tuple[Node, Node]]:
        """
        Return key -> (key node, value node), applying merge keys (``<<: *x``).

        Keys written in the mapping win over merged ones, and earlier merge sources
        over later ones, as YAML's merge key type says; a key written twice is an
        error, because PyYAML would silently keep the last.
        """
        if not isinstance(node, MappingNode) or node.tag != _MAP_TAG:
            raise self._error(node, field, expected, self._preview(node))
        if id(node) in merging:
            raise self._error(node, field, "merges a mapping into itself")
        # The mapping and its keys; values are counted where they are read.
        self._visit(node, field, 1 + len(node.value))

        own: dict[str, tuple[Node, Node]] = {}
        merged: dict[str, tuple[Node, Node]] = {}
        for key_node, value_node in node.value:
            if key_node.tag == _MERGE_TAG:
                inner = merging | {id(node)}
                for source in self._merge_sources(value_node, field):
                    pairs = self._pairs(source, field, known, expected, inner)
                    for key, pair in pairs.items():
                        merged.setdefault(key, pair)
                continue
            key = self._key(key_node, field, known)
            if key in own:
                first = _line(own[key][0])
                rule = f"duplicate key, first given at line {first}"
                raise self._error(key_node, _child(field, key), rule, fix="keep one")
            own[key] = (key_node, value_node)

        for key, pair in merged.items():
            own.setdefault(key, pair)
        return own

    def _merge_sources(self, node: Node, field: str) -> list[Node]:
        """
        Return the mappings a merge key (``<<``) names: one, or a list of them.
        """
        if isinstance(node, SequenceNode):
            self._visit(node, field)
            return list(node.value)
        if isinstance(node, MappingNode):
            return [node]

        rule = "a merge key (<<) needs a mapping or a list of mappings"
        raise self._error(node, field, rule, self._preview(node))

    def _key(self, node: Node, field: str, known: tuple[str, ...]) -> str:
        """
        Return a mapping key, refusing keys that are unknown or look like secrets.
        """
        if not isinstance(node, ScalarNode):
            raise self._error(
                node, field, "keys must be plain text", self._preview(node)
            )
        # The written text is what a reader sees; every known key resolves to itself.
        key: str = node.value
        if key in known:
            return key

        if key.lower().replace("-", "_") in _SECRET_KEYS:
            rule = "secrets must not be written in the config file"
            fix = (
                "put the secret in an environment variable "
                "and name that variable with auth.token_env"
            )
            raise self._error(node, _child(field, key), rule, fix=fix)
        raise self._error(
            node, _child(field, key), "unknown key", fix=_suggest(key, known)
        )

    def _value(self, node: Node, field: str) -> object:
        """
        Return a scalar as YAML types it, or a preview of a list or mapping.
        """
        self._visit(node, field)
        if not isinstance(node, ScalarNode):
            return _Collection(self._preview(node))
        if node.tag == _STR_TAG:
            return node.value

        try:
            return self._constructor.construct_object(node)
        except yaml.YAMLError as exc:
            problem = getattr(exc, "problem", None) or str(exc)
            rule = f"cannot be read: {' '.join(problem.split())}"
            raise self._error(node, field, rule, _short(node.value)) from exc
        except (ValueError, OverflowError) as exc:
            rule = "cannot be read: out of range or too many digits"
            raise self._error(node, field, rule, _short(node.value)) from exc

    def _preview(self, node: Node, depth: int = 0) -> str:
        """
        Return a short Python-like rendering of a node, bounded in size and depth.
        """
        if isinstance(node, ScalarNode):
            try:
                return _short(self._constructor.construct_object(node))
            except (yaml.YAMLError, ValueError, OverflowError):
                return _short(node.value)

        sequence = isinstance(node, SequenceNode)
        opening, closing = ("[", "]") if sequence else ("{", "}")
        # Stop early: aliases can make even a short file an exponential tree.
        if depth >= 2 and node.value:
            return f"{opening}...{closing}"

        items = node.value[:_PREVIEW_ITEMS]
        if sequence:
            parts = [self._preview(item, depth + 1) for item in items]
        else:
            parts = [
                f"{self._preview(key, depth + 1)}: {self._preview(value, depth + 1)}"
                for key, value in items
            ]
        if len(node.value) > _PREVIEW_ITEMS:
            parts.append("...")

        return _cut(opening + ", ".join(parts) + closing)

    def _visit(self, node: Node, field: str, count: int = 1) -> None:
        """
        Count nodes read, refusing documents that aliases blow up past the ceiling.
        """
        self._nodes += count
        if self._nodes > _MAX_NODES:
            rule = (
                f"the document expands to more than {_MAX_NODES:,} YAML nodes "
                "(every use of an alias counts again)"
            )
            raise self._error(node, field, rule, fix="use fewer aliases or merge keys")

    def _error(
        self,
        node: Node,
        field: str,
        rule: str,
        shown: str | None = None,
        fix: str | None = None,
    ) -> ConfigError:
        """
        Return the error for a rule broken at ``node``.
        """
        where = f"{self._file}:{_line(node)}"
        return ConfigError(_message(where, field, rule, shown, fix))


def _message(
    where: str, field: str, rule: str, shown: str | None, fix: str | None
) -> str:
    """
    Format ``{where} {field}: {rule}; got {shown}; {fix}`` on one line.
    """
    message = f"{where} {field}: {rule}" if field else f"{where}: {rule}"
    if shown is not None:
        message += f"; got {shown}"
    if fix:
        message += f"; {fix}"
    return message.replace("\r", "\\r").replace("\n", "\\n")


def _rate_limit(value: object) -> float:
    """
    Check requests per second for the whole run.
    """
    return _number(value, above=0)


def _concurrency(value: object) -> int:
    """
    Check how many requests may be in flight at once.
    """
    return _whole(value, at_least=1, at_most=1000)


def _timeout(value: object) -> float:
    """
    Check the seconds one HTTP request may take.
    """
    return _number(value, above=0, at_most=3600)


def _deadline(value: object) -> float | None:
    """
    Check the seconds the whole run may take; null means no deadline.
    """
    if value is None:
        return None
    try:
        return _number(value, above=0)
    except _RuleError as exc:
        raise _RuleError(f"{exc.rule} or null", exc.shown, exc.fix) from None


def _shutdown_grace(value: object) -> float:
    """
    Check the seconds requests in flight may finish after a stop signal.
    """
    return _number(value, at_least=0)


def _max_attempts(value: object) -> int:
    """
    Check how many requests one target may get, the first one included.
    """
    return _whole(value, at_least=1, at_most=100)


def _backoff(value: object) -> float:
    """
    Check a backoff wait in seconds.
    """
    return _number(value, at_least=0)


def _number(
    value: object,
    *,
    above: float | None = None,
    at_least: float | None = None,
    at_most: float | None = None,
) -> float:
    """
    Return a finite int or float within bounds, as a float.
    """
    rule = f"must be a number {_bounds(above, at_least, at_most)}"
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise _RuleError(rule, _short(value), _number_hint(value, whole=False))
    if isinstance(value, float) and not math.isfinite(value):
        raise _RuleError(rule, _short(value), "infinity and NaN are not allowed")
    if (
        (above is not None and not value > above)
        or (at_least is not None and not value >= at_least)
        or (at_most is not None and not value <= at_most)
    ):
        raise _RuleError(rule, _short(value))

    try:
        return float(value)
    except OverflowError:
        raise _RuleError(rule, _short(value), "a float cannot hold it") from None


def _whole(value: object, *, at_least: int, at_most: int) -> int:
    """
    Return an int (not a bool, not a float) within bounds.
    """
    rule = f"must be a whole number {_bounds(None, at_least, at_most)}"
    if isinstance(value, bool) or not isinstance(value, int):
        fix = _number_hint(value, whole=True)
        if isinstance(value, float) and value.is_integer():
            fix = f"write {int(value)}" if at_least <= value <= at_most else None
        raise _RuleError(rule, _short(value), fix)
    if not at_least <= value <= at_most:
        raise _RuleError(rule, _short(value))
    return value


def _bounds(above: float | None, at_least: float | None, at_most: float | None) -> str:
    """
    Return bounds as text, such as ``> 0 and <= 3600``.
    """
    parts = []
    if above is not None:
        parts.append(f"> {above:g}")
    if at_least is not None:
        parts.append(f">= {at_least:g}")
    if at_most is not None:
        parts.append(f"<= {at_most:g}")
    return " and ".join(parts)


def _number_hint(value: object, *, whole: bool) -> str | None:
    """
    Suggest the plain number a string spells, if it spells one.

    YAML 1.1 reads ``1e3`` (no dot) as text, and quoted digits are text too.
    """
    if not isinstance(value, str):
        return None
    try:
        number = float(value)
    except ValueError:
        return None
    if not math.isfinite(number) or (whole and not number.is_integer()):
        return None

    plain = int(number) if number.is_integer() and abs(number) < 1e15 else number
    return f"write a plain number such as {plain!r}"


def _endpoint(value: object) -> str:
    """
    Return the endpoint URL without a trailing slash.

    Only https, except plain http to a loopback host (the simulator, a tunnel).
    """
    if not isinstance(value, str):
        rule = "must be a URL such as https://modelarts.cn-north-4.myhuaweicloud.com"
        raise _RuleError(rule, _short(value))
    shown = _short(_URL_QUERY.sub("?***", _URL_USERINFO.sub("***@", value)))
    if " " in value or not value.isprintable():
        raise _RuleError("must not contain spaces or control characters", shown)
    try:
        parts = urlsplit(value)
        port = parts.port
    except ValueError:
        raise _RuleError("must be a valid URL", shown) from None

    scheme = parts.scheme.lower()
    if "@" in parts.netloc:
        fix = "credentials come from environment variables"
        raise _RuleError("must not contain user info (user:password@)", shown, fix)
    if scheme not in ("http", "https") or not parts.hostname or port == 0:
        raise _RuleError("must be an absolute https:// URL with a host", shown)
    if scheme == "http" and not _is_loopback(parts.hostname):
        rule = (
            "must use https; plain http is allowed only for localhost, 127.0.0.0/8, ::1"
        )
        raise _RuleError(rule, shown)
    if parts.path not in ("", "/") or "?" in value or "#" in value:
        fix = (
            f"give only {parts.scheme}://{parts.netloc}; the API path is added per call"
        )
        raise _RuleError("must not have a path, query or fragment", shown, fix)

    return value.removesuffix("/")


def _is_loopback(host: str) -> bool:
    """
    Tell whether a URL's host is this machine: localhost, 127.0.0.0/8 or ::1.
    """
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _auth_type(value: object) -> str:
    """
    Check the kind of credential.
    """
    if isinstance(value, str) and value in _AUTH_TYPES:
        return value
    supported = ", ".join(_AUTH_TYPES)
    fix = "leave auth out to use the default credential chain"
    raise _RuleError(f"must be a supported auth type ({supported})", _short(value), fix)


def _env_name(value: object) -> str:
    """
    Check an environment variable's name, never echoing what may be a secret.
    """
    if isinstance(value, str) and _ENV_PATTERN.fullmatch(value):
        return value

    rule = "must name an environment variable (letters, digits, _; no leading digit)"
    if isinstance(value, str) and len(value) > _LONG_ENV_VALUE:
        shown = f"a {len(value)}-character string, not shown in case it is a secret"
        fix = "put the secret in an environment variable and write that variable's name"
        raise _RuleError(rule, shown, fix)
    raise _RuleError(rule, _short(value))


def _suggest(key: str, known: tuple[str, ...]) -> str:
    """
    Name the known key closest to a misspelt one, or list them all.
    """
    close = difflib.get_close_matches(key.lower().replace("-", "_"), known, n=1)
    if close:
        return f"did you mean {close[0]!r}?"
    return "known keys: " + ", ".join(known)


def _child(field: str, key: str) -> str:
    """
    Return the field path of ``key`` inside ``field``.
    """
    name = key if _KEY_PATTERN.fullmatch(key) else f"[{_short(key)}]"
    if not field:
        return name
    return f"{field}{name}" if name.startswith("[") else f"{field}.{name}"


def _line(node: Node) -> int:
    """
    Return the 1-based line a node starts on.
    """
    return int(node.start_mark.line) + 1


def _short(value: object) -> str:
    """
    Return ``repr(value)`` cut to about 80 characters.
    """
    try:
        text = repr(value)
    except ValueError:  # an int with more digits than Python will print
        text = "<a very large integer>"
    return _cut(text)


def _cut(text: str) -> str:
    """
    Cut text to the message limit, marking the cut.
    """
    if len(text) <= _REPR_LIMIT:
        return text
    return text[: _REPR_LIMIT - 3] + "..."


def _display(path: Path) -> str:
    """
    Return the path as messages show it, escaped if it holds control characters.
    """
    text = str(path)
    return text if text.isprintable() else repr(text)
