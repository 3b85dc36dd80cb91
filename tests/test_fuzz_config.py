"""
Fuzzed config files: the loader returns settings or raises ConfigError, quickly.

Hypothesis writes valid, near-valid and garbage documents; hand-made cases add
the classic attacks (alias bombs, deep nesting, huge numbers, non-UTF-8). The
command line then turns any of them into exit 2 and one line, no traceback.
"""

from __future__ import annotations

import subprocess
import sys
import time
import tracemalloc
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from orchestrator import config
from orchestrator.config import Settings
from orchestrator.errors import ConfigError
from tests.conftest import PROJECT, cli_env

MAX_LOAD_S = 2.0
MAX_LOAD_BYTES = 64 * 1024 * 1024
BASE: dict[str, Any] = {
    "endpoint": "http://127.0.0.1:8080",
    "rate_limit": 10,
    "concurrency": 4,
    "timeout": 5,
    "deadline": 60,
    "retry": {"max_attempts": 3, "initial_backoff": 0.1, "max_backoff": 1},
    "targets": [{"project_id": PROJECT, "dataset_id": "ds-0001"}],
}
BASE_TEXT = yaml.safe_dump(BASE, sort_keys=False)
FUZZ = settings(
    max_examples=150,
    derandomize=True,
    deadline=None,  # load_within checks the time bound itself
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(10**30), max_value=10**30),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=40),
    st.binary(max_size=20),
)
values = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(st.text(max_size=10), inner, max_size=4)
    ),
    max_leaves=20,
)


@st.composite
def near_valid(draw: st.DrawFn) -> dict[str, Any]:
    """
    Return the valid base config with some keys replaced, dropped or added.
    """
    document = dict(BASE)
    for key in draw(st.lists(st.sampled_from(sorted(BASE)), max_size=3)):
        document[key] = draw(values)
    for key in draw(st.lists(st.sampled_from(sorted(BASE)), max_size=2)):
        document.pop(key, None)
    if draw(st.booleans()):
        document[draw(st.text(min_size=1, max_size=10))] = draw(values)

    return document


@st.composite
def mangled_text(draw: st.DrawFn) -> bytes:
    """
    Return the valid base text with bytes cut, swapped or inserted.
    """
    data = bytearray(BASE_TEXT.encode())
    for _ in range(draw(st.integers(1, 6))):
        at = draw(st.integers(0, len(data)))
        action = draw(st.sampled_from(["cut", "insert", "replace"]))
        chunk = draw(st.binary(min_size=1, max_size=8))
        if action == "cut":
            del data[at : at + len(chunk)]
        elif action == "insert":
            data[at:at] = chunk
        else:
            data[at : at + len(chunk)] = chunk

    return bytes(data)


def load_within(path: Path) -> Settings | None:
    """
    Load ``path``; assert only ConfigError escapes, within the time and memory bound.
    """
    tracemalloc.start()
    started = time.monotonic()
    message = ""
    try:
        return config.load(path)
    except ConfigError as error:
        message = str(error)
        return None
    finally:
        elapsed_s = time.monotonic() - started
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        assert "\n" not in message
        assert elapsed_s < MAX_LOAD_S, f"{elapsed_s:.2f} s"
        assert peak < MAX_LOAD_BYTES, f"{peak:,} bytes"


@FUZZ
@given(document=near_valid())
def test_near_valid_documents_load_or_raise_config_error(
    tmp_path: Path, document: dict[str, Any]
) -> None:
    """A config with fuzzed values loads or fails with a one-line ConfigError."""
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(document, allow_unicode=True))

    load_within(path)


@FUZZ
@given(data=st.one_of(mangled_text(), st.binary(max_size=400)))
def test_mangled_bytes_load_or_raise_config_error(tmp_path: Path, data: bytes) -> None:
    """Cut, spliced or random bytes load or fail with a one-line ConfigError."""
    path = tmp_path / "config.yaml"
    path.write_bytes(data)

    load_within(path)


@FUZZ
@given(text=st.text(max_size=400))
def test_garbage_text_loads_or_raises_config_error(tmp_path: Path, text: str) -> None:
    """Arbitrary text (any code point) loads or fails with a one-line ConfigError."""
    path = tmp_path / "config.yaml"
    path.write_text(text, encoding="utf-8", errors="surrogatepass")

    load_within(path)


def _alias_bomb(levels: int) -> str:
    lines = ['l0: &l0 ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    for i in range(1, levels):
        lines.append(f"l{i}: &l{i} [" + ",".join([f"*l{i - 1}"] * 9) + "]")
    return BASE_TEXT + "targets: *l" + str(levels - 1) + "\n" + "\n".join(lines)


HOSTILE = [
    pytest.param(_alias_bomb(10).encode(), id="billion-laughs"),
    pytest.param(
        BASE_TEXT.replace(
            "targets:", "x: " + "[" * 100_000 + "]" * 100_000 + "\ntargets:"
        ).encode(),
        id="deep-flow-nesting",
    ),
    pytest.param(
        "".join(" " * i + "- \n" for i in range(5000)).encode(), id="deep-block"
    ),
    pytest.param(
        BASE_TEXT.replace("rate_limit: 10", "rate_limit: 1" + "0" * 100_000).encode(),
        id="huge-integer",
    ),
    pytest.param(
        BASE_TEXT.replace("rate_limit: 10", "rate_limit: 1e99999").encode(),
        id="huge-float",
    ),
    pytest.param(
        BASE_TEXT.replace("deadline: 60", "deadline: .nan").encode(), id="nan"
    ),
    pytest.param(b"\xff\xfe" + BASE_TEXT.encode("utf-16-le"), id="utf-16"),
    pytest.param(BASE_TEXT.encode() + b"\x00\x01\x02\xc3\x28", id="binary-tail"),
    pytest.param(b"endpoint: " + b"a" * 10_000_000, id="huge-scalar"),
    pytest.param(
        BASE_TEXT.replace(
            "targets:", "? " + "[" * 500 + "]" * 500 + "\n: 1\ntargets:"
        ).encode(),
        id="complex-key",
    ),
    pytest.param(b"!!python/object/apply:os.system ['true']", id="python-tag"),
    pytest.param(b"", id="empty"),
]


@pytest.mark.parametrize("data", HOSTILE)
def test_hostile_file_raises_config_error_quickly(tmp_path: Path, data: bytes) -> None:
    """Bombs, deep nesting, huge numbers and foreign encodings are config errors."""
    path = tmp_path / "config.yaml"
    path.write_bytes(data)

    assert load_within(path) is None


@pytest.mark.slow
@pytest.mark.parametrize(
    "data",
    [
        pytest.param(_alias_bomb(10).encode(), id="billion-laughs"),
        pytest.param(b"\x80\x81garbage: [", id="not-utf-8"),
        pytest.param(b"{" * 50_000, id="deep-nesting"),
        pytest.param(
            BASE_TEXT.replace("rate_limit: 10", "rate_limit: 1" + "0" * 5000).encode(),
            id="huge-integer",
        ),
    ],
)
def test_cli_exits_2_with_one_line_on_hostile_config(
    tmp_path: Path, data: bytes
) -> None:
    """`run` on a hostile file exits 2 with one error line and no traceback."""
    path = tmp_path / "config.yaml"
    path.write_bytes(data)

    done = subprocess.run(
        [sys.executable, "-m", "orchestrator", "run", str(path), "-q"],
        capture_output=True,
        text=True,
        env=cli_env(),
        timeout=60,
        check=False,
    )

    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("modelarts-sync: error: ")
    assert "Traceback" not in done.stderr
    assert done.stdout == ""
