"""
The bundled ModelArts stand-in, driven over loopback by a real aiohttp client.
"""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from orchestrator.errors import ConfigError
from orchestrator.faultplan import HANG, RESET, Dataset, Fault, Plan
from orchestrator.simulator import Simulator

PROJECT = "0b2c5e7f9a1d4c3b8e6f0a2d4c6e8b1f"
TOKEN = "sim-token"
AUTH = {"X-Auth-Token": TOKEN}


class FakeClock:
    """
    A simulator clock that moves only when a test moves it.
    """

    def __init__(self) -> None:
        self.now_s = 1000.0

    def __call__(self) -> float:
        return self.now_s


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    """
    Yield a client session that sends the simulator's token.
    """
    async with aiohttp.ClientSession(headers=AUTH) as session:
        yield session


def api(sim: Simulator, tail: str = "", project_id: str = PROJECT) -> str:
    return f"{sim.url}/v2/{project_id}/datasets{tail}"


async def call(
    session: aiohttp.ClientSession, method: str, url: str, **kwargs: Any
) -> tuple[int, Any, aiohttp.ClientResponse]:
    """
    Send one request; return the status, the decoded body and the response.
    """
    async with session.request(method, url, **kwargs) as response:
        text = await response.text()
        is_json = response.content_type == "application/json"
        return response.status, json.loads(text) if is_json else text, response


async def sync(
    session: aiohttp.ClientSession, sim: Simulator, dataset_id: str = "ds-1"
) -> tuple[int, Any]:
    status, body, _ = await call(session, "POST", api(sim, f"/{dataset_id}/sync-data"))
    return status, body


async def sync_status(
    session: aiohttp.ClientSession, sim: Simulator, dataset_id: str = "ds-1"
) -> Any:
    url = api(sim, f"/{dataset_id}/sync-data/status")
    status, body, _ = await call(session, "GET", url)
    assert status == 200
    return body


async def test_sync_post_is_accepted_and_recorded(
    session: aiohttp.ClientSession,
) -> None:
    """A sync POST gets 200 {} and one record with what the server saw."""
    async with Simulator() as sim:
        url = api(sim, "/ds-1/sync-data")
        status, body, response = await call(session, "POST", url, json={})

    assert (status, body) == (200, {})
    assert response.content_type == "application/json"
    (record,) = sim.sync_requests()
    assert record.request_id == response.headers["X-Request-Id"]
    assert len(record.request_id) == 32
    assert (record.method, record.path, record.kind) == (
        "POST",
        f"/v2/{PROJECT}/datasets/ds-1/sync-data",
        "sync",
    )
    assert (record.project_id, record.dataset_id) == (PROJECT, "ds-1")
    assert (record.status, record.outcome, record.error_code) == (200, "answered", None)
    assert record.headers["x-auth-token"] == "<redacted>"
    assert record.body_size == 2
    assert record.arrived_s <= record.finished_s


@pytest.mark.parametrize(
    "headers",
    [
        pytest.param({}, id="missing"),
        pytest.param({"X-Auth-Token": "not-the-token"}, id="wrong"),
    ],
)
async def test_request_without_the_token_is_refused_with_401(
    headers: dict[str, str],
) -> None:
    """A missing or different X-Auth-Token gets 401 APIG.0301."""
    async with Simulator() as sim, aiohttp.ClientSession(headers=headers) as session:
        status, body = await sync(session, sim)

    assert status == 401
    assert body["error_code"] == "APIG.0301"
    (record,) = sim.received
    assert (record.status, record.error_code) == (401, "APIG.0301")


async def test_plan_without_token_accepts_any_request() -> None:
    """With token None, requests without a token are served."""
    async with (
        Simulator(Plan(token=None)) as sim,
        aiohttp.ClientSession() as session,
    ):
        status, _ = await sync(session, sim)

    assert status == 200


@pytest.mark.parametrize(
    ("fault", "error_code", "content_type", "retry_after"),
    [
        pytest.param(Fault(status=503), "ModelArts.4360", "application/json", None),
        pytest.param(
            Fault(status=429, retry_after="2"), "APIG.0308", "application/json", "2"
        ),
        pytest.param(
            Fault(status=429, retry_after="Wed, 21 Oct 2015 07:28:00 GMT"),
            "APIG.0308",
            "application/json",
            "Wed, 21 Oct 2015 07:28:00 GMT",
            id="retry-after-date",
        ),
        pytest.param(
            Fault(status=404, error_code="ModelArts.4352", error_msg="gone"),
            "ModelArts.4352",
            "application/json",
            None,
            id="custom-code",
        ),
        pytest.param(
            Fault(status=502, body="<html>Bad Gateway</html>"),
            None,
            "text/html",
            None,
            id="raw-body",
        ),
    ],
)
async def test_status_fault_sends_the_scripted_error(
    session: aiohttp.ClientSession,
    fault: Fault,
    error_code: str | None,
    content_type: str,
    retry_after: str | None,
) -> None:
    """A status fault sends its status, body, content type and Retry-After."""
    async with Simulator(Plan(faults={"ds-1": (fault,)})) as sim:
        url = api(sim, "/ds-1/sync-data")
        status, body, response = await call(session, "POST", url)

    assert status == fault.status
    assert response.content_type == content_type
    assert response.headers.get("Retry-After") == retry_after
    assert response.headers["X-Request-Id"]
    if fault.body is not None:
        assert body == fault.body
    else:
        assert body["error_code"] == error_code
        assert body["error_msg"] == (fault.error_msg or body["error_msg"])
    (record,) = sim.received
    assert (record.status, record.error_code, record.outcome) == (
        fault.status,
        error_code,
        "answered",
    )
    assert record.fault == f"status:{fault.status}"


async def test_reset_fault_surfaces_as_a_connection_error(
    session: aiohttp.ClientSession,
) -> None:
    """A reset closes the connection unanswered; the client sees a connection error."""
    async with Simulator(Plan(faults={"ds-1": (RESET,)})) as sim:
        with pytest.raises(aiohttp.ClientConnectionError):
            await sync(session, sim)
        await sim.wait_until_idle()

    (record,) = sim.received
    assert (record.status, record.outcome, record.fault) == (None, "reset", "reset")


async def test_hang_fault_is_released_quickly_by_stop(
    session: aiohttp.ClientSession,
) -> None:
    """A hung request holds until stop(), which returns at once and drops it."""
    sim = Simulator(Plan(always={"ds-1": HANG}))
    await sim.start()
    request = asyncio.create_task(sync(session, sim))
    await sim.wait_for_requests(1)
    assert sim.in_flight == 1

    started_s = time.monotonic()
    await sim.stop()
    stop_took_s = time.monotonic() - started_s

    assert stop_took_s < 0.5
    with pytest.raises(aiohttp.ClientConnectionError):
        await request
    (record,) = sim.received
    assert (record.status, record.outcome) == (None, "hung")


async def test_hang_ends_when_the_client_gives_up(
    session: aiohttp.ClientSession,
) -> None:
    """A client timeout ends a hang; the record says hung, with no status."""
    timeout = aiohttp.ClientTimeout(total=0.2)
    async with Simulator(Plan(always={"ds-1": HANG})) as sim:
        with pytest.raises(TimeoutError):
            await call(session, "POST", api(sim, "/ds-1/sync-data"), timeout=timeout)
        await sim.wait_until_idle()

        (record,) = sim.received
        assert (record.status, record.outcome) == (None, "hung")
        assert record.finished_s - record.arrived_s >= 0.15


async def test_stop_cuts_delayed_answers_short(
    session: aiohttp.ClientSession,
) -> None:
    """stop() does not wait out a slow answer; the request is recorded abandoned."""
    sim = Simulator(Plan(latency_s=30))
    await sim.start()
    request = asyncio.create_task(sync(session, sim))
    await sim.wait_for_requests(1)

    started_s = time.monotonic()
    await sim.stop()
    stop_took_s = time.monotonic() - started_s

    assert stop_took_s < 0.5
    with pytest.raises(aiohttp.ClientConnectionError):
        await request
    (record,) = sim.received
    assert (record.status, record.outcome) == (None, "abandoned")


async def test_client_leaving_during_latency_still_starts_the_sync(
    session: aiohttp.ClientSession,
) -> None:
    """A sync whose answer the client never saw was accepted all the same."""
    slow = Fault(latency_ms=5000)
    timeout = aiohttp.ClientTimeout(total=0.1)
    async with Simulator(Plan(faults={"ds-1": (slow,)})) as sim:
        with pytest.raises(TimeoutError):
            await call(session, "POST", api(sim, "/ds-1/sync-data"), timeout=timeout)
        await sim.wait_until_idle()
        state = await sync_status(session, sim)

    assert sim.received[0].outcome == "abandoned"
    assert state["status"] == "COMPLETED"


async def test_latency_fault_delays_a_normal_answer(
    session: aiohttp.ClientSession,
) -> None:
    """A latency fault answers normally, after the given milliseconds."""
    async with Simulator(Plan(faults={"ds-1": (Fault(latency_ms=150),)})) as sim:
        status, _ = await sync(session, sim)

    (record,) = sim.received
    assert status == 200
    assert record.finished_s - record.arrived_s >= 0.14
    assert record.fault == "latency:150"


async def test_faults_are_used_in_order_then_answers_are_normal(
    session: aiohttp.ClientSession,
) -> None:
    """Scripted faults go one per request of that dataset, any API, then 200."""
    faults = (Fault(status=503), Fault(status=429), Fault(status=500))
    async with Simulator(Plan(faults={"ds-1": faults})) as sim:
        first = [await sync(session, sim) for _ in range(2)]
        url = api(sim, "/ds-1/sync-data/status")
        status_answer, _, _ = await call(session, "GET", url)
        other, _ = await sync(session, sim, "ds-2")
        later = [await sync(session, sim) for _ in range(2)]

    assert [s for s, _ in first] == [503, 429]
    assert status_answer == 500
    assert other == 200
    assert [s for s, _ in later] == [200, 200]


async def test_always_fault_answers_every_request(
    session: aiohttp.ClientSession,
) -> None:
    """An always fault applies to every request for its dataset, and no other."""
    fault = Fault(status=404, error_code="ModelArts.4352")
    async with Simulator(Plan(always={"ds-9": fault})) as sim:
        statuses = [(await sync(session, sim, "ds-9"))[0] for _ in range(3)]
        other, _ = await sync(session, sim, "ds-1")

    assert statuses == [404, 404, 404]
    assert other == 200
    assert {r.error_code for r in sim.received if r.dataset_id == "ds-9"} == {
        "ModelArts.4352"
    }


async def test_rate_limit_throttles_requests_beyond_it_within_one_second(
    session: aiohttp.ClientSession,
) -> None:
    """With a limit of 3/s, the 4th and 5th requests in the same second get 429."""
    clock = FakeClock()
    async with Simulator(Plan(rate_limit_per_s=3), clock=clock) as sim:
        answers = [await sync(session, sim, f"ds-{i}") for i in range(5)]
        clock.now_s += 1.0
        after_a_second, _ = await sync(session, sim)

    assert [s for s, _ in answers] == [200, 200, 200, 429, 429]
    assert answers[3][1]["error_code"] == "APIG.0308"
    outcomes = [r.outcome for r in sim.received]
    assert outcomes == ["answered"] * 3 + ["throttled"] * 2 + ["answered"]
    assert after_a_second == 200


async def test_rate_limit_window_slides_and_counts_only_admitted(
    session: aiohttp.ClientSession,
) -> None:
    """The window is the last 1.0 s of admitted arrivals, not a fixed second."""
    clock = FakeClock()
    start_s = clock.now_s
    statuses = []
    async with Simulator(Plan(rate_limit_per_s=2.5), clock=clock) as sim:
        for offset_s in (0.0, 0.5, 0.9, 0.95, 1.0, 1.2, 1.5):
            clock.now_s = start_s + offset_s
            statuses.append((await sync(session, sim))[0])

    assert statuses == [200, 200, 429, 429, 200, 429, 200]


async def test_auth_is_checked_before_the_rate_limit(
    session: aiohttp.ClientSession,
) -> None:
    """Refused requests neither use up the limit nor get throttled."""
    clock = FakeClock()
    async with (
        Simulator(Plan(rate_limit_per_s=1), clock=clock) as sim,
        aiohttp.ClientSession() as anonymous,
    ):
        refused = [(await sync(anonymous, sim))[0] for _ in range(3)]
        admitted, _ = await sync(session, sim)

    assert refused == [401, 401, 401]
    assert admitted == 200


async def test_max_in_flight_counts_requests_handled_at_once(
    session: aiohttp.ClientSession,
) -> None:
    """Five concurrent slow requests are five in flight; sequential ones are one."""
    async with Simulator(Plan(latency_s=0.3)) as sim:
        await sync(session, sim)
        assert sim.max_in_flight == 1
        await asyncio.gather(*(sync(session, sim, f"ds-{i}") for i in range(5)))

    assert sim.max_in_flight == 5
    assert sim.in_flight == 0


async def test_sync_status_moves_from_queuing_to_running_to_completed(
    session: aiohttp.ClientSession,
) -> None:
    """A 10 s sync is QUEUING, then RUNNING (a second POST gets 4355), then done."""
    clock = FakeClock()
    start_s = clock.now_s
    async with Simulator(Plan(sync_duration_s=10), clock=clock) as sim:
        before = await sync_status(session, sim)
        accepted, _ = await sync(session, sim)
        clock.now_s = start_s + 0.5
        queuing = await sync_status(session, sim)
        clock.now_s = start_s + 5
        running = await sync_status(session, sim)
        refused, refusal = await sync(session, sim)
        _, shown, _ = await call(session, "GET", api(sim, "/ds-1"))
        clock.now_s = start_s + 10
        completed = await sync_status(session, sim)
        again, _ = await sync(session, sim)
        restarted = await sync_status(session, sim)

    assert before == {"status": "NOT_EXIST", "dataset_id": "ds-1"}
    assert accepted == 200
    assert [queuing["status"], running["status"]] == ["QUEUING", "RUNNING"]
    assert (refused, refusal["error_code"]) == (400, "ModelArts.4355")
    assert shown["status"] == 5
    assert completed["status"] == "COMPLETED"
    assert completed["task_id"] == queuing["task_id"]
    assert completed["duration_time"] == 10_000
    assert isinstance(completed["create_time"], int)
    assert again == 200
    assert restarted["status"] == "QUEUING"
    assert restarted["task_id"] != completed["task_id"]


async def test_instant_sync_completes_and_failed_sync_ends_failed(
    session: aiohttp.ClientSession,
) -> None:
    """With no duration a sync is done at once; listed datasets end FAILED."""
    async with Simulator(Plan(failed_syncs=frozenset({"ds-bad"}))) as sim:
        for dataset_id in ("ds-1", "ds-bad", "ds-1"):
            assert (await sync(session, sim, dataset_id))[0] == 200
        done = await sync_status(session, sim)
        failed = await sync_status(session, sim, "ds-bad")

    assert done["status"] == "COMPLETED"
    assert failed["status"] == "FAILED"
    assert failed["error_code"]


def catalogue(count: int, **fields: Any) -> dict[str, tuple[Dataset, ...]]:
    items = tuple(Dataset(f"ds-{i:02d}", **fields) for i in range(count))
    return {PROJECT: items}


@pytest.mark.parametrize(
    ("mode", "offset"),
    [
        pytest.param("records", 20, id="record-offset"),
        pytest.param("pages", 2, id="page-index"),
    ],
)
async def test_list_pages_through_the_catalogue(
    session: aiohttp.ClientSession, mode: Any, offset: int
) -> None:
    """The list API pages 25 datasets by record offset or page index."""
    plan = Plan(datasets=catalogue(25), list_offset_mode=mode)
    async with Simulator(plan) as sim:
        _, first, _ = await call(session, "GET", api(sim))
        query = {"offset": offset, "limit": 10}
        _, last, _ = await call(session, "GET", api(sim), params=query)
        _, other_project, _ = await call(session, "GET", api(sim, project_id="p2"))

    assert first["total_number"] == last["total_number"] == 25
    assert [d["dataset_id"] for d in first["datasets"]] == [
        f"ds-{i:02d}" for i in range(10)
    ]
    assert [d["dataset_id"] for d in last["datasets"]] == [
        f"ds-{i:02d}" for i in range(20, 25)
    ]
    assert first["datasets"][0]["data_sources"] == [
        {"data_type": 0, "data_path": "/sim-bucket/ds-00/"}
    ]
    assert other_project == {"total_number": 0, "datasets": []}
    assert sim.received[1].query == f"offset={offset}&limit=10"


@pytest.mark.parametrize(
    "query",
    [
        pytest.param({"limit": 0}, id="limit-0"),
        pytest.param({"limit": 101}, id="limit-101"),
        pytest.param({"offset": -1}, id="negative-offset"),
        pytest.param({"limit": "ten"}, id="not-a-number"),
    ],
)
async def test_list_refuses_bad_paging(
    session: aiohttp.ClientSession, query: dict[str, Any]
) -> None:
    """Paging outside offset >= 0 and limit 1-100 gets 400."""
    async with Simulator() as sim:
        status, body, _ = await call(session, "GET", api(sim), params=query)

    assert status == 400
    assert body["error_code"].startswith("ModelArts.")


async def test_catalogue_decides_which_datasets_exist(
    session: aiohttp.ClientSession,
) -> None:
    """With a catalogue, unknown ids get 404 and text datasets cannot sync."""
    datasets = {PROJECT: (Dataset("cats", "Cats"), Dataset("notes", dataset_type=100))}
    async with Simulator(Plan(datasets=datasets)) as sim:
        _, shown, _ = await call(session, "GET", api(sim, "/cats"))
        missing, missing_body, _ = await call(session, "GET", api(sim, "/dogs"))
        missing_sync, _ = await sync(session, sim, "dogs")
        text_sync, text_body = await sync(session, sim, "notes")

    assert (shown["dataset_id"], shown["dataset_name"]) == ("cats", "Cats")
    assert (missing, missing_body["error_code"]) == (404, "ModelArts.6623")
    assert missing_sync == 404
    assert (text_sync, text_body["error_code"]) == (501, "ModelArts.4383")


async def test_without_catalogue_every_dataset_exists(
    session: aiohttp.ClientSession,
) -> None:
    """Without a catalogue any dataset id can be shown."""
    async with Simulator() as sim:
        status, shown, _ = await call(session, "GET", api(sim, "/anything"))

    assert (status, shown["dataset_id"], shown["status"]) == (200, "anything", 1)


@pytest.mark.parametrize(
    ("method", "path"),
    [
        pytest.param("GET", f"/v2/{PROJECT}/datasets/ds-1/sync-data", id="get-sync"),
        pytest.param("DELETE", f"/v2/{PROJECT}/datasets/ds-1", id="delete"),
        pytest.param("POST", f"/v2/{PROJECT}/datasets/a.b/sync-data", id="bad-id"),
        pytest.param("GET", "/v1/projects", id="elsewhere"),
        pytest.param("GET", "/v3/auth/tokens", id="get-token"),
    ],
)
async def test_unknown_api_gets_apig_404(
    session: aiohttp.ClientSession, method: str, path: str
) -> None:
    """Anything that is not one of the stand-in's APIs gets 404 APIG.0101."""
    async with Simulator(Plan(always={"ds-1": RESET})) as sim:
        status, body, response = await call(session, method, sim.url + path)

    assert (status, body["error_code"]) == (404, "APIG.0101")
    assert response.headers["X-Request-Id"]
    assert sim.received[0].kind == "other"


def token_request() -> dict[str, Any]:
    user = {"name": "u", "password": "pw", "domain": {"name": "d"}}
    identity = {"methods": ["password"], "password": {"user": user}}
    return {"auth": {"identity": identity, "scope": {"project": {"id": PROJECT}}}}


async def test_iam_endpoint_issues_the_plan_token() -> None:
    """POST /v3/auth/tokens answers 201 with the plan's token in X-Subject-Token."""
    async with Simulator(Plan(token="tok-1")) as sim, aiohttp.ClientSession() as s:
        url = f"{sim.url}/v3/auth/tokens"
        status, body, response = await call(s, "POST", url, json=token_request())
        malformed, _, _ = await call(s, "POST", url, data=b"{")

    assert status == 201
    assert response.headers["X-Subject-Token"] == "tok-1"
    assert body["token"]["project"] == {"id": PROJECT}
    assert "pw" not in json.dumps(body)
    assert malformed == 400
    assert [(r.kind, r.project_id) for r in sim.received] == [
        ("token", PROJECT),
        ("token", None),
    ]


async def test_iam_endpoint_refuses_a_wrong_password() -> None:
    """With iam_password set, another password gets 401 and no token."""
    plan = Plan(iam_password="right")
    async with Simulator(plan) as sim, aiohttp.ClientSession() as s:
        url = f"{sim.url}/v3/auth/tokens"
        status, body, response = await call(s, "POST", url, json=token_request())

    assert status == 401
    assert body["error"]["code"] == 401
    assert "X-Subject-Token" not in response.headers


async def test_log_path_gets_one_json_line_per_request(
    session: aiohttp.ClientSession, tmp_path: Path
) -> None:
    """Each request is one flushed JSON line; a hang is logged while it lasts."""
    log_path = tmp_path / "requests.jsonl"
    plan = Plan(faults={"ds-2": (Fault(status=503),)}, always={"ds-3": HANG})
    async with Simulator(plan, log_path=log_path) as sim:
        await sync(session, sim, "ds-1")
        await sync(session, sim, "ds-2")
        hung = asyncio.create_task(sync(session, sim, "ds-3"))
        await sim.wait_for_requests(3)
        lines = log_path.read_text().splitlines()
    with pytest.raises(aiohttp.ClientConnectionError):
        await hung

    rows = [json.loads(line) for line in lines]
    assert [(r["dataset_id"], r["status"], r["outcome"]) for r in rows] == [
        ("ds-1", 200, "answered"),
        ("ds-2", 503, "answered"),
        ("ds-3", None, "hung"),
    ]
    assert rows[2]["finished_s"] is None
    assert rows[0]["headers"]["X-Auth-Token"] == "<redacted>"
    assert TOKEN not in log_path.read_text()
    assert rows[0] == sim.received[0].as_dict()
    assert len(log_path.read_text().splitlines()) == 3


async def test_without_kept_records_requests_are_only_logged(
    session: aiohttp.ClientSession, tmp_path: Path
) -> None:
    """Serve mode's simulator logs every request and keeps none in memory."""
    log_path = tmp_path / "requests.jsonl"
    async with Simulator(log_path=log_path, keep_records=False) as sim:
        for name in ("ds-1", "ds-2"):
            assert (await sync(session, sim, name))[0] == 200

    rows = [json.loads(line) for line in log_path.read_text().splitlines()]
    assert [r["dataset_id"] for r in rows] == ["ds-1", "ds-2"]
    assert sim.received == []


async def test_received_is_in_arrival_order(session: aiohttp.ClientSession) -> None:
    """A slow request that finishes last still comes first in received."""
    async with Simulator(Plan(always={"slow": Fault(latency_ms=200)})) as sim:
        slow = asyncio.create_task(sync(session, sim, "slow"))
        await sim.wait_for_requests(1)
        await sync(session, sim, "fast")
        await slow

    assert [(r.seq, r.dataset_id) for r in sim.received] == [(0, "slow"), (1, "fast")]
    assert sim.received[0].finished_s > sim.received[1].finished_s


async def test_start_on_a_busy_port_is_a_config_error() -> None:
    """A port already in use gives a one-line ConfigError naming it."""
    async with Simulator() as first:
        port = int(first.url.rsplit(":", 1)[1])
        second = Simulator()
        with pytest.raises(ConfigError, match=f"cannot listen on 127.0.0.1:{port}"):
            await second.start(port=port)


async def test_unwritable_log_path_is_a_config_error(tmp_path: Path) -> None:
    """A log in a missing folder gives a ConfigError naming the file."""
    log_path = tmp_path / "absent" / "requests.jsonl"

    with pytest.raises(ConfigError, match="cannot open the request log"):
        await Simulator(log_path=log_path).start()


async def test_wait_for_requests_times_out_saying_how_many_arrived() -> None:
    """Waiting for more requests than arrive fails with the count seen."""
    async with Simulator() as sim:
        with pytest.raises(TimeoutError, match="0 of 2 requests"):
            await sim.wait_for_requests(2, timeout_s=0.05)


async def test_peak_arrivals_counts_the_densest_window(
    session: aiohttp.ClientSession,
) -> None:
    """peak_arrivals finds the most sync arrivals within any one second."""
    clock = FakeClock()
    start_s = clock.now_s
    async with Simulator(clock=clock) as sim:
        for offset_s in (0.0, 0.2, 0.9, 1.1, 1.15, 3.0):
            clock.now_s = start_s + offset_s
            await sync(session, sim)
        await call(session, "GET", api(sim))

    assert sim.peak_arrivals() == 4
    assert sim.peak_arrivals(window_s=0.1) == 2
    assert sim.peak_arrivals(kind=None, window_s=10) == 7


def test_serve_forever_prints_one_line_and_stops_on_sigterm(tmp_path: Path) -> None:
    """serve_forever says where it listens, serves, and exits 0 on SIGTERM."""
    log_path = tmp_path / "requests.jsonl"
    code = (
        "from pathlib import Path; from orchestrator.simulator import Plan, "
        f"serve_forever; serve_forever(Plan(), host='127.0.0.1', port=0, "
        f"log_path=Path({str(log_path)!r}))"
    )
    process = subprocess.Popen(
        [sys.executable, "-c", code], stdout=subprocess.PIPE, text=True
    )
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        assert line.startswith("listening on http://127.0.0.1:")
        url = line.split()[-1]
        status = asyncio.run(_post_once(f"{url}/v2/p/datasets/d/sync-data"))
        process.send_signal(signal.SIGTERM)
        rest, _ = process.communicate(timeout=10)
    finally:
        process.kill()
        process.wait()

    assert status == 200
    assert process.returncode == 0
    assert rest == ""
    (row,) = (json.loads(x) for x in log_path.read_text().splitlines())
    assert row["kind"] == "sync"


async def _post_once(url: str) -> int:
    async with aiohttp.ClientSession(headers=AUTH) as session, session.post(url) as r:
        return r.status


async def test_stuck_sync_stays_running(session: aiohttp.ClientSession) -> None:
    """A dataset in stuck_syncs reports RUNNING long after the duration passed."""
    clock = FakeClock()
    plan = Plan(sync_duration_s=1, stuck_syncs=frozenset({"ds-1"}))
    async with Simulator(plan, clock=clock) as sim:
        await sync(session, sim)
        clock.now_s += 3600
        state = await sync_status(session, sim)
        again, refusal = await sync(session, sim)

    assert state["status"] == "RUNNING"
    assert (again, refusal["error_code"]) == (400, "ModelArts.4355")


@pytest.mark.parametrize(
    ("mode", "offsets"),
    [
        pytest.param("records", (0, 10, 20), id="records"),
        pytest.param("pages", (0, 1, 2), id="pages"),
    ],
)
async def test_list_can_repeat_a_page(
    session: aiohttp.ClientSession, mode: Any, offsets: tuple[int, ...]
) -> None:
    """With list_repeat_page 0 page two repeats page one; page three is normal."""
    plan = Plan(datasets=catalogue(25), list_offset_mode=mode, list_repeat_page=0)
    pages = []
    async with Simulator(plan) as sim:
        for offset in offsets:
            query = {"offset": offset, "limit": 10}
            _, body, _ = await call(session, "GET", api(sim), params=query)
            pages.append([d["dataset_id"] for d in body["datasets"]])

    assert pages[1] == pages[0] == [f"ds-{i:02d}" for i in range(10)]
    assert pages[2] == [f"ds-{i:02d}" for i in range(20, 25)]
