"""
The exceptions modelarts-sync raises, one class per way a caller reacts.

::

    OrchestratorError                 base; ``transient`` says if a retry may help
    ├── ConfigError                   bad config file or arguments (exit 2)
    ├── ReportError                   the report could not be written
    ├── LockHeldError                 another run holds the lock (exit 4)
    ├── StoppedError                  the run is stopping; a call was not sent
    └── ApiError                      one API call failed; carries what the server said
        ├── AuthError                 401: the credential was refused (stops the run)
        │   ├── StaleTokenError       401 on a cached IAM token, now dropped: retry once
        │   └── CredentialUnavailableError  no token for this project (IAM refused);
        │                             nothing was sent to ModelArts
        ├── TlsError                  server certificate not trusted (stops the run)
        ├── ForbiddenError            403: this credential may not touch this project
        ├── NotFoundError             the dataset does not exist
        ├── RejectedError             any other permanent 4xx/5xx answer
        ├── ThrottledError            429: slow down (transient; may carry Retry-After)
        ├── BusyError                 ModelArts.4409: too many tasks in the dataset
        ├── ServerError               500/502/503/504 (transient)
        └── TransportError            no usable answer: refused, reset, timed out
                                      (transient)

aiohttp, YAML and OS errors are translated where those libraries are called and
chained with ``from``; nothing else in the package raises their types.
"""

from __future__ import annotations


class OrchestratorError(Exception):
    """
    Base of every error modelarts-sync raises on purpose.
    """

    transient = False


class ConfigError(OrchestratorError):
    """
    The config file or the command line is not usable; nothing was sent.
    """


class ReportError(OrchestratorError):
    """
    The report (or its folder) could not be written.
    """


class LockHeldError(OrchestratorError):
    """
    Another run holds the lock for this config.
    """


class StoppedError(OrchestratorError):
    """
    The run is stopping (deadline, signal, refused credential); nothing was sent.

    ``reason`` is the stop's reason, which the target's result carries.
    """

    def __init__(self, reason: str) -> None:
        super().__init__(f"the run is stopping ({reason}); the call was not sent")
        self.reason = reason


class ApiError(OrchestratorError):
    """
    One API call failed; holds what the server said, if it said anything.

    ``reason`` is the one-word cause the report shows for a target that ends
    on this error; ``retry_after_s`` is the server's Retry-After, if it sent one;
    ``stops_run`` says that every other request would fail the same way.
    """

    reason = "rejected"
    stops_run = False

    def __init__(
        self,
        message: str,
        *,
        http_status: int | None = None,
        error_code: str | None = None,
        error_msg: str | None = None,
        request_id: str | None = None,
        retry_after_s: float | None = None,
    ) -> None:
        super().__init__(message)
        self.http_status = http_status
        self.error_code = error_code
        self.error_msg = error_msg
        self.request_id = request_id
        self.retry_after_s = retry_after_s


class AuthError(ApiError):
    """
    The server refused the credential (401); sending more risks locking the AK.
    """

    reason = "auth_failed"
    stops_run = True


class StaleTokenError(AuthError):
    """
    A cached IAM token was refused and dropped; one retry fetches a fresh one.
    """

    transient = True
    stops_run = False


class CredentialUnavailableError(AuthError):
    """
    No credential could be had for this project; the request was never sent.
    """

    stops_run = False


class TlsError(ApiError):
    """
    The TLS handshake failed: unknown CA, wrong host name, expired certificate.
    """

    reason = "tls_error"
    stops_run = True


class ForbiddenError(ApiError):
    """
    The credential is valid but may not act on this project or dataset (403).
    """

    reason = "forbidden"


class NotFoundError(ApiError):
    """
    The project or dataset does not exist.
    """

    reason = "not_found"


class RejectedError(ApiError):
    """
    A permanent refusal that no retry can fix.
    """

    reason = "rejected"


class ThrottledError(ApiError):
    """
    The server's throttle refused the call (429); ``retry_after_s`` if it said.
    """

    transient = True
    reason = "throttled"


class BusyError(ApiError):
    """
    The dataset has too many running tasks (``ModelArts.4409``); try later.
    """

    transient = True
    reason = "busy"


class ServerError(ApiError):
    """
    The server failed (500, 502, 503, 504); the same call may succeed later.
    """

    transient = True
    reason = "server_error"


class TransportError(ApiError):
    """
    No usable answer arrived: connection refused or reset, or a timeout.

    ``ambiguous`` is true when the request may have reached the server before
    the failure (a reset or timeout after sending), false when it surely did not.
    """

    transient = True
    reason = "transport_error"

    def __init__(self, message: str, *, ambiguous: bool = False) -> None:
        super().__init__(message)
        self.ambiguous = ambiguous
