"""
Read a YAML file safely and walk its nodes, keeping the line of every value.

A schema (the config, the simulator's fault plan) walks the composed node tree
with a `Document`: mappings with known keys, lists, scalars typed as YAML types
them, each value checked by a rule function. Rule functions raise `RuleError`
with the rule and, if they can, the value to show and the fix; the document
adds where the value came from. Every error is one line::

    {file}:{line} {field}: {rule}; got {value}; {fix}

for example ``configs/nightly.yaml:14 targets[3].dataset_id: must be 1-64
characters of A-Z a-z 0-9 _ -; got 'a/b'``. ``got`` is left out when there is
no value to show, ``fix`` when there is no fix.

Guards, because the files come from people and scripts: at most 50 MiB of UTF-8,
at most 1,000,000 nodes read (each alias use counted again, which defeats
"billion laughs" expansion), duplicate keys refused (PyYAML silently keeps the
last), previews cut to about 80 characters.

A long top-level list (the config's ``targets``) can be read one item at a time:
`opened` takes a reader per key, which checks each item as it is composed and
keeps only what it returns, so 100,000 targets never exist as a node tree.
"""

from __future__ import annotations

import codecs
import difflib
import gc
import hashlib
import os
import re
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO, TypeVar

import yaml
from yaml.composer import ComposerError
from yaml.events import (
    AliasEvent,
    MappingEndEvent,
    MappingStartEvent,
    ScalarEvent,
    SequenceEndEvent,
    SequenceStartEvent,
    StreamEndEvent,
)
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from orchestrator.errors import ConfigError

MAX_FILE_BYTES = 50 * 1024 * 1024
# Aliases let a small file expand into an exponential tree ("billion laughs"); each
# alias use is counted again, so the ceiling bounds work, not file size.
MAX_NODES = 1_000_000
STR_TAG = "tag:yaml.org,2002:str"

_REPR_LIMIT = 80
_PREVIEW_ITEMS = 5

# libyaml's parser made a 20,000-target file load in 0.5 s instead of 5.2 s and
# caps nesting at 1000 levels; scalars resolve the same either way (YAML 1.1).
_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)

# Plain scalars' implicit tags by first character ("" for the empty scalar);
# the safe loader has no resolvers that apply to every character.
_IMPLICIT = _LOADER.yaml_implicit_resolvers
assert None not in _IMPLICIT

_MAP_TAG = "tag:yaml.org,2002:map"
_SEQ_TAG = "tag:yaml.org,2002:seq"
_MERGE_TAG = "tag:yaml.org,2002:merge"

# Key names that hold secrets; compared after lower-casing and '-' -> '_'.
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
_KEY_PATTERN = re.compile(r"[A-Za-z0-9_-]{1,64}")

_T = TypeVar("_T")

ItemReader = Callable[["Document", Node, int], object]
"""Check one item of a streamed list (the document, the item, its index)."""


class RuleError(Exception):
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


@contextmanager
def opened(
    path: Path,
    noun: str,
    too_large_fix: str | None = None,
    secret_fix: str | None = None,
    streamed: Mapping[str, ItemReader] | None = None,
) -> Iterator[Document]:
    """
    Read and compose one YAML file, yielding its `Document` to walk.

    With ``streamed``, a top-level key named there whose value is a plain list
    becomes a `StreamedList`: its items are handed to the key's reader while the
    file is parsed, and only the readers' results are kept (composing 100,000
    targets at once took 215 MB; one at a time, 27 MB). A list with an anchor or
    a tag, or given by an alias, is composed whole as usual.

    The cyclic garbage collector stays paused until the block ends: it would
    rescan the growing node tree again and again while nothing in it can be
    garbage (a 20,000-target config loaded in 0.5 s instead of 1.0 s). ``noun``
    names the file in messages ("config file"); ``too_large_fix`` follows the
    size error; ``secret_fix``, see `Document`.

    Raises:
        ConfigError: The file cannot be read, is not UTF-8 YAML, or is nested
            too deeply; or the block raised it.
    """
    file = _display(path)
    data = _read(path, file, noun, too_large_fix)
    text = _decode(data, file)

    sha256 = hashlib.sha256(data).hexdigest()
    gc_was_enabled = gc.isenabled()
    gc.disable()
    doc = None
    try:
        doc = Document(file, None, sha256, noun, secret_fix)
        doc.root = _compose(text, file, doc, streamed or {})
        yield doc
    except RecursionError as exc:
        message = f"{file}: nested too deeply to read"
        raise ConfigError(message) from exc
    finally:
        # Free the node tree before the collector runs again: its first pass
        # would scan every node (0.1 s for a 20,000-target config) for nothing.
        if doc is not None:
            doc.root = None
        if gc_was_enabled:
            gc.enable()


class StreamedList(SequenceNode):
    """
    A top-level list read one item at a time: what its reader returned per item.

    ``value`` stays empty; ``results`` holds one entry per item, in order.
    """

    def __init__(self, start_mark: yaml.Mark, flow_style: bool | None) -> None:
        super().__init__(_SEQ_TAG, [], start_mark, start_mark, flow_style)
        self.results: list[object] = []


class Document:
    """
    One composed YAML file and the walk that checks it, counting nodes read.

    ``root`` is None for a file with no document (empty or only comments), and
    once the `opened` block has ended;
    ``sha256`` is the digest of the bytes read; ``noun`` names the file in
    messages ("config file"). With ``secret_fix``, an unknown key named like a
    secret (``password``, ``sk``) is refused as a secret, with that fix, instead
    of as a typo.
    """

    __slots__ = (
        "_constructor",
        "_nodes",
        "file",
        "noun",
        "root",
        "secret_fix",
        "sha256",
    )

    def __init__(
        self,
        file: str,
        root: Node | None,
        sha256: str = "",
        noun: str = "file",
        secret_fix: str | None = None,
    ) -> None:
        self.file = file
        self.root = root
        self.sha256 = sha256
        self.noun = noun
        self.secret_fix = secret_fix
        self._nodes = 0
        self._constructor = yaml.constructor.SafeConstructor()

    def mapping(
        self,
        node: Node,
        field: str,
        known: tuple[str, ...],
        expected: str,
        required: tuple[str, ...] = (),
    ) -> dict[str, Node]:
        """
        Return key -> value node of a mapping whose keys are all known and present.

        ``expected`` is the rule when ``node`` is not a mapping.
        """
        pairs = self.pairs(node, field, known, expected)
        for key in required:
            if key not in pairs:
                rule = "required key is missing"
                raise self.error(node, child(field, key), rule)

        return {key: value for key, (_, value) in pairs.items()}

    def pairs(
        self,
        node: Node,
        field: str,
        known: tuple[str, ...] | None,
        expected: str,
    ) -> dict[str, tuple[Node, Node]]:
        """
        Return key -> (key node, value node) in file order, merge keys applied.

        With ``known`` None any plain-text key is accepted, as written (``1234``
        is the key "1234"; the key node's tag says how YAML typed it).
        """
        return self._pairs(node, field, known, expected, frozenset())

    def items(self, node: Node, field: str, expected: str) -> list[Node]:
        """
        Return the item nodes of a list; ``expected`` is the rule otherwise.
        """
        if not isinstance(node, SequenceNode) or node.tag != _SEQ_TAG:
            raise self.error(node, field, expected, self.preview(node))
        self._visit(node, field)

        return list(node.value)

    def check(self, node: Node, field: str, rule: Callable[[object], _T]) -> _T:
        """
        Construct one value and apply its rule, adding file:line to any error.
        """
        try:
            return rule(self.value(node, field))
        except RuleError as exc:
            raise self.error(node, field, exc.rule, exc.shown, exc.fix) from None

    def optional(
        self,
        fields: Mapping[str, Node],
        key: str,
        rule: Callable[[object], _T],
        default: _T,
        prefix: str = "",
    ) -> _T:
        """
        Check the value of ``key`` if the mapping has it, else return ``default``.
        """
        node = fields.get(key)
        if node is None:
            return default
        return self.check(node, prefix + key, rule)

    def value(self, node: Node, field: str) -> object:
        """
        Return a scalar as YAML types it, or a preview standing for a collection.
        """
        self._visit(node, field)
        if not isinstance(node, ScalarNode):
            return _Collection(self.preview(node))
        if node.tag == STR_TAG:
            return node.value

        try:
            return self._constructor.construct_object(node)
        except yaml.YAMLError as exc:
            problem = getattr(exc, "problem", None) or str(exc)
            rule = f"cannot be read: {' '.join(problem.split())}"
            raise self.error(node, field, rule, short(node.value)) from exc
        except (ValueError, OverflowError) as exc:
            rule = "cannot be read: out of range or too many digits"
            raise self.error(node, field, rule, short(node.value)) from exc

    def preview(self, node: Node, depth: int = 0) -> str:
        """
        Return a short Python-like rendering of a node, bounded in size and depth.
        """
        if isinstance(node, ScalarNode):
            try:
                return short(self._constructor.construct_object(node))
            except (yaml.YAMLError, ValueError, OverflowError):
                return short(node.value)

        sequence = isinstance(node, SequenceNode)
        opening, closing = ("[", "]") if sequence else ("{", "}")
        # Stop early: aliases can make even a short file an exponential tree.
        if depth >= 2 and node.value:
            return f"{opening}...{closing}"

        items = node.value[:_PREVIEW_ITEMS]
        if sequence:
            parts = [self.preview(item, depth + 1) for item in items]
        else:
            parts = [
                f"{self.preview(key, depth + 1)}: {self.preview(value, depth + 1)}"
                for key, value in items
            ]
        if len(node.value) > _PREVIEW_ITEMS:
            parts.append("...")

        return _cut(opening + ", ".join(parts) + closing)

    def error(
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
        where = f"{self.file}:{line(node)}"
        return ConfigError(message(where, field, rule, shown, fix))

    def _pairs(
        self,
        node: Node,
        field: str,
        known: tuple[str, ...] | None,
        expected: str,
        merging: frozenset[int],
    ) -> dict[str, tuple[Node, Node]]:
        """
        Return the pairs of one mapping, following merge keys (``<<: *x``).

        Keys written in the mapping win over merged ones, and earlier merge sources
        over later ones, as YAML's merge key type says; a key written twice is an
        error, because PyYAML would silently keep the last.
        """
        if not isinstance(node, MappingNode) or node.tag != _MAP_TAG:
            raise self.error(node, field, expected, self.preview(node))
        if id(node) in merging:
            raise self.error(node, field, "merges a mapping into itself")
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
                first = line(own[key][0])
                rule = f"duplicate key, first given at line {first}"
                raise self.error(key_node, child(field, key), rule, fix="keep one")
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
        raise self.error(node, field, rule, self.preview(node))

    def _key(self, node: Node, field: str, known: tuple[str, ...] | None) -> str:
        """
        Return a mapping key, refusing keys that are unknown or look like secrets.
        """
        if not isinstance(node, ScalarNode):
            raise self.error(node, field, "keys must be plain text", self.preview(node))
        # The written text is what a reader sees; every known key resolves to itself.
        key: str = node.value
        if known is None or key in known:
            return key

        if self.secret_fix and key.lower().replace("-", "_") in _SECRET_KEYS:
            rule = f"secrets must not be written in the {self.noun}"
            raise self.error(node, child(field, key), rule, fix=self.secret_fix)
        raise self.error(
            node, child(field, key), "unknown key", fix=_suggest(key, known)
        )

    def _visit(self, node: Node, field: str, count: int = 1) -> None:
        """
        Count nodes read, refusing documents that aliases blow up past the ceiling.
        """
        self._nodes += count
        if self._nodes > MAX_NODES:
            rule = (
                f"the document expands to more than {MAX_NODES:,} YAML nodes "
                "(every use of an alias counts again)"
            )
            raise self.error(node, field, rule, fix="use fewer aliases or merge keys")


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


def message(
    where: str, field: str, rule: str, shown: str | None, fix: str | None
) -> str:
    """
    Format ``{where} {field}: {rule}; got {shown}; {fix}`` on one line.
    """
    text = f"{where} {field}: {rule}" if field else f"{where}: {rule}"
    if shown is not None:
        text += f"; got {shown}"
    if fix:
        text += f"; {fix}"
    return text.replace("\r", "\\r").replace("\n", "\\n")


def child(field: str, key: str) -> str:
    """
    Return the field path of ``key`` inside ``field``.
    """
    name = key if _KEY_PATTERN.fullmatch(key) else f"[{short(key)}]"
    if not field:
        return name
    return f"{field}{name}" if name.startswith("[") else f"{field}.{name}"


def line(node: Node) -> int:
    """
    Return the 1-based line a node starts on.
    """
    return int(node.start_mark.line) + 1


def short(value: object) -> str:
    """
    Return ``repr(value)`` cut to about 80 characters.
    """
    try:
        text = repr(value)
    except ValueError:  # an int with more digits than Python will print
        text = "<a very large integer>"
    return _cut(text)


def _read(path: Path, file: str, noun: str, too_large_fix: str | None) -> bytes:
    """
    Return the file's bytes, refusing files too large to be hand-written YAML.
    """
    try:
        with open(path, "rb") as stream:
            size = os.fstat(stream.fileno()).st_size
            data = b"" if size > MAX_FILE_BYTES else _read_at_most(stream, size)
    except OSError as exc:
        reason = exc.strerror or str(exc)
        raise ConfigError(f"{file}: cannot read the {noun}: {reason}") from exc

    if max(size, len(data)) > MAX_FILE_BYTES:
        text = f"{file}: the {noun} is larger than 50 MiB"
        raise ConfigError(f"{text}; {too_large_fix}" if too_large_fix else text)
    return data


def _read_at_most(stream: BinaryIO, size: int) -> bytes:
    """
    Read the file, stopping one byte past the limit; ``size`` is what stat said.

    read(n) sets aside n bytes up front, so the first read asks for the stated
    size (50 MiB for every 1 KB config otherwise); pipes and /proc files state 0,
    and a file that grew since is read on to the limit.
    """
    data = stream.read(size + 1) if size else b""
    if len(data) > size or not size:
        data += stream.read(MAX_FILE_BYTES + 1 - len(data))
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
        text = (
            f"{file}:{line}:{column}: not UTF-8 text: byte {body[exc.start]:#04x} "
            "cannot be decoded; save the file as UTF-8"
        )
        raise ConfigError(text) from exc


def _compose(
    text: str, file: str, doc: Document, streamed: Mapping[str, ItemReader]
) -> Node | None:
    """
    Parse the text into a node tree, translating YAML's errors.
    """
    try:
        if not streamed:
            return yaml.compose(text, Loader=_LOADER)
        return _StreamingComposer(text, doc, streamed).single()
    except yaml.YAMLError as exc:
        raise ConfigError(_yaml_message(exc, text, file)) from exc


class _StreamingComposer(_LOADER):  # type: ignore[misc, valid-type]
    """
    Compose a document from libyaml's events, streaming the chosen top-level lists.

    libyaml's own composer only builds whole documents, so this one builds the
    nodes from the C parser's events, as PyYAML's Python composer does (same
    tags, marks, anchors and errors) minus its hooks for path resolvers, which
    the safe loader does not have: half the calls per node.
    """

    def __init__(
        self, text: str, doc: Document, streamed: Mapping[str, ItemReader]
    ) -> None:
        _LOADER.__init__(self, text)
        self._doc = doc
        self._streamed = streamed
        self._anchors: dict[str, Node] = {}

    def single(self) -> Node | None:
        """
        Return the only document's root node, or None for an empty stream.
        """
        try:
            self.get_event()  # the stream's start
            root = None
            if not self.check_event(StreamEndEvent):
                self.get_event()  # the document's start
                root = self._root()
                self.get_event()  # the document's end
            if not self.check_event(StreamEndEvent):
                event = self.get_event()
                raise ComposerError(
                    "expected a single document in the stream",
                    root.start_mark if root is not None else None,
                    "but found another document",
                    event.start_mark,
                )
            self.get_event()
            return root
        finally:
            self._anchors = {}
            self.dispose()

    def _root(self) -> Node:
        """
        Compose the root; if it is a mapping, stream the lists named to stream.
        """
        event = self.peek_event()
        if not isinstance(event, MappingStartEvent) or not _plain(event):
            return self._node()

        self.get_event()
        root = MappingNode(
            self.resolve(MappingNode, None, event.implicit),
            [],
            event.start_mark,  # type: ignore[arg-type]
            None,
            flow_style=event.flow_style,
        )
        while not self.check_event(MappingEndEvent):
            key = self._node()
            reader = self._reader(key)
            value = self._node() if reader is None else self._stream(reader)
            root.value.append((key, value))
        root.end_mark = self.get_event().end_mark
        return root

    def _reader(self, key: Node) -> ItemReader | None:
        """
        Return the reader for the value after ``key``, if it can be streamed.
        """
        if not isinstance(key, ScalarNode) or key.tag != STR_TAG:
            return None
        event = self.peek_event()
        if not isinstance(event, SequenceStartEvent) or not _plain(event):
            return None
        return self._streamed.get(key.value)

    def _stream(self, reader: ItemReader) -> StreamedList:
        """
        Hand each item of the list to ``reader``, keeping only its results.
        """
        event = self.get_event()
        node = StreamedList(event.start_mark, event.flow_style)
        results = node.results
        while not self.check_event(SequenceEndEvent):
            results.append(reader(self._doc, self._node(), len(results)))
        node.end_mark = self.get_event().end_mark
        return node

    def _node(self) -> Node:
        """
        Compose the next node and everything in it.
        """
        event = self.get_event()
        kind = type(event)
        anchor = event.anchor
        if kind is AliasEvent:
            if anchor not in self._anchors:
                problem = f"found undefined alias {anchor!r}"
                raise ComposerError(None, None, problem, event.start_mark)
            return self._anchors[anchor]
        if anchor is not None and anchor in self._anchors:
            raise ComposerError(
                f"found duplicate anchor {anchor!r}; first occurrence",
                self._anchors[anchor].start_mark,
                "second occurrence",
                event.start_mark,
            )

        tag = event.tag
        node: Node
        if kind is ScalarEvent:
            if tag is None or tag == "!":
                tag = _scalar_tag(event.value, event.implicit[0])
            node = ScalarNode(
                tag, event.value, event.start_mark, event.end_mark, style=event.style
            )
            if anchor is not None:
                self._anchors[anchor] = node
            return node

        if tag is None or tag == "!":
            node_kind = SequenceNode if kind is SequenceStartEvent else MappingNode
            tag = self.resolve(node_kind, None, event.implicit)
        if kind is SequenceStartEvent:
            items: list[Node] = []
            node = SequenceNode(tag, items, event.start_mark, None, event.flow_style)
            if anchor is not None:
                self._anchors[anchor] = node
            while not self.check_event(SequenceEndEvent):
                items.append(self._node())
        else:
            pairs: list[tuple[Node, Node]] = []
            node = MappingNode(tag, pairs, event.start_mark, None, event.flow_style)
            if anchor is not None:
                self._anchors[anchor] = node
            while not self.check_event(MappingEndEvent):
                key = self._node()
                pairs.append((key, self._node()))
        node.end_mark = self.get_event().end_mark
        return node


def _scalar_tag(value: str, plain: bool) -> str:
    """
    Return the tag YAML 1.1 gives an untagged scalar, as the loader's resolver does.

    A quoted scalar is a string; a plain one is tried against the resolver's
    patterns for its first character. The resolver's own method spent a third
    of the time of composing 100,000 targets on its generality.
    """
    if plain:
        for tag, pattern in _IMPLICIT.get(value[:1], ()):
            if pattern.match(value):
                return str(tag)
    return STR_TAG


def _plain(event: MappingStartEvent | SequenceStartEvent) -> bool:
    """
    Tell whether a collection has neither an anchor nor an explicit tag.
    """
    return event.anchor is None and event.implicit


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


def _suggest(key: str, known: tuple[str, ...]) -> str:
    """
    Name the known key closest to a misspelt one, or list them all.
    """
    close = difflib.get_close_matches(key.lower().replace("-", "_"), known, n=1)
    if close:
        return f"did you mean {close[0]!r}?"
    return "known keys: " + ", ".join(known)


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
