"""
Find the run's credential and add it to each request.

Three kinds, as Huawei Cloud users hold them:

- an IAM token ready in an environment variable (``X-Auth-Token``);
- an access key pair, signing every request with SDK-HMAC-SHA256;
- an IAM user and password, exchanged for one project-scoped token per project.

With no ``auth`` in the config the first credential found wins, in this order:
``MODELARTS_AUTH_TOKEN``; ``HUAWEICLOUD_SDK_AK`` + ``HUAWEICLOUD_SDK_SK`` (+
``HUAWEICLOUD_SDK_SECURITY_TOKEN``); the SDK's INI credentials file
(``HUAWEICLOUD_SDK_CREDENTIALS_FILE`` or ``~/.huaweicloud/credentials``,
section ``[basic]``), the order the Huawei Cloud SDK itself uses.

Secrets stay inside this module: they are held in :class:`Secret` (whose repr
hides the value) and leave only inside request headers or the IAM request
body. Each secret is also handed to the log redactor, so a value that slips
into a log line by any other path is masked.
"""

from __future__ import annotations

import asyncio
import configparser
import json
import ssl
import stat
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import NoReturn, Protocol
from urllib.parse import urlsplit

import aiohttp
import structlog
from yarl import URL

from orchestrator import logs, signer
from orchestrator.config import DEFAULT_TOKEN_ENV, AuthSettings
from orchestrator.errors import (
    ConfigError,
    CredentialUnavailableError,
    ServerError,
    ThrottledError,
    TransportError,
)

log = structlog.get_logger(__name__)

CREDENTIALS_FILE_ENV = "HUAWEICLOUD_SDK_CREDENTIALS_FILE"
DEFAULT_CREDENTIALS_FILE = Path(".huaweicloud") / "credentials"
# IAM tokens live 24 h; refetching 5 minutes early keeps a long run from ever
# sending one that expires in flight.
TOKEN_EARLY_REFRESH_S = 300.0
TOKEN_DEFAULT_LIFETIME_S = 24 * 3600.0
# A token younger than this that is refused is not stale: refetching would
# only repeat the refusal.
TOKEN_MIN_AGE_FOR_REFRESH_S = 60.0
IAM_TIMEOUT_S = 30.0


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
        Return the value, for a request and nothing else.
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

    def fixed_headers(self) -> Mapping[str, str] | None:
        """
        Return the headers that authenticate every request alike, or None.

        A client sends fixed headers with every request of its session and
        does not ask :meth:`headers` per request.
        """

    async def headers(self, request: RequestInfo) -> Mapping[str, str]:
        """
        Return the headers that authenticate ``request``.

        Raises:
            CredentialUnavailableError: no credential for this project.
        """

    async def refresh(self, project_id: str, sent: Mapping[str, str]) -> bool:
        """
        Drop a refused credential; return True if one retry may now succeed.
        """

    async def aclose(self) -> None:
        """
        Release what the credential holds open.
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

    def fixed_headers(self) -> Mapping[str, str]:
        """
        Return the token header: the same for every request.
        """
        return {"X-Auth-Token": self._token.reveal()}

    async def headers(self, request: RequestInfo) -> Mapping[str, str]:
        """
        Return the token header; the same for every request.
        """
        return self.fixed_headers()

    async def refresh(self, project_id: str, sent: Mapping[str, str]) -> bool:
        """
        Return False: a token handed in from outside cannot be renewed here.
        """
        return False

    async def aclose(self) -> None:
        """
        Hold nothing open.
        """


class AkSkAuth:
    """
    Sign every request with an access key pair (SDK-HMAC-SHA256).

    ``X-Project-Id`` is the target's project, so one key pair serves every
    project it has rights in.
    """

    def __init__(
        self,
        ak: str,
        sk: Secret,
        *,
        security_token: Secret | None,
        source: str,
        now: Callable[[], datetime] | None = None,
    ) -> None:
        self._ak = ak
        self._sk = sk
        self._security_token = security_token
        self._source = source
        self._now = now or (lambda: datetime.now(UTC))

    @property
    def source(self) -> str:
        """
        Return where the key pair came from.
        """
        kind = "temporary access key" if self._security_token else "access key"
        return f"{kind} {_masked(self._ak)} from {self._source}"

    def fixed_headers(self) -> None:
        """
        Return None: every request gets its own headers.
        """

    async def headers(self, request: RequestInfo) -> Mapping[str, str]:
        """
        Return the signing headers and the Authorization that signs them all.
        """
        token = self._security_token.reveal() if self._security_token else None
        added = signer.signing_headers(
            url=str(request.url),
            now=self._now(),
            project_id=request.project_id,
            security_token=token,
        )
        authorization = signer.sign(
            method=request.method,
            url=str(request.url),
            headers={**request.headers, **added},
            body=request.body,
            ak=self._ak,
            sk=self._sk.reveal(),
        )

        return {**added, "Authorization": authorization}

    async def refresh(self, project_id: str, sent: Mapping[str, str]) -> bool:
        """
        Return False: a refused signature repeats; retrying risks locking the AK.
        """
        return False

    async def aclose(self) -> None:
        """
        Hold nothing open.
        """


@dataclass(slots=True)
class _CachedToken:
    token: Secret
    fetched_at: float
    refresh_at: float


class PasswordAuth:
    """
    Exchange an IAM user's password for project-scoped tokens, one per project.

    Tokens are cached until shortly before they expire; concurrent targets of
    one project share a single fetch. The first time IAM refuses the password
    no further token is asked for (repeated wrong passwords lock the IAM user):
    projects that already hold a token go on, the others end ``auth_failed``.
    """

    def __init__(
        self,
        *,
        user: str,
        domain: str,
        password: Secret,
        iam_endpoint: str,
        ssl_context: ssl.SSLContext | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._user = user
        self._domain = domain
        self._password = password
        self._iam_endpoint = iam_endpoint.rstrip("/")
        self._ssl: ssl.SSLContext | bool = ssl_context or True
        self._clock = clock
        self._tokens: dict[str, _CachedToken] = {}
        self._fetches: dict[str, asyncio.Task[_CachedToken]] = {}
        self._refused: str | None = None
        self._session: aiohttp.ClientSession | None = None

    @property
    def source(self) -> str:
        """
        Return which IAM user and endpoint the tokens come from.
        """
        return f"IAM password of {self._domain}/{self._user} via {self._iam_endpoint}"

    def fixed_headers(self) -> None:
        """
        Return None: every request gets its own headers.
        """

    async def headers(self, request: RequestInfo) -> Mapping[str, str]:
        """
        Return the project's token, fetching it first if there is none yet.

        Raises:
            CredentialUnavailableError: IAM refused the password.
        """
        cached = self._tokens.get(request.project_id)
        if cached is None or self._clock() >= cached.refresh_at:
            cached = await self._shared_fetch(request.project_id)

        return {"X-Auth-Token": cached.token.reveal()}

    async def refresh(self, project_id: str, sent: Mapping[str, str]) -> bool:
        """
        Drop the project's token if it is the one refused and old enough to be stale.
        """
        if self._refused is not None:
            return False
        cached = self._tokens.get(project_id)
        if cached is None or sent.get("X-Auth-Token") != cached.token.reveal():
            return True  # another request already dropped or replaced it
        if self._clock() - cached.fetched_at < TOKEN_MIN_AGE_FOR_REFRESH_S:
            return False

        del self._tokens[project_id]
        log.info("auth.token_dropped", project_id=project_id)
        return True

    async def aclose(self) -> None:
        """
        Close the connection to IAM.
        """
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def _shared_fetch(self, project_id: str) -> _CachedToken:
        """
        Fetch the project's token once, however many targets wait for it.
        """
        if self._refused is not None:
            raise CredentialUnavailableError(self._refused)

        task = self._fetches.get(project_id)
        if task is None:
            task = asyncio.ensure_future(self._fetch(project_id))
            self._fetches[project_id] = task
            task.add_done_callback(self._fetch_done(project_id))
        # Shielded: one waiter being cancelled must not cancel the others' fetch.
        return await asyncio.shield(task)

    def _fetch_done(
        self, project_id: str
    ) -> Callable[[asyncio.Task[_CachedToken]], None]:
        def forget(task: asyncio.Task[_CachedToken]) -> None:
            self._fetches.pop(project_id, None)
            if not task.cancelled():
                task.exception()  # retrieved here even if every waiter left

        return forget

    async def _fetch(self, project_id: str) -> _CachedToken:
        """
        Ask IAM for a token scoped to ``project_id`` and cache it.
        """
        status, headers, body = await self._post_tokens(project_id)
        if status == 201 and headers.get("X-Subject-Token"):
            cached = self._cache(project_id, headers["X-Subject-Token"], body)
            log.info("auth.token_issued", project_id=project_id)
            return cached
        message = f"IAM refused the token request (HTTP {status}): {_iam_text(body)}"
        if status == 429:
            raise ThrottledError(message, http_status=status)
        if status >= 500:
            raise ServerError(message, http_status=status)

        self._refused = message
        log.error("auth.token_refused", project_id=project_id, http_status=status)
        raise CredentialUnavailableError(message, http_status=status)

    async def _post_tokens(
        self, project_id: str
    ) -> tuple[int, Mapping[str, str], bytes]:
        """
        Send the password request to IAM.

        Raises:
            TransportError: IAM did not answer.
        """
        if self._session is None:
            self._session = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=IAM_TIMEOUT_S),
                connector=aiohttp.TCPConnector(ssl=self._ssl),
            )
        url = f"{self._iam_endpoint}/v3/auth/tokens"
        try:
            async with self._session.post(
                url, data=self._request_body(project_id), headers=_JSON
            ) as response:
                body = await response.content.read(64 * 1024)
                return response.status, response.headers, body
        except TimeoutError as exc:
            raise TransportError(f"POST {url}: IAM did not answer in time") from exc
        except aiohttp.ClientError as exc:
            raise TransportError(f"POST {url}: {type(exc).__name__}: {exc}") from exc

    def _request_body(self, project_id: str) -> bytes:
        identity = {
            "methods": ["password"],
            "password": {
                "user": {
                    "name": self._user,
                    "password": self._password.reveal(),
                    "domain": {"name": self._domain},
                }
            },
        }
        document = {
            "auth": {"identity": identity, "scope": {"project": {"id": project_id}}}
        }
        return json.dumps(document).encode()

    def _cache(self, project_id: str, token: str, body: bytes) -> _CachedToken:
        now = self._clock()
        lifetime_s = _lifetime_s(body)
        cached = _CachedToken(
            token=Secret(token),
            fetched_at=now,
            refresh_at=now + max(lifetime_s - TOKEN_EARLY_REFRESH_S, 0.0),
        )
        self._tokens[project_id] = cached
        return cached


_JSON = {"Content-Type": "application/json;charset=utf8"}


def _lifetime_s(body: bytes) -> float:
    """
    Return how long an IAM token lives, from ``token.expires_at`` if readable.
    """
    try:
        expires_at = json.loads(body)["token"]["expires_at"]
        expires = datetime.fromisoformat(expires_at.replace("Z", "+00:00"))
    except (ValueError, KeyError, TypeError, AttributeError):
        return TOKEN_DEFAULT_LIFETIME_S
    if expires.tzinfo is None:
        expires = expires.replace(tzinfo=UTC)

    return (expires - datetime.now(UTC)).total_seconds()


def _iam_text(body: bytes) -> str:
    """
    Return IAM's error message, which nests as ``{"error": {"message": ...}}``.
    """
    try:
        document = json.loads(body)
        message = document["error"]["message"]
    except (ValueError, KeyError, TypeError):
        message = body[:200].decode("utf-8", errors="replace")

    return logs.scrub(str(message)[:200]) or "(no message)"


def _masked(ak: str) -> str:
    """
    Return an access key id with all but its ends hidden.
    """
    if len(ak) <= 8:
        return "*" * len(ak)

    return f"{ak[:4]}...{ak[-4:]}"


def resolve(
    settings: AuthSettings | None,
    environ: Mapping[str, str],
    *,
    endpoint: str,
    ssl_context: ssl.SSLContext | None = None,
    home: Path | None = None,
) -> Auth:
    """
    Return the credential the config names, or the first one the chain finds.

    Raises:
        ConfigError: no usable credential; the message names every place looked at.
    """
    if settings is None:
        return _from_chain(environ, home)
    if settings.type == "token":
        return _token(environ, settings.token_env) or _missing([settings.token_env])
    if settings.type == "aksk":
        return _access_key(environ, settings, home)

    return _password(settings, environ, endpoint, ssl_context)


def _from_chain(environ: Mapping[str, str], home: Path | None) -> Auth:
    token = _token(environ, DEFAULT_TOKEN_ENV)
    if token is not None:
        return token
    pair, looked = _find_pair(environ, AuthSettings(type="aksk"), home)

    return pair or _missing([DEFAULT_TOKEN_ENV, *looked])


def _access_key(
    environ: Mapping[str, str], settings: AuthSettings, home: Path | None
) -> Auth:
    pair, looked = _find_pair(environ, settings, home)

    return pair or _missing(looked)


def _find_pair(
    environ: Mapping[str, str], settings: AuthSettings, home: Path | None
) -> tuple[AkSkAuth | None, list[str]]:
    """
    Return the key pair from the environment, else the credentials file.

    Also returns the places looked at, for the error when neither has one.
    """
    pair = _pair_from_env(
        environ, settings.ak_env, settings.sk_env, settings.security_token_env
    )
    path = _credentials_path(environ, home)
    if pair is None:
        pair = _pair_from_file(path)

    return pair, [f"{settings.ak_env} + {settings.sk_env}", str(path)]


def _token(environ: Mapping[str, str], name: str) -> TokenAuth | None:
    token = environ.get(name, "").strip()
    if not token:
        return None

    return TokenAuth(Secret(token), source=f"token from ${name}")


def _pair_from_env(
    environ: Mapping[str, str], ak_env: str, sk_env: str, token_env: str
) -> AkSkAuth | None:
    ak = environ.get(ak_env, "").strip()
    sk = environ.get(sk_env, "").strip()
    if not ak and not sk:
        return None
    if not ak or not sk:
        present, absent = (ak_env, sk_env) if ak else (sk_env, ak_env)
        raise ConfigError(
            f"${present} is set but ${absent} is not; set both or neither"
        )
    security_token = environ.get(token_env, "").strip()

    return AkSkAuth(
        _checked_ak(ak, f"${ak_env}"),
        Secret(sk),
        security_token=Secret(security_token) if security_token else None,
        source=f"${ak_env}",
    )


def _credentials_path(environ: Mapping[str, str], home: Path | None) -> Path:
    named = environ.get(CREDENTIALS_FILE_ENV, "").strip()
    if named:
        return Path(named).expanduser()

    return (home or Path.home()) / DEFAULT_CREDENTIALS_FILE


def _pair_from_file(path: Path) -> AkSkAuth | None:
    """
    Return the key pair in an SDK credentials file's ``[basic]`` section.

    Raises:
        ConfigError: the file exists but cannot be read or lacks a key.
    """
    parser = configparser.ConfigParser(interpolation=None)
    try:
        found = parser.read(path, encoding="utf-8")
    except (OSError, configparser.Error, UnicodeDecodeError) as exc:
        raise ConfigError(
            f"{path}: cannot read credentials: {type(exc).__name__}"
        ) from exc
    if not found:
        return None
    if not parser.has_section("basic"):
        raise ConfigError(f"{path}: no [basic] section with ak and sk")
    section = parser["basic"]
    ak = section.get("ak", "").strip()
    sk = section.get("sk", "").strip()
    if not ak or not sk:
        raise ConfigError(f"{path}: [basic] needs both ak and sk")
    _warn_if_exposed(path)
    security_token = section.get("security_token", "").strip()

    return AkSkAuth(
        _checked_ak(ak, str(path)),
        Secret(sk),
        security_token=Secret(security_token) if security_token else None,
        source=str(path),
    )


def _warn_if_exposed(path: Path) -> None:
    try:
        mode = path.stat().st_mode
    except OSError:
        return
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        log.warning(
            "auth.credentials_file_exposed",
            path=str(path),
            mode=oct(stat.S_IMODE(mode)),
            fix=f"chmod 600 {path}",
        )


def _checked_ak(ak: str, where: str) -> str:
    if not ak.isascii() or not ak.isalnum():
        raise ConfigError(f"{where}: the access key id must be letters and digits")

    return ak


def _password(
    settings: AuthSettings,
    environ: Mapping[str, str],
    endpoint: str,
    ssl_context: ssl.SSLContext | None,
) -> PasswordAuth:
    password = environ.get(settings.password_env, "")
    if not password:
        _missing([settings.password_env])

    return PasswordAuth(
        user=settings.user,
        domain=settings.domain,
        password=Secret(password),
        iam_endpoint=settings.iam_endpoint or iam_endpoint_for(endpoint),
        ssl_context=ssl_context,
    )


def iam_endpoint_for(endpoint: str) -> str:
    """
    Return the IAM endpoint of the ModelArts endpoint's region.

    ``modelarts.cn-north-4.myhuaweicloud.com`` -> ``iam.cn-north-4...``; a
    loopback endpoint (the simulator) serves IAM itself.

    Raises:
        ConfigError: the region cannot be told from the endpoint.
    """
    parts = urlsplit(endpoint)
    host = parts.hostname or ""
    if host.startswith("modelarts."):
        return f"{parts.scheme}://iam.{host.removeprefix('modelarts.')}"
    if host in {"localhost", "::1"} or host.startswith("127."):
        return endpoint

    raise ConfigError(
        f"auth.iam_endpoint: cannot tell the IAM endpoint from {endpoint!r}; "
        "set auth.iam_endpoint, e.g. https://iam.cn-north-4.myhuaweicloud.com"
    )


def _missing(places: list[str]) -> NoReturn:
    raise ConfigError(
        "no credential found; looked in: "
        + ", ".join(p if "/" in p else f"${p}" for p in places)
        + "; see 'Authentication' in the README"
    )
