"""
Log setup: format, levels and the secret redactor.
"""

from __future__ import annotations

import io
import json
import logging

import pytest
import structlog

from orchestrator import logs


def emit(stream: io.StringIO, *, log_format: logs.LogFormat, verbosity: int) -> None:
    logs.configure(log_format=log_format, verbosity=verbosity, stream=stream)
    log = structlog.get_logger("test")
    log.debug("test.debugged")
    log.info("test.informed", dataset_id="ds-1")
    log.warning("test.warned")


def test_json_lines_when_the_stream_is_not_a_terminal() -> None:
    """auto picks JSON for a pipe; each line parses and carries level and time."""
    stream = io.StringIO()

    emit(stream, log_format="auto", verbosity=0)

    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert [line["event"] for line in lines] == ["test.informed", "test.warned"]
    assert lines[0]["level"] == "info"
    assert lines[0]["dataset_id"] == "ds-1"
    assert lines[0]["timestamp"].endswith("Z")


def test_console_format_is_not_json() -> None:
    """--log-format console renders readable lines."""
    stream = io.StringIO()

    emit(stream, log_format="console", verbosity=0)

    assert "test.informed" in stream.getvalue()
    with pytest.raises(json.JSONDecodeError):
        json.loads(stream.getvalue().splitlines()[0])


@pytest.mark.parametrize(
    ("verbosity", "events"),
    [
        pytest.param(-1, ["test.warned"], id="quiet"),
        pytest.param(0, ["test.informed", "test.warned"], id="default"),
        pytest.param(
            1, ["test.debugged", "test.informed", "test.warned"], id="verbose"
        ),
    ],
)
def test_verbosity_sets_the_level(verbosity: int, events: list[str]) -> None:
    """-q keeps warnings and errors, -v adds debug lines."""
    stream = io.StringIO()

    emit(stream, log_format="json", verbosity=verbosity)

    logged = [json.loads(line)["event"] for line in stream.getvalue().splitlines()]
    assert logged == events


@pytest.mark.parametrize("verbosity", [-2, -1, 0, 1])
def test_enabled_for_agrees_with_what_is_written(verbosity: int) -> None:
    """enabled_for says yes for exactly the levels whose lines reach the stream."""
    stream = io.StringIO()
    logs.configure(log_format="json", verbosity=verbosity, stream=stream)
    log = structlog.get_logger("test")
    levels = [logging.DEBUG, logging.INFO, logging.WARNING, logging.ERROR]

    for level in levels:
        log.log(level, "test.logged", level_number=level)

    written = [
        json.loads(line)["level_number"] for line in stream.getvalue().splitlines()
    ]
    assert [level for level in levels if logs.enabled_for(level)] == written
    assert written, "errors are always written"


def test_enabled_for_says_yes_under_an_unknown_wrapper_class() -> None:
    """A wrapper class that is not structlog's filtering one lets everything through."""
    structlog.configure(wrapper_class=structlog.stdlib.BoundLogger)

    assert logs.enabled_for(logging.DEBUG)


def test_secret_named_keys_are_masked_at_any_depth() -> None:
    """token, Authorization, password... are masked, nested ones too."""
    event = {
        "event": "x",
        "token": "abc",
        "headers": {"Authorization": "SDK-HMAC-SHA256 ...", "Accept": "*/*"},
        "items": [{"password": "p"}],
    }

    redacted = logs.redact_secrets(None, "info", event)

    assert redacted["token"] == logs.REDACTED
    assert redacted["headers"] == {"Authorization": logs.REDACTED, "Accept": "*/*"}
    assert redacted["items"] == [{"password": logs.REDACTED}]


def test_registered_secret_values_are_masked_inside_any_text() -> None:
    """A registered secret inside a message or a traceback is masked."""
    logs.redact_value("s3cr3t-value-for-logs")
    event = {"event": "x", "error": "failed with s3cr3t-value-for-logs inside"}

    redacted = logs.redact_secrets(None, "info", event)

    assert redacted["error"] == f"failed with {logs.REDACTED} inside"


def test_short_values_are_not_registered() -> None:
    """A value too short to be a credential would mask ordinary words."""
    logs.redact_value("abc")

    assert logs.scrub("abc def") == "abc def"
