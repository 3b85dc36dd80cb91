"""
The generic YAML reader and walker that the config and the fault plan share.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from yaml.nodes import Node

from orchestrator import yamldoc
from orchestrator.errors import ConfigError
from orchestrator.yamldoc import Document, RuleError, opened


def _write(tmp_path: Path, text: str) -> Path:
    """
    Write a YAML file and return its path.
    """
    path = tmp_path / "doc.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def _root(doc: Document) -> Node:
    """
    Return the document's root node, which the test's file has.
    """
    assert doc.root is not None
    return doc.root


def _positive(value: object) -> int:
    """
    Accept a positive int, as a schema's rule function would.
    """
    if isinstance(value, int) and value > 0:
        return value
    raise RuleError("must be a positive whole number", repr(value), "write 1 or more")


@pytest.fixture(params=["libyaml", "python"])
def parser(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    """
    Run a test with libyaml's parser (the default) and with PyYAML's own.
    """
    if request.param == "python":
        monkeypatch.setattr(yamldoc, "_LOADER", yaml.SafeLoader)


@pytest.mark.usefixtures("parser")
def test_refuses_deep_nesting(tmp_path: Path) -> None:
    """Thousands of nested brackets are refused instead of exhausting the stack."""
    path = _write(tmp_path, "value: " + "[" * 1_200 + "\n")

    with pytest.raises(ConfigError), opened(path, "test file"):
        pass


@pytest.mark.usefixtures("parser")
def test_either_parser_reads_the_same_values_and_lines(tmp_path: Path) -> None:
    """Without libyaml, PyYAML's own parser gives the same values and lines."""
    text = "count: 0x10\nnone: null\nitems:\n  - &first {a: 1, b: 2}\n  - <<: *first\n"
    text += "    b: 3\n"

    with opened(_write(tmp_path, text), "test file") as doc:
        assert doc.root is not None
        fields = doc.mapping(doc.root, "", ("count", "none", "items"), "a mapping")
        items = doc.items(fields["items"], "items", "a list")
        merged = doc.mapping(items[1], "items[1]", ("a", "b"), "a mapping")

        assert doc.value(fields["count"], "count") == 16
        assert doc.value(fields["none"], "none") is None
        assert [yamldoc.line(item) for item in items] == [4, 5]
        assert doc.value(merged["a"], "a") == 1
        assert doc.value(merged["b"], "b") == 3


def test_check_adds_file_line_and_field_to_a_rule_error(tmp_path: Path) -> None:
    """A rule's error becomes one line: file:line field: rule; got value; fix."""
    path = _write(tmp_path, "first: 1\nretries: -2\n")

    with opened(path, "test file") as doc:
        fields = doc.mapping(_root(doc), "", ("first", "retries"), "a mapping")
        with pytest.raises(ConfigError) as caught:
            doc.check(fields["retries"], "retries", _positive)

    assert str(caught.value) == (
        f"{path}:2 retries: must be a positive whole number; got -2; write 1 or more"
    )


def test_optional_gives_the_default_for_a_missing_key(tmp_path: Path) -> None:
    """optional() returns the default when the key is absent, else the checked value."""
    with opened(_write(tmp_path, "a: 3\n"), "test file") as doc:
        assert doc.root is not None
        fields = doc.mapping(doc.root, "", ("a", "b"), "a mapping")

        assert doc.optional(fields, "a", _positive, 7) == 3
        assert doc.optional(fields, "b", _positive, 7) == 7


def test_pairs_without_known_keys_keep_any_key_and_its_line(tmp_path: Path) -> None:
    """With known=None every plain key is kept, as written, with its key node."""
    with opened(_write(tmp_path, "x-1: a\n1234: b\n"), "test file") as doc:
        assert doc.root is not None
        pairs = doc.pairs(doc.root, "ids", None, "a mapping of ids")

    assert list(pairs) == ["x-1", "1234"]
    assert pairs["1234"][0].tag != yamldoc.STR_TAG
    assert yamldoc.line(pairs["1234"][0]) == 2


@pytest.mark.parametrize(
    ("secret_fix", "expected"),
    [
        pytest.param(None, ":1 password: unknown key; known keys: user", id="plain"),
        pytest.param(
            "use an env var",
            ":1 password: secrets must not be written in the test file; use an env var",
            id="refused-as-secret",
        ),
    ],
)
def test_secret_like_keys_are_refused_as_secrets_only_when_asked(
    tmp_path: Path, secret_fix: str | None, expected: str
) -> None:
    """A key named like a secret gets the caller's fix only with secret_fix."""
    path = _write(tmp_path, "password: hunter2\n")

    with opened(path, "test file", secret_fix=secret_fix) as doc:
        root = _root(doc)
        with pytest.raises(ConfigError) as caught:
            doc.mapping(root, "", ("user",), "a mapping")

    assert str(caught.value) == f"{path}{expected}"
    assert "hunter2" not in str(caught.value)


def test_too_large_file_names_the_noun_and_the_fix(tmp_path: Path) -> None:
    """A file over 50 MiB is refused with the caller's noun and fix."""
    path = tmp_path / "huge.yaml"
    with path.open("wb") as stream:
        stream.truncate(yamldoc.MAX_FILE_BYTES + 1)

    with pytest.raises(ConfigError) as caught, opened(path, "plan file", "cut it"):
        pass

    assert str(caught.value) == f"{path}: the plan file is larger than 50 MiB; cut it"


def test_an_empty_file_has_no_root_and_hashes_its_bytes(tmp_path: Path) -> None:
    """A comment-only file yields a document without a root, with its digest."""
    with opened(_write(tmp_path, "# nothing\n"), "test file") as doc:
        assert doc.root is None
        assert len(doc.sha256) == 64


def test_message_leaves_out_missing_parts_and_escapes_newlines() -> None:
    """The message omits got and fix when absent and stays on one line."""
    assert yamldoc.message("f.yaml:3", "a.b", "must be x", None, None) == (
        "f.yaml:3 a.b: must be x"
    )
    assert yamldoc.message("--flag", "", "must be x", "'a\\nb'", "fix") == (
        "--flag: must be x; got 'a\\nb'; fix"
    )
    assert "\n" not in yamldoc.message("f", "k", "r", "a\nb", None)


def test_child_brackets_keys_that_are_not_plain_names() -> None:
    """Field paths join plain keys with dots and bracket the others."""
    assert yamldoc.child("", "retry") == "retry"
    assert yamldoc.child("retry", "max") == "retry.max"
    assert yamldoc.child("always", "ds/1") == "always['ds/1']"


def test_document_built_from_a_node_reports_its_file(tmp_path: Path) -> None:
    """A Document over a composed node names the given file in its errors."""
    doc = Document("inline.yaml", yaml.compose("a: [1, 2]\n", Loader=yaml.SafeLoader))
    fields = doc.mapping(_root(doc), "", ("a",), "a mapping")

    with pytest.raises(ConfigError) as caught:
        doc.check(fields["a"], "a", _positive)

    assert str(caught.value).startswith("inline.yaml:1 a: must be a positive")
    assert "got [1, 2]" in str(caught.value)


def _item_reader(doc: Document, item: Node, index: int) -> object:
    """
    Read one streamed item as a positive int, with its line, as a schema would.
    """
    return index, yamldoc.line(item), doc.check(item, f"items[{index}]", _positive)


@pytest.mark.parametrize(
    "text",
    [
        pytest.param("name: x\nitems:\n  - 1\n  - 2\n  - 3\nafter: y\n", id="block"),
        pytest.param("{name: x,\n items: [1,\n  2,\n  3], after: y}\n", id="flow"),
        pytest.param("---\nname: x\nitems: [1, 2, 3]\nafter: y\n...\n", id="markers"),
    ],
)
def test_streamed_list_hands_each_item_to_its_reader_in_order(
    tmp_path: Path, text: str
) -> None:
    """A streamed top-level list keeps only its reader's results, in file order."""
    path = _write(tmp_path, text)
    with opened(path, "file", streamed={"items": _item_reader}) as doc:
        fields = doc.mapping(_root(doc), "", ("name", "items", "after"), "a map")
        streamed = fields["items"]
        assert isinstance(streamed, yamldoc.StreamedList)
        assert streamed.value == []
        assert [index for index, _, _ in streamed.results] == [0, 1, 2]
        assert [value for _, _, value in streamed.results] == [1, 2, 3]
        assert doc.check(fields["after"], "after", str) == "y"


def test_streamed_item_error_names_its_file_line_and_index(tmp_path: Path) -> None:
    """An item breaking its rule stops the read with file:line and the item's field."""
    path = _write(tmp_path, "items:\n  - 1\n  - 2\n  - -5\n  - 4\n")
    with (
        pytest.raises(
            ConfigError,
            match=r"doc\.yaml:4 items\[2\]: must be a positive whole number; got -5",
        ),
        opened(path, "file", streamed={"items": _item_reader}),
    ):
        pass


@pytest.mark.parametrize(
    ("text", "values"),
    [
        pytest.param("items: &all [1, 2]\nmore: *all\n", [1, 2], id="anchored"),
        pytest.param("items: !!seq [1, 2]\n", [1, 2], id="tagged"),
        pytest.param("base: &b [3]\nitems: *b\n", [3], id="alias"),
    ],
)
def test_lists_with_anchors_tags_or_aliases_are_composed_whole(
    tmp_path: Path, text: str, values: list[int]
) -> None:
    """A list that YAML may refer to again is composed as nodes, not streamed."""
    path = _write(tmp_path, text)
    with opened(path, "file", streamed={"items": _item_reader}) as doc:
        pairs = doc.pairs(_root(doc), "", None, "a map")
        node = pairs["items"][1]
        assert not isinstance(node, yamldoc.StreamedList)
        items = doc.items(node, "items", "a list")
        assert [doc.check(item, "items[]", _positive) for item in items] == values


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param(
            "items: [1]\n---\nitems: [2]\n",
            "expected a single document",
            id="two-documents",
        ),
        pytest.param(
            "items: [1, *nowhere]\n", "found undefined alias", id="undefined-alias"
        ),
        pytest.param("items: [1,\n", "not valid YAML", id="unclosed"),
    ],
)
def test_streamed_read_reports_yaml_errors_on_one_line(
    tmp_path: Path, text: str, expected: str
) -> None:
    """Broken YAML around a streamed list gives the same one-line parse error."""
    path = _write(tmp_path, text)
    with (
        pytest.raises(ConfigError, match=expected) as caught,
        opened(path, "file", streamed={"items": _item_reader}),
    ):
        pass
    assert "\n" not in str(caught.value)
    assert str(caught.value).startswith(f"{path}:")


@pytest.mark.parametrize(
    "text",
    [
        pytest.param("", id="empty"),
        pytest.param("- 1\n- 2\n", id="top-level-list"),
        pytest.param("just text\n", id="scalar"),
    ],
)
def test_streaming_leaves_other_documents_as_they_compose(
    tmp_path: Path, text: str
) -> None:
    """A file that is not a mapping reads the same with or without streaming."""
    path = _write(tmp_path, text)
    with opened(path, "file") as doc:
        plain = None if doc.root is None else doc.preview(doc.root)
    with opened(path, "file", streamed={"items": _item_reader}) as doc:
        streamed = None if doc.root is None else doc.preview(doc.root)
    assert streamed == plain


SCALARS = [
    "~",
    "null",
    "",
    "yes",
    "No",
    "on",
    "0x1F",
    "0o17",
    "017",
    "1_000",
    "1e3",
    "1.5e3",
    ".inf",
    "-.5",
    "+12",
    "2001-12-14",
    "2001-12-14t21:59:43.10-05:00",
    "'123'",
    '"true"',
    "12:30:00",
    "=",
    "plain text",
    "!!str 5",
    "! 5",
    "!!int '7'",
    "0b1010",
    "a - b",
    ".nan",
    "Null",
    "NULL",
    "True",
    "3.",
    "ds-000001",
]


def _tags_and_values(doc: Document, node: Node) -> list[tuple[str, str]]:
    """
    Return the (tag, text) of every item of a list node, streamed or not.
    """
    if isinstance(node, yamldoc.StreamedList):
        return list(node.results)  # type: ignore[arg-type]
    return [(item.tag, item.value) for item in doc.items(node, "items", "a list")]


def test_streamed_scalars_get_the_tags_the_whole_composer_gives(
    tmp_path: Path,
) -> None:
    """Every kind of scalar resolves to the same tag streamed as composed whole."""
    text = "items:\n" + "".join(f"  - {scalar}\n" for scalar in SCALARS)
    path = _write(tmp_path, text)

    def reader(doc: Document, item: Node, index: int) -> object:
        return item.tag, item.value

    with opened(path, "file") as doc:
        whole = _tags_and_values(doc, doc.pairs(_root(doc), "", None, "m")["items"][1])
    with opened(path, "file", streamed={"items": reader}) as doc:
        node = doc.pairs(_root(doc), "", None, "m")["items"][1]
        assert isinstance(node, yamldoc.StreamedList)
        streamed = _tags_and_values(doc, node)

    assert streamed == whole
    assert len({tag for tag, _ in whole}) >= 6  # the list really mixes types
