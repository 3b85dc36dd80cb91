"""
The simulator's fault plan: credentials, limits, timing and scripted faults.

A `Plan` is built in code by tests or read from a YAML file by `load_plan`, which
checks every value with the same walker and message form as the config file:
``plans/flaky.yaml:7 faults.ds-1[0]: must be a status, reset, hang or a mapping
of fault fields; got 'explode'``.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Literal

from yaml.nodes import MappingNode, Node, SequenceNode

from orchestrator.yamldoc import STR_TAG, Document, RuleError, child, opened, short

Action = Literal["answer", "reset", "hang"]
ListOffsetMode = Literal["records", "pages"]

API_KINDS: frozenset[str] = frozenset({"sync", "status", "list", "show"})


@dataclass(frozen=True, slots=True)
class Fault:
    """
    One scripted answer to one request for a dataset.

    ``action`` "reset" aborts the connection without answering; "hang" answers
    nothing until the client leaves or the simulator stops. With ``status`` the
    server sends that status (changing no state): ``body`` as-is if given, else a
    JSON error whose code and message default per status. Without ``status`` the
    normal answer is sent. ``latency_ms`` replaces the plan's latency.
    """

    action: Action = "answer"
    status: int | None = None
    error_code: str | None = None
    error_msg: str | None = None
    retry_after: str | None = None
    body: str | None = None
    content_type: str | None = None
    latency_ms: float | None = None

    def __post_init__(self) -> None:
        details = (self.error_code, self.error_msg, self.retry_after, self.body)
        if self.action not in ("answer", "reset", "hang"):
            raise ValueError(f"action {self.action!r} is not answer, reset or hang")
        if self.status is not None and not 200 <= self.status <= 599:
            raise ValueError(f"status {self.status!r} is not within 200-599")
        if self.status is None and any(d is not None for d in details):
            raise ValueError(
                "error_code, error_msg, retry_after and body need a status"
            )
        if self.action != "answer" and self.status is not None:
            raise ValueError(f"a {self.action} sends no status")
        if self.latency_ms is not None and self.latency_ms < 0:
            raise ValueError(f"latency_ms {self.latency_ms!r} is negative")

    @property
    def label(self) -> str:
        """
        Return a short name for the log: ``reset``, ``status:503``, ``latency:50``.
        """
        if self.action != "answer":
            return self.action
        if self.status is not None:
            return f"status:{self.status}"
        return f"latency:{self.latency_ms:g}" if self.latency_ms is not None else "none"


RESET = Fault(action="reset")
HANG = Fault(action="hang")


@dataclass(frozen=True, slots=True)
class Dataset:
    """
    One dataset of a project's catalogue, as the list and show APIs describe it.

    ``dataset_name`` defaults to the id and ``data_path`` to ``/sim-bucket/{id}/``;
    times are epoch milliseconds.
    """

    dataset_id: str
    dataset_name: str | None = None
    dataset_type: int = 0
    status: int = 1
    data_path: str | None = None
    sample_count: int = 0
    create_time: int = 1_700_000_000_000
    update_time: int = 1_700_000_000_000


@dataclass(frozen=True, slots=True)
class Plan:
    """
    How the simulator behaves: credentials, limits, timing and scripted faults.

    ``faults`` are consumed one per request for that dataset id (any API), then
    answers are normal; ``always`` applies to every request for its id. Without
    ``datasets`` (a catalogue per project id) every dataset id exists and lists are
    empty; with it, ids it lacks get 404 ModelArts.6623 from every dataset API.
    Datasets in ``failed_syncs`` end their syncs FAILED; those in ``stuck_syncs``
    stay RUNNING for ever. With ``list_repeat_page`` N, the list API answers a
    request for page N + 1 with page N again. ``iam_password`` set means the IAM
    endpoint refuses any other password. ``access_keys`` (AK -> SK) makes the
    server verify SDK-HMAC-SHA256 signatures made with those keys;
    ``clock_offset_s`` sets the server's clock that far ahead of the real one
    (its ``Date`` header and the 15-minute ``X-Sdk-Date`` check follow it).
    """

    token: str | None = field(default="sim-token", repr=False)
    rate_limit_per_s: float | None = None
    latency_s: float = 0.0
    sync_duration_s: float = 0.0
    faults: Mapping[str, tuple[Fault, ...]] = field(default_factory=dict)
    always: Mapping[str, Fault] = field(default_factory=dict)
    datasets: Mapping[str, tuple[Dataset, ...]] | None = None
    list_offset_mode: ListOffsetMode = "records"
    rate_limited_kinds: frozenset[str] = API_KINDS
    failed_syncs: frozenset[str] = frozenset()
    stuck_syncs: frozenset[str] = frozenset()
    list_repeat_page: int | None = None
    iam_password: str | None = field(default=None, repr=False)
    access_keys: Mapping[str, str] = field(default_factory=dict, repr=False)
    clock_offset_s: float = 0.0

    def __post_init__(self) -> None:
        if self.rate_limit_per_s is not None and self.rate_limit_per_s < 1:
            raise ValueError(f"rate_limit_per_s {self.rate_limit_per_s!r} is below 1")
        if self.latency_s < 0 or self.sync_duration_s < 0:
            raise ValueError("latency_s and sync_duration_s must not be negative")
        if self.list_offset_mode not in ("records", "pages"):
            raise ValueError(f"list_offset_mode {self.list_offset_mode!r} is unknown")
        if unknown := self.rate_limited_kinds - API_KINDS:
            raise ValueError(f"rate_limited_kinds {sorted(unknown)!r} are not APIs")
        if self.list_repeat_page is not None and self.list_repeat_page < 0:
            raise ValueError(f"list_repeat_page {self.list_repeat_page!r} < 0")
        if stuck_and_failed := self.failed_syncs & self.stuck_syncs:
            raise ValueError(f"datasets {sorted(stuck_and_failed)!r} fail and stick")
        if both := self.faults.keys() & self.always.keys():
            raise ValueError(f"datasets {sorted(both)!r} are in faults and always")


_ID_RE = re.compile(r"[A-Za-z0-9_-]+")
_ID_RULE = "an id of A-Z a-z 0-9 _ -"
_FAULT_KEYS = tuple(f.name for f in fields(Fault) if f.name != "action")
_DATASET_KEYS = tuple(f.name for f in fields(Dataset))


def load_plan(path: Path) -> Plan:
    """
    Read a plan from a YAML file; an empty file is the default plan.

    Keys: ``token`` (null: accept any), ``rate_limit`` (per second),
    ``latency_ms``, ``sync_duration_ms``, ``faults`` ({dataset_id: [fault, ...]}),
    ``always`` ({dataset_id: fault}), ``catalogue`` ({project_id: [{dataset_id,
    dataset_name, dataset_type, status, data_path, sample_count, create_time,
    update_time}]}), ``list_offset_mode`` (records | pages), ``rate_limited``
    (API kinds the limit counts), ``failed_syncs`` and ``stuck_syncs`` (dataset
    ids), ``list_repeat_page`` (a page index) and ``iam_password``. A fault is
    a status (``503``), ``reset``, ``hang``, or a mapping of `Fault` fields
    without ``action``; a lone fault under ``faults`` is a list of one.

    Raises:
        ConfigError: One line naming the file, line, field, rule and value.
    """
    with opened(path, "plan file") as doc:
        if doc.root is None:
            return Plan()
        return _plan(doc, doc.root)


def _plan(doc: Document, root: Node) -> Plan:
    """
    Return the plan the document's top mapping describes.
    """
    expected = "must be a mapping of plan settings such as faults and always"
    values = {}
    for key, node in doc.mapping(root, "", tuple(_PLAN_FIELDS), expected).items():
        name, convert = _PLAN_FIELDS[key]
        values[name] = convert(doc, node, key)

    try:
        return Plan(**values)
    except ValueError as exc:
        raise doc.error(root, "", f"the plan is inconsistent: {exc}") from exc


def _by_id(doc: Document, node: Node, field: str) -> list[tuple[str, Node, str]]:
    """
    Return (id, value node, field) for a mapping keyed by project or dataset id.
    """
    expected = "must be a mapping of ids"
    entries = []
    for key, (key_node, value_node) in doc.pairs(node, field, None, expected).items():
        where = child(field, key)
        if key_node.tag != STR_TAG or not _ID_RE.fullmatch(key):
            fix = f"quote it: '{key}'" if _ID_RE.fullmatch(key) else None
            shown = doc.preview(key_node)
            raise doc.error(key_node, where, f"must be {_ID_RULE}", shown, fix)
        entries.append((key, value_node, where))

    return entries


def _scripted(doc: Document, node: Node, field: str) -> dict[str, tuple[Fault, ...]]:
    """
    Return the scripted faults per dataset id; a lone fault is a list of one.
    """
    faults = {}
    for dataset_id, value, where in _by_id(doc, node, field):
        items = [value]
        if isinstance(value, SequenceNode):
            items = doc.items(value, where, "must be a list of faults")
        faults[dataset_id] = tuple(
            _fault(doc, item, f"{where}[{i}]") for i, item in enumerate(items)
        )

    return faults


def _always(doc: Document, node: Node, field: str) -> dict[str, Fault]:
    """
    Return the fault that answers every request, per dataset id.
    """
    return {
        key: _fault(doc, value, where) for key, value, where in _by_id(doc, node, field)
    }


def _fault(doc: Document, node: Node, field: str) -> Fault:
    """
    Return one fault: a status, ``reset``, ``hang`` or a mapping of its fields.
    """
    if not isinstance(node, MappingNode):
        return doc.check(node, field, _fault_word)
    values: dict[str, Any] = {}
    expected = "must be a status, reset, hang or a mapping of fault fields"
    for key, item in doc.mapping(node, field, _FAULT_KEYS, expected).items():
        values[key] = doc.check(item, f"{field}.{key}", _FAULT_RULES.get(key, _text))

    try:
        return Fault(**values)
    except ValueError as exc:
        rule = f"must be a usable fault: {exc}"
        raise doc.error(node, field, rule, doc.preview(node)) from exc


def _fault_word(value: object) -> Fault:
    """
    Check a fault written as one word or number: ``reset``, ``hang`` or ``503``.
    """
    if value == "reset":
        return RESET
    if value == "hang":
        return HANG
    if not isinstance(value, int) or isinstance(value, bool):
        rule = "must be a status, reset, hang or a mapping of fault fields"
        raise RuleError(rule, short(value))

    try:
        return Fault(status=value)
    except ValueError as exc:
        raise RuleError(f"must be a usable fault: {exc}", short(value)) from None


def _catalogue(doc: Document, node: Node, field: str) -> dict[str, tuple[Dataset, ...]]:
    """
    Return each project's datasets, in file order.
    """
    catalogue = {}
    for project_id, value, where in _by_id(doc, node, field):
        items = doc.items(value, where, "must be a list of datasets")
        catalogue[project_id] = tuple(
            _dataset(doc, item, f"{where}[{i}]") for i, item in enumerate(items)
        )

    return catalogue


def _dataset(doc: Document, node: Node, field: str) -> Dataset:
    """
    Return one catalogue entry; only ``dataset_id`` is required.
    """
    expected = "must be a mapping with a dataset_id"
    entry = doc.mapping(node, field, _DATASET_KEYS, expected, ("dataset_id",))
    values: dict[str, Any] = {}
    for key, item in entry.items():
        rule = _DATASET_RULES.get(key, _integer)
        values[key] = doc.check(item, f"{field}.{key}", rule)

    return Dataset(**values)


def _identifier(value: object) -> str:
    """
    Check an id that goes into a request path.
    """
    if isinstance(value, str) and _ID_RE.fullmatch(value):
        return value
    raise RuleError(f"must be {_ID_RULE}", short(value))


def _number(value: object, minimum: float) -> float:
    """
    Return a number at or above ``minimum``, as a float.
    """
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise RuleError("must be a number", short(value))
    if value < minimum:
        raise RuleError(f"must be a number >= {minimum:g}", short(value))

    return float(value)


def _integer(value: object) -> int:
    """
    Check a whole number (not a bool).
    """
    if isinstance(value, bool) or not isinstance(value, int):
        raise RuleError("must be an integer", short(value))
    return value


def _text(value: object) -> str:
    """
    Check a string.
    """
    if not isinstance(value, str):
        raise RuleError("must be a string", short(value))
    return value


def _optional_text(value: object) -> str | None:
    """
    Check a string or null.
    """
    if value is not None and not isinstance(value, str):
        raise RuleError("must be a string or null", short(value))
    return value


def _retry_after(value: object) -> str:
    """
    Check a Retry-After value: seconds as a number, or any text (an HTTP date).
    """
    if isinstance(value, int | float) and not isinstance(value, bool):
        return f"{value:g}"
    return _text(value)


def _offset(value: object) -> float:
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or not math.isfinite(value)
    ):
        raise RuleError("must be a number of seconds (negative: behind)", short(value))

    return float(value)


def _key_pairs(doc: Document, node: Node, field: str) -> dict[str, str]:
    pairs = doc.pairs(node, field, None, "must map access key ids to secret keys")
    return {
        key: doc.check(value, f"{field}.{key}", _text)
        for key, (_, value) in pairs.items()
    }


def _offset_mode(value: object) -> str:
    """
    Check how the list API reads ``offset``: as records or as pages.
    """
    if value not in ("records", "pages"):
        raise RuleError("must be records or pages", short(value))
    return str(value)


def _text_list(doc: Document, node: Node, field: str) -> list[str]:
    """
    Return a list of strings.
    """
    items = doc.items(node, field, "must be a list of strings")
    return [doc.check(item, f"{field}[{i}]", _text) for i, item in enumerate(items)]


def _kinds(doc: Document, node: Node, field: str) -> frozenset[str]:
    """
    Return the API kinds the rate limit counts.
    """
    kinds = frozenset(_text_list(doc, node, field))
    if unknown := kinds - API_KINDS:
        rule = f"must name only {', '.join(sorted(API_KINDS))}"
        raise doc.error(node, field, rule, short(sorted(unknown)))
    return kinds


def _scalar(
    rule: Callable[[object], Any], per: float = 1.0
) -> Callable[[Document, Node, str], Any]:
    """
    Return a converter that checks one value with ``rule``, then divides by ``per``.
    """

    def convert(doc: Document, node: Node, field: str) -> Any:
        value = doc.check(node, field, rule)
        return value if value is None or per == 1.0 else value / per

    return convert


_DATASET_RULES: dict[str, Callable[[object], Any]] = {
    "dataset_id": _identifier,
    "dataset_name": _text,
    "data_path": _text,
}

_FAULT_RULES: dict[str, Callable[[object], Any]] = {
    "status": _integer,
    "latency_ms": lambda value: _number(value, 0),
    "retry_after": _retry_after,
}

# Plan file key -> (Plan field, converter), in the order the file format lists them.
_PLAN_FIELDS: dict[str, tuple[str, Callable[[Document, Node, str], Any]]] = {
    "token": ("token", _scalar(_optional_text)),
    "rate_limit": (
        "rate_limit_per_s",
        _scalar(lambda value: None if value is None else _number(value, 1)),
    ),
    "latency_ms": ("latency_s", _scalar(lambda value: _number(value, 0), 1000)),
    "sync_duration_ms": (
        "sync_duration_s",
        _scalar(lambda value: _number(value, 0), 1000),
    ),
    "faults": ("faults", _scripted),
    "always": ("always", _always),
    "catalogue": ("datasets", _catalogue),
    "list_offset_mode": ("list_offset_mode", _scalar(_offset_mode)),
    "rate_limited": ("rate_limited_kinds", _kinds),
    "failed_syncs": (
        "failed_syncs",
        lambda doc, node, field: frozenset(_text_list(doc, node, field)),
    ),
    "stuck_syncs": (
        "stuck_syncs",
        lambda doc, node, field: frozenset(_text_list(doc, node, field)),
    ),
    "list_repeat_page": ("list_repeat_page", _scalar(_integer)),
    "iam_password": ("iam_password", _scalar(_optional_text)),
    "access_keys": (
        "access_keys",
        lambda doc, node, field: _key_pairs(doc, node, field),
    ),
    "clock_offset_s": ("clock_offset_s", _scalar(_offset)),
}
