"""
Fuzzed answers: whatever status, headers or body a server sends, the client
turns it into an accepted result or one of our typed errors, and reads at most
``MAX_BODY_BYTES`` of any body.
"""

from __future__ import annotations

import time
import tracemalloc
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import pytest
from aiohttp import web
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from orchestrator.auth import Secret, TokenAuth
from orchestrator.client import MAX_BODY_BYTES, ModelArtsClient, SyncAccepted
from orchestrator.errors import ApiError

PROJECT = "p1"
HUGE_BODY_BYTES = 50 * 1024 * 1024
CHUNK = b"x" * 65536


@dataclass
class Scripted:
    """
    The next answer the test server gives, set by each example.
    """

    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b"{}"
    streamed_bytes: int = 0


@pytest.fixture
async def fuzz_server() -> AsyncIterator[tuple[str, Scripted]]:
    """
    Serve whatever the test scripted, on a free loopback port.
    """
    scripted = Scripted()

    async def answer(request: web.Request) -> web.StreamResponse:
        if scripted.streamed_bytes:
            return await _stream(request, scripted.streamed_bytes)
        response = web.Response(status=scripted.status, body=scripted.body)
        for name, value in scripted.headers.items():
            response.headers[name] = value
        return response

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", answer)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    yield f"http://127.0.0.1:{port}", scripted
    await runner.cleanup()


async def _stream(request: web.Request, size: int) -> web.StreamResponse:
    response = web.StreamResponse(status=502)
    response.content_length = size
    await response.prepare(request)
    sent = 0
    try:
        while sent < size:
            await response.write(CHUNK)
            sent += len(CHUNK)
    except (ConnectionResetError, RuntimeError):
        pass  # the client stopped reading, as it should
    return response


def client_for(url: str) -> ModelArtsClient:
    return ModelArtsClient(
        url, TokenAuth(Secret("t"), source="test"), timeout_s=5.0, concurrency=2
    )


header_values = st.one_of(
    st.sampled_from(
        ["", "-1", "1e9", "NaN", "inf", "0x10", "Tue, 99 Foo 2025", "  3  ", "1.5"]
    ),
    st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=80),
)
bodies = st.one_of(
    st.binary(max_size=300),
    st.just(b'{"error_code": "ModelArts.4355", "error_msg'),  # truncated JSON
    st.just(b'{"error_code": 4409, "error_msg": ["x"], "request_id": null}'),
    st.just(b"[1, 2, 3]"),
    st.just(b'"just a string"'),
    st.just(b"<html><body>502 Bad Gateway</body></html>"),
    st.just(b'{"error_code": "' + b"A" * 200_000 + b'"}'),
    st.just(b"\xff\xfe\x00{}"),
)


@settings(
    max_examples=120,
    derandomize=True,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(
    status=st.integers(min_value=100, max_value=599).filter(
        lambda s: s not in (101, 204, 304) and not 100 <= s < 200
    ),
    retry_after=st.none() | header_values,
    extra=st.dictionaries(
        st.sampled_from(["X-Request-Id", "Date", "Content-Type", "X-Big"]),
        header_values,
        max_size=3,
    ),
    body=bodies,
)
async def test_any_answer_becomes_a_classified_result(
    fuzz_server: tuple[str, Scripted],
    status: int,
    retry_after: str | None,
    extra: dict[str, str],
    body: bytes,
) -> None:
    """Any status, headers and body end as SyncAccepted or an ApiError, no crash."""
    url, scripted = fuzz_server
    scripted.status, scripted.body = status, body
    scripted.headers = dict(extra)
    if retry_after is not None:
        scripted.headers["Retry-After"] = retry_after

    async with client_for(url) as client:
        try:
            result: SyncAccepted | ApiError = await client.sync_data(PROJECT, "ds")
        except ApiError as error:
            result = error

    if isinstance(result, SyncAccepted):
        assert 200 <= status < 300 or result.already_running
    else:
        assert result.http_status == status
        assert isinstance(result.transient, bool)
        assert len(result.error_msg or "") <= 500
        wait = getattr(result, "retry_after_s", None)
        assert wait is None or wait >= 0


async def test_huge_header_is_a_transport_error(
    fuzz_server: tuple[str, Scripted],
) -> None:
    """A header past aiohttp's line limit is an error we classify, not a crash."""
    url, scripted = fuzz_server
    scripted.status, scripted.headers = 503, {"X-Huge": "h" * 200_000}

    async with client_for(url) as client:
        with pytest.raises(ApiError) as caught:
            await client.sync_data(PROJECT, "ds")

    assert caught.value.transient


async def test_enormous_body_is_not_read_whole(
    fuzz_server: tuple[str, Scripted],
) -> None:
    """A 50 MB error body: the client reads 64 KiB, answers fast, stays small."""
    url, scripted = fuzz_server
    scripted.streamed_bytes = HUGE_BODY_BYTES
    tracemalloc.start()
    started = time.monotonic()

    async with client_for(url) as client:
        with pytest.raises(ApiError) as caught:
            await client.sync_data(PROJECT, "ds")

    elapsed_s = time.monotonic() - started
    _, peak_bytes = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert caught.value.http_status == 502
    assert elapsed_s < 2.0
    assert peak_bytes < 16 * MAX_BODY_BYTES
