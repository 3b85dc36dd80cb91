"""
Find the run's credential and add it to each request.

Secrets stay inside this module: they are held in :class:`Secret` (whose repr
hides the value) and leave only inside the headers of a request. Each secret
is also handed to the log redactor so that a value that slips into a log line
by any other path is masked.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Protocol

from yarl import URL

from orchestrator import logs
from orchestrator.config import DEFAULT_TOKEN_ENV, AuthSettings
from orchestrator.errors import ConfigError


class Secret:
    """
    A credential value that never shows itself in a repr, str or log.
    """

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value
        logs.redact_value(value)

    def reveal(self) -> str:
        """
        Return the value, for a request header and nothing else.
        """
        return self._value

    def __repr__(self) -> str:
        return "Secret('<redacted>')"

    __str__ = __repr__


@dataclass(frozen=True, slots=True)
class RequestInfo:
    """
    What an Auth may read of a request about to be sent.
    """

    method: str
    url: URL
    project_id: str
    body: bytes
    headers: Mapping[str, str]


class Auth(Protocol):
    """
    Adds credentials to requests; ``source`` says where they came from.
    """

    @property
    def source(self) -> str:
        """
        Return a human description of the credential, without the secret.
        """

    async def headers(self, request: RequestInfo) -> Mapping[str, str]:
        """
        Return the headers that authenticate ``request``.
        """


class TokenAuth:
    """
    Send a ready IAM token as ``X-Auth-Token``.
    """

    def __init__(self, token: Secret, *, source: str) -> None:
        self._token = token
        self._source = source

    @property
    def source(self) -> str:
        """
        Return where the token came from.
        """
        return self._source

    async def headers(self, request: RequestInfo) -> Mapping[str, str]:
        """
        Return the token header; the same for every request.
        """
        return {"X-Auth-Token": self._token.reveal()}


def resolve(settings: AuthSettings | None, environ: Mapping[str, str]) -> Auth:
    """
    Return the credential the config asks for, or the first one found.

    Raises:
        ConfigError: no usable credential; the message names every place looked at.
    """
    token_env = settings.token_env if settings is not None else DEFAULT_TOKEN_ENV
    token = environ.get(token_env, "").strip()
    if token:
        return TokenAuth(Secret(token), source=f"token from ${token_env}")

    raise ConfigError(
        f"no credential: environment variable {token_env} is not set or empty; "
        f"export an IAM token in it"
    )
