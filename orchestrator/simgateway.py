"""
Decide each request's answer as APIG and the ModelArts service behind it would.

The simulator's server (`orchestrator.simulator`) hands every request here once
its body is read. One request passes these steps in order::

    route            unknown path or method -> 404 APIG.0101, nothing else applies
    IAM token        POST /v3/auth/tokens -> 201 (no auth, no limit, no faults)
    credential       a bad signature (plan.access_keys), or a token that is not
                     the current one -> 401 APIG.0301
    rate limit       over the window -> 429 APIG.0308, outcome "throttled"
    fault            ``always`` for the dataset, else its next scripted fault
    normal answer    state changes (a new sync task) happen here, at arrival

The server then applies latency and sends the `Answer`, resets the connection or
holds it. Credentials are `orchestrator.simauth`'s, the rate window and the
datasets `orchestrator.simstate`'s; faults come from the plan.
"""

from __future__ import annotations

import json
import re
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from aiohttp import web

from orchestrator import simauth, simstate
from orchestrator.faultplan import Action, Fault, Plan
from orchestrator.simrecords import Exchange, Kind, Outcome

_ID = r"[A-Za-z0-9_-]+"
_DATASETS_PATH = re.compile(
    rf"/v2/({_ID})/datasets(?:/({_ID})(/sync-data(?:/status)?)?)?\Z"
)
_KINDS: dict[tuple[str, bool, str | None], Kind] = {
    ("GET", False, None): "list",
    ("GET", True, None): "show",
    ("POST", True, "/sync-data"): "sync",
    ("GET", True, "/sync-data/status"): "status",
}
_IAM_PATH = "/v3/auth/tokens"

# Codes from the ModelArts and APIG error tables; the messages are our own words.
_DEFAULT_ERRORS: dict[int, tuple[str, str]] = {
    400: ("ModelArts.4409", "Too many running tasks in the dataset, try again later"),
    401: ("APIG.0301", "Incorrect IAM authentication information"),
    403: ("APIG.0302", "The IAM user may not call this API"),
    404: simstate.DATASET_MISSING,
    429: ("APIG.0308", "The throttling threshold has been reached"),
    500: ("ModelArts.4360", "The dataset synchronization service failed"),
    501: simstate.TYPE_UNSUPPORTED,
    502: ("APIG.0202", "Backend unavailable"),
    503: ("ModelArts.4360", "The dataset synchronization service is unavailable"),
    504: ("APIG.0201", "Backend timeout"),
}
_NO_API = ("APIG.0101", "The API does not exist or has not been published")


@dataclass(frozen=True, slots=True)
class Answer:
    """
    What the server decided to send back, before any latency.
    """

    status: int = 200
    body: bytes = b"{}"
    content_type: str = "application/json"
    error_code: str | None = None
    headers: Mapping[str, str] = field(default_factory=dict)
    action: Action = "answer"
    outcome: Outcome = "answered"


def _error(
    status: int, error: tuple[str, str], outcome: Outcome = "answered"
) -> Answer:
    code, message = error
    body = json.dumps({"error_code": code, "error_msg": message}).encode()
    return Answer(status=status, body=body, error_code=code, outcome=outcome)


def route(method: str, path: str) -> tuple[Kind, str | None, str | None]:
    """
    Return the API a request calls and the project and dataset ids in its path.
    """
    if path == _IAM_PATH:
        return ("token" if method == "POST" else "other"), None, None
    match = _DATASETS_PATH.match(path)
    if match is None:
        return "other", None, None
    project_id, dataset_id, tail = match.groups()

    return (
        _KINDS.get((method, dataset_id is not None, tail), "other"),
        project_id,
        dataset_id,
    )


def _fault_answer(fault: Fault) -> Answer:
    """
    Return the scripted answer of a fault that carries a status.
    """
    assert fault.status is not None
    headers = {} if fault.retry_after is None else {"Retry-After": fault.retry_after}
    if fault.body is not None:
        body, content_type = fault.body.encode(), fault.content_type or "text/html"
        return Answer(fault.status, body, content_type, fault.error_code, headers)
    if fault.status < 400 and fault.error_code is None:
        return Answer(fault.status, headers=headers)

    code, message = _DEFAULT_ERRORS.get(fault.status, (f"SIM.{fault.status}", "Error"))
    code, message = fault.error_code or code, fault.error_msg or message
    body = json.dumps({"error_code": code, "error_msg": message}).encode()
    content_type = fault.content_type or "application/json"
    return Answer(fault.status, body, content_type, code, headers)


class Gateway:
    """
    The simulated cloud behind the server: it decides the answer to every request.

    Its state (sync tasks, unconsumed faults, the rate window, the token
    generation) lives as long as the object.
    """

    def __init__(self, plan: Plan, server_time: Callable[[], float]) -> None:
        self.plan = plan
        self.credentials = simauth.Credentials(plan, server_time)
        self.admission = simstate.Admission(plan.rate_limit_per_s)
        self._datasets = simstate.DatasetService(plan)
        self._scripted = {key: deque(f) for key, f in plan.faults.items()}

    def decide(
        self, request: web.BaseRequest, exchange: Exchange, body: bytes
    ) -> Answer:
        """
        Apply routing, auth, rate limit and faults, then answer as the API would.
        """
        kind = exchange.kind
        if kind == "other":
            return _error(404, _NO_API)
        if kind == "token":
            return self._issue_token(body, exchange)
        refusal = self.credentials.refusal(request, body)
        if refusal is not None:
            return _error(401, ("APIG.0301", refusal))
        if kind in self.plan.rate_limited_kinds and not self.admission.admit(
            exchange.arrived_s
        ):
            return _error(429, _DEFAULT_ERRORS[429], outcome="throttled")

        fault = self._next_fault(exchange.dataset_id)
        if fault is not None:
            exchange.fault = fault
            if fault.latency_ms is not None:
                exchange.latency_s = fault.latency_ms / 1000
            if fault.action != "answer":
                return Answer(action=fault.action)
            if fault.status is not None:
                return _fault_answer(fault)

        return self._answer_api(request, exchange)

    def _next_fault(self, dataset_id: str | None) -> Fault | None:
        if dataset_id is None:
            return None
        always = self.plan.always.get(dataset_id)
        if always is not None:
            return always
        scripted = self._scripted.get(dataset_id)

        return scripted.popleft() if scripted else None

    def _answer_api(self, request: web.BaseRequest, exchange: Exchange) -> Answer:
        """
        Answer a dataset API call from the simulated service, as of its arrival.
        """
        project_id, dataset_id = exchange.project_id, exchange.dataset_id
        now, datasets = exchange.arrived_s, self._datasets
        assert project_id is not None
        if exchange.kind == "list":
            reply = datasets.list_datasets(project_id, request.query, now)
        else:
            assert dataset_id is not None
            if exchange.kind == "show":
                reply = datasets.show(project_id, dataset_id, now)
            elif exchange.kind == "status":
                reply = datasets.sync_status(project_id, dataset_id, now)
            else:
                reply = datasets.sync(project_id, dataset_id, now)
        body = json.dumps(reply.payload).encode()

        return Answer(status=reply.status, body=body, error_code=reply.error_code)

    def _issue_token(self, body: bytes, exchange: Exchange) -> Answer:
        """
        Answer an IAM token request, noting the project it was scoped to.
        """
        reply = self.credentials.issue_token(body)
        exchange.project_id = reply.project_id
        token = reply.subject_token
        headers = {} if token is None else {"X-Subject-Token": token}
        payload = json.dumps(reply.payload).encode()

        return Answer(status=reply.status, body=payload, headers=headers)
