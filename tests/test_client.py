"""
How the client maps HTTP answers to results and typed errors (aioresponses).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import aiohttp
import pytest
from aioresponses import aioresponses
from yarl import URL

from orchestrator import client as client_module
from orchestrator.auth import Auth, RequestInfo, Secret, TokenAuth
from orchestrator.client import ModelArtsClient, parse_retry_after
from orchestrator.errors import (
    ApiError,
    AuthError,
    BusyError,
    ForbiddenError,
    NotFoundError,
    RejectedError,
    ServerError,
    ThrottledError,
    TransportError,
)

ENDPOINT = "https://modelarts.cn-north-4.myhuaweicloud.com"
PROJECT = "0b2c5e7f9a1d4c3b8e6f0a2d4c6e8b1f"
DATASET = "WxCcHyPnRYbf1yqQ2hE"
URL_ = f"{ENDPOINT}/v2/{PROJECT}/datasets/{DATASET}/sync-data"


class StaticAuth:
    source = "test token"

    def fixed_headers(self) -> None:
        return None

    async def headers(self, request: RequestInfo) -> Mapping[str, str]:
        return {"X-Auth-Token": "test-token-value"}

    async def refresh(self, project_id: str, sent: Mapping[str, str]) -> bool:
        return False

    async def aclose(self) -> None:
        pass


@pytest.fixture
async def client() -> AsyncIterator[ModelArtsClient]:
    async with ModelArtsClient(
        ENDPOINT, StaticAuth(), timeout_s=5, concurrency=4
    ) as client:
        yield client


def error_body(code: str, message: str = "refused") -> str:
    return json.dumps({"error_code": code, "error_msg": message})


async def test_accepted_post_sends_empty_json_body_with_headers(
    client: ModelArtsClient,
) -> None:
    """A 200 becomes SyncAccepted; the request carries the documented headers."""
    with aioresponses() as mocked:
        mocked.post(URL_, status=200, body="{}", headers={"X-Request-Id": "req-1"})

        accepted = await client.sync_data(PROJECT, DATASET)

        call = mocked.requests[("POST", URL(URL_))][0]
    assert accepted.http_status == 200
    assert accepted.request_id == "req-1"
    assert not accepted.already_running
    assert not call.kwargs["data"], "no body: the wire test checks its bytes"
    assert call.kwargs["headers"]["Content-Type"] == "application/json"
    assert call.kwargs["headers"]["X-Auth-Token"] == "test-token-value"


async def test_sync_already_running_is_accepted(client: ModelArtsClient) -> None:
    """ModelArts.4355 means a sync task exists: accepted, already_running."""
    with aioresponses() as mocked:
        mocked.post(URL_, status=400, body=error_body("ModelArts.4355"))

        accepted = await client.sync_data(PROJECT, DATASET)

    assert accepted.already_running
    assert accepted.error_code == "ModelArts.4355"


@pytest.mark.parametrize(
    ("status", "body", "headers", "error_type", "transient"),
    [
        pytest.param(401, error_body("APIG.0301"), {}, AuthError, False, id="401"),
        pytest.param(403, error_body("APIG.0302"), {}, ForbiddenError, False, id="403"),
        pytest.param(
            404, error_body("ModelArts.6623"), {}, NotFoundError, False, id="404"
        ),
        pytest.param(
            400, error_body("ModelArts.4352"), {}, NotFoundError, False, id="4352"
        ),
        pytest.param(400, error_body("ModelArts.4409"), {}, BusyError, True, id="4409"),
        pytest.param(
            400, error_body("ModelArts.4343"), {}, RejectedError, False, id="4343"
        ),
        pytest.param(
            501, error_body("ModelArts.4383"), {}, RejectedError, False, id="501"
        ),
        pytest.param(429, error_body("APIG.0308"), {}, ThrottledError, True, id="429"),
        pytest.param(
            500, error_body("ModelArts.4360"), {}, ServerError, True, id="500"
        ),
        pytest.param(502, "<html>bad gateway</html>", {}, ServerError, True, id="502"),
        pytest.param(503, "", {}, ServerError, True, id="503"),
        pytest.param(504, "", {}, ServerError, True, id="504"),
    ],
)
async def test_error_answers_map_to_typed_errors(
    client: ModelArtsClient,
    status: int,
    body: str,
    headers: dict[str, str],
    error_type: type[ApiError],
    transient: bool,
) -> None:
    """Each documented failure becomes its typed error with the right transience."""
    with aioresponses() as mocked:
        mocked.post(URL_, status=status, body=body, headers=headers)

        with pytest.raises(error_type) as caught:
            await client.sync_data(PROJECT, DATASET)

    assert caught.value.http_status == status
    assert caught.value.transient is transient


@pytest.mark.parametrize(
    "body",
    [
        pytest.param({"error_code": "X.1", "error_msg": "m"}, id="error_code"),
        pytest.param({"errorCode": "X.1", "errorMsg": "m"}, id="errorCode"),
        pytest.param({"code": "X.1", "message": "m"}, id="code-message"),
    ],
)
async def test_error_body_shapes_all_parse(
    client: ModelArtsClient, body: dict[str, str]
) -> None:
    """The three error body spellings Huawei Cloud uses give the same fields."""
    with aioresponses() as mocked:
        mocked.post(URL_, status=400, body=json.dumps(body))

        with pytest.raises(RejectedError) as caught:
            await client.sync_data(PROJECT, DATASET)

    assert (caught.value.error_code, caught.value.error_msg) == ("X.1", "m")


async def test_non_json_error_keeps_status_and_first_200_bytes(
    client: ModelArtsClient,
) -> None:
    """An HTML error page becomes a clean error with a bounded message."""
    page = "<html>" + "x" * 5000 + "</html>"
    with aioresponses() as mocked:
        mocked.post(URL_, status=502, body=page)

        with pytest.raises(ServerError) as caught:
            await client.sync_data(PROJECT, DATASET)

    assert caught.value.error_code is None
    assert caught.value.error_msg == page[:200]


async def test_request_id_falls_back_to_the_body(client: ModelArtsClient) -> None:
    """Without an X-Request-Id header the body's request_id is kept."""
    body = {"error_code": "ModelArts.4343", "error_msg": "m", "request_id": "r-9"}
    with aioresponses() as mocked:
        mocked.post(URL_, status=400, body=json.dumps(body))

        with pytest.raises(RejectedError) as caught:
            await client.sync_data(PROJECT, DATASET)

    assert caught.value.request_id == "r-9"


async def test_retry_after_seconds_is_read_from_429(client: ModelArtsClient) -> None:
    """A 429's Retry-After in seconds reaches the error."""
    with aioresponses() as mocked:
        mocked.post(URL_, status=429, body="", headers={"Retry-After": "3"})

        with pytest.raises(ThrottledError) as caught:
            await client.sync_data(PROJECT, DATASET)

    assert caught.value.retry_after_s == 3.0


@pytest.mark.parametrize(
    "raised",
    [
        pytest.param(aiohttp.ServerDisconnectedError(), id="reset"),
        pytest.param(TimeoutError(), id="timeout"),
        pytest.param(aiohttp.ClientOSError(104, "Connection reset by peer"), id="os"),
    ],
)
async def test_transport_failures_are_transient(
    client: ModelArtsClient, raised: Exception
) -> None:
    """No answer at all becomes a transient TransportError."""
    with aioresponses() as mocked:
        mocked.post(URL_, exception=raised)

        with pytest.raises(TransportError) as caught:
            await client.sync_data(PROJECT, DATASET)

    assert caught.value.transient


async def test_huge_error_body_is_not_read_whole(client: ModelArtsClient) -> None:
    """An enormous body is cut at the client's read bound."""
    with aioresponses() as mocked:
        mocked.post(URL_, status=500, body="y" * (client_module.MAX_BODY_BYTES * 4))

        with pytest.raises(ServerError) as caught:
            await client.sync_data(PROJECT, DATASET)

    assert len(caught.value.error_msg or "") <= 200


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        pytest.param("7", 7.0, id="seconds"),
        pytest.param(" 2.5 ", 2.5, id="fraction"),
        pytest.param("-1", None, id="negative"),
        pytest.param("soon", None, id="garbage"),
        pytest.param("", None, id="empty"),
        pytest.param(None, None, id="absent"),
        pytest.param("Wed, 21 Oct 2015 07:28:00 GMT", 0.0, id="past-date"),
    ],
)
def test_parse_retry_after(value: str | None, expected: float | None) -> None:
    """Retry-After accepts seconds and HTTP dates and rejects everything else."""
    assert parse_retry_after(value) == expected


def test_parse_retry_after_future_date() -> None:
    """An HTTP date in the future gives the seconds until then."""
    now = datetime(2026, 1, 1, tzinfo=UTC)
    header = format_datetime(now + timedelta(seconds=30), usegmt=True)

    assert parse_retry_after(header, now=now.timestamp()) == pytest.approx(30.0)


STATUS_URL = f"{URL_}/status"
LIST_URL = f"{ENDPOINT}/v2/{PROJECT}/datasets?offset=2&limit=100"


async def test_sync_status_reads_every_documented_field(
    client: ModelArtsClient,
) -> None:
    """The status answer becomes a SyncStatus; duration_time ms becomes seconds."""
    body = {
        "status": "COMPLETED",
        "task_id": "t-1",
        "duration_time": 84200,
        "add_sample_count": 120,
        "deleted_sample_count": "3",
        "total_sample_count": -1,
        "error_code": None,
    }
    with aioresponses() as mocked:
        mocked.get(STATUS_URL, status=200, body=json.dumps(body))

        status = await client.sync_status(PROJECT, DATASET)

    assert (status.state, status.task_id, status.duration_s) == (
        "COMPLETED",
        "t-1",
        84.2,
    )
    assert (status.add_sample_count, status.deleted_sample_count) == (120, 3)
    assert status.total_sample_count is None, "a negative count is not a count"


@pytest.mark.parametrize(
    ("status", "body", "error_type"),
    [
        pytest.param(404, error_body("ModelArts.6623"), NotFoundError, id="404"),
        pytest.param(401, error_body("APIG.0301"), AuthError, id="401"),
        pytest.param(200, "<html>proxy</html>", ServerError, id="not-json"),
        pytest.param(200, "[1, 2]", ServerError, id="not-an-object"),
    ],
)
async def test_sync_status_errors_are_typed(
    client: ModelArtsClient, status: int, body: str, error_type: type[ApiError]
) -> None:
    """A refused or unreadable status answer raises the matching typed error."""
    with aioresponses() as mocked:
        mocked.get(STATUS_URL, status=status, body=body)

        with pytest.raises(error_type):
            await client.sync_status(PROJECT, DATASET)


async def test_status_without_a_state_reads_as_unknown(client: ModelArtsClient) -> None:
    """An answer with no status word is UNKNOWN, which a wait treats as running."""
    with aioresponses() as mocked:
        mocked.get(STATUS_URL, status=200, body="{}")

        status = await client.sync_status(PROJECT, DATASET)

    assert status.state == "UNKNOWN"


async def test_list_datasets_passes_paging_and_skips_unusable_entries(
    client: ModelArtsClient,
) -> None:
    """offset and limit go out as given; entries without an id are left out."""
    body = {
        "total_number": 203,
        "datasets": [
            {"dataset_id": "a", "dataset_name": "cars", "dataset_type": 0, "status": 5},
            {"dataset_name": "no id"},
            "junk",
            {"dataset_id": "b"},
        ],
    }
    with aioresponses() as mocked:
        mocked.get(LIST_URL, status=200, body=json.dumps(body))

        page = await client.list_datasets(PROJECT, offset=2, limit=100)

    assert page.total_number == 203
    assert [(d.dataset_id, d.dataset_name, d.status) for d in page.datasets] == [
        ("a", "cars", 5),
        ("b", "", None),
    ]


async def test_a_fixed_token_goes_out_with_every_request() -> None:
    """A token sent from the session's headers is on each request, JSON type too."""
    token = TokenAuth(Secret("fixed-token-value"), source="test")

    heads = await _raw_requests(
        2,
        lambda c: asyncio.gather(
            c.sync_data(PROJECT, DATASET), c.sync_status(PROJECT, DATASET)
        ),
        token,
    )

    for head in heads:
        lines = head.decode().split("\r\n")
        assert "X-Auth-Token: fixed-token-value" in lines
        assert "Content-Type: application/json" in lines
        assert any(line.startswith("User-Agent: modelarts-sync/") for line in lines)


async def _raw_requests(
    calls: int,
    send: Callable[[ModelArtsClient], Awaitable[object]],
    credential: Auth | None = None,
) -> list[bytes]:
    """
    Return the bytes of ``calls`` requests a loopback server received.
    """
    received: list[bytes] = []

    async def answer(
        reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        while len(received) < calls:
            try:
                head = await reader.readuntil(b"\r\n\r\n")
            except asyncio.IncompleteReadError:
                break
            received.append(head)
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}")
            await writer.drain()
        writer.close()

    server = await asyncio.start_server(answer, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    async with (
        server,
        ModelArtsClient(
            f"http://127.0.0.1:{port}",
            credential or StaticAuth(),
            timeout_s=5,
            concurrency=1,
        ) as client,
    ):
        await send(client)
    return received


@pytest.mark.parametrize(
    ("call", "request_line"),
    [
        pytest.param(
            lambda c: c.sync_data(PROJECT, DATASET),
            f"POST /v2/{PROJECT}/datasets/{DATASET}/sync-data HTTP/1.1",
            id="post",
        ),
        pytest.param(
            lambda c: c.sync_status(PROJECT, DATASET),
            f"GET /v2/{PROJECT}/datasets/{DATASET}/sync-data/status HTTP/1.1",
            id="get",
        ),
    ],
)
async def test_requests_on_the_wire_carry_content_length_0_and_no_body(
    call: Callable[[ModelArtsClient], Awaitable[object]], request_line: str
) -> None:
    """Each request's head says Content-Length: 0 (no body), JSON and the token."""
    (head,) = await _raw_requests(1, call)

    lines = head.decode().split("\r\n")
    assert lines[0] == request_line
    assert "Content-Length: 0" in lines
    assert "Content-Type: application/json" in lines
    assert "X-Auth-Token: test-token-value" in lines
    assert not any(line.lower().startswith("transfer-encoding") for line in lines)
