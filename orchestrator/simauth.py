"""
The simulated IAM and APIG credential check: issue, revoke and verify credentials.

IAM answers ``POST /v3/auth/tokens`` with the plan's token; APIG lets a request in
when it carries the current token or a valid AK/SK signature, else the simulator
answers 401 APIG.0301 with the reason given here.

AK/SK signatures are checked with the project's own signer, recomputed from what
arrived, for the keys in ``Plan.access_keys``; so the simulator proves that the
client signs what it sends, not that the signer matches Huawei's (the SDK
comparison in tests/test_signer.py does that). With ``Plan(token=None)`` and no
keys, requests are served unchecked.
"""

from __future__ import annotations

import hmac
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from aiohttp import web

from orchestrator import signer
from orchestrator.faultplan import Plan

# APIG refuses an X-Sdk-Date further than this from its own clock.
_MAX_SKEW_S = 15 * 60.0
# IAM tokens live 24 h; IAM writes times as UTC with microseconds and a Z.
_TOKEN_LIFETIME = timedelta(hours=24)
_IAM_TIME = "%Y-%m-%dT%H:%M:%S.%fZ"


@dataclass(frozen=True, slots=True)
class TokenReply:
    """
    IAM's answer to a token request, and the project it was scoped to.

    ``project_id`` is None when the body could not be read that far.
    """

    status: int
    payload: Mapping[str, Any]
    subject_token: str | None = None
    project_id: str | None = None


class Credentials:
    """
    The credentials the simulated cloud accepts; tokens can be revoked while it runs.
    """

    def __init__(self, plan: Plan, server_time: Callable[[], float]) -> None:
        self.plan = plan
        self._server_time = server_time
        self._generation = 0

    def revoke(self) -> None:
        """
        Stop accepting every token issued so far; IAM hands out a new one.
        """
        self._generation += 1

    @property
    def current_token(self) -> str | None:
        """
        Return the token the API accepts (and IAM issues) now.
        """
        token = self.plan.token
        if token is None or self._generation == 0:
            return token

        return f"{token}.{self._generation}"

    def refusal(self, request: web.BaseRequest, body: bytes) -> str | None:
        """
        Return why the request's credential is refused, or None to let it in.

        A signed request is checked against ``plan.access_keys`` with the
        project's own signer, recomputed from what arrived; otherwise the token
        must be the current one. With neither configured anything goes.
        """
        authorization = request.headers.get("Authorization", "")
        if authorization.startswith(signer.ALGORITHM) and self.plan.access_keys:
            return self._refuse_signature(request, body, authorization)
        token = self.current_token
        if token is not None and request.headers.get("X-Auth-Token") != token:
            return "Incorrect IAM authentication information: token refused"

        return None

    def issue_token(self, body: bytes) -> TokenReply:
        """
        Answer an IAM password-token request; the token is the plan's.
        """
        project_id = None
        try:
            auth = json.loads(body)["auth"]
            methods = auth["identity"]["methods"]
            user = auth["identity"]["password"]["user"] if "password" in methods else {}
            password = user.get("password")
            project = auth.get("scope", {}).get("project", {})
            project_id = project.get("id")
        except (ValueError, KeyError, TypeError, AttributeError):
            return _iam_error(400, "Bad Request", "The request body is malformed.")
        expected = self.plan.iam_password
        if expected is not None and password != expected:
            return _iam_error(
                401, "Unauthorized", "The username or password is wrong.", project_id
            )

        issued = datetime.now(UTC)
        token = {
            "methods": methods,
            "issued_at": issued.strftime(_IAM_TIME),
            "expires_at": (issued + _TOKEN_LIFETIME).strftime(_IAM_TIME),
            "project": {k: project[k] for k in ("id", "name") if k in project},
        }
        subject = self.current_token or "sim-token"
        return TokenReply(201, {"token": token}, subject, project_id)

    def _refuse_signature(
        self, request: web.BaseRequest, body: bytes, authorization: str
    ) -> str | None:
        fields = dict(
            part.strip().split("=", 1)
            for part in authorization.removeprefix(signer.ALGORITHM).split(",")
            if "=" in part
        )
        secret = self.plan.access_keys.get(fields.get("Access", ""))
        if secret is None:
            return "Incorrect IAM authentication information: unknown access key"
        try:
            signed_at = datetime.strptime(
                request.headers.get(signer.HEADER_DATE, ""), signer.SDK_DATE_FORMAT
            ).replace(tzinfo=UTC)
        except ValueError:
            return "Incorrect IAM authentication information: bad X-Sdk-Date"
        if abs(self._server_time() - signed_at.timestamp()) > _MAX_SKEW_S:
            return "Incorrect IAM authentication information: X-Sdk-Date expired"

        names = fields.get("SignedHeaders", "").split(";")
        headers = {name: request.headers.get(name, "") for name in names if name}
        url = f"http://{request.host}{request.raw_path}"
        try:
            expected = signer.sign(
                method=request.method,
                url=url,
                headers=headers,
                body=body,
                ak=fields["Access"],
                sk=secret,
            )
        except ValueError:
            return "Incorrect IAM authentication information: malformed request"
        if not hmac.compare_digest(expected, authorization):
            return "Incorrect IAM authentication information: signature mismatch"

        return None


def _iam_error(
    status: int, title: str, message: str, project_id: str | None = None
) -> TokenReply:
    body = {"error": {"code": status, "title": title, "message": message}}
    return TokenReply(status, body, project_id=project_id)
