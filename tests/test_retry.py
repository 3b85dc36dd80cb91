"""
The retry loop the run uses, with fake attempts and a recorded sleep.
"""

from __future__ import annotations

import pytest

from orchestrator import retry
from orchestrator.config import RetrySettings
from orchestrator.errors import NotFoundError, OrchestratorError, ServerError


class Script:
    """
    An attempt that raises the scripted errors in turn, then returns "ok".
    """

    def __init__(self, *errors: Exception) -> None:
        self.errors = list(errors)
        self.calls = 0

    async def __call__(self) -> str:
        self.calls += 1
        if self.errors:
            raise self.errors.pop(0)
        return "ok"


async def _no_sleep(seconds: float) -> None:
    del seconds


@pytest.mark.parametrize(
    ("errors", "calls", "result"),
    [
        pytest.param([ServerError("503")], 2, "ok", id="transient-then-ok"),
        pytest.param([ServerError("503")] * 3, 3, ServerError, id="attempts-run-out"),
        pytest.param([NotFoundError("404")], 1, NotFoundError, id="permanent"),
    ],
)
async def test_call_retries_transient_errors_up_to_max_attempts(
    errors: list[Exception], calls: int, result: object
) -> None:
    """Transient errors are retried until max_attempts; permanent ones are not."""
    attempt = Script(*errors)
    heard: list[int] = []

    def on_retry(error: OrchestratorError, number: int, wait_s: float) -> None:
        heard.append(number)

    settings = RetrySettings(3, 0.0, 0.0)
    if result == "ok":
        assert await retry.call(attempt, settings, sleep=_no_sleep, on_retry=on_retry)
    else:
        with pytest.raises(result):  # type: ignore[call-overload]
            await retry.call(attempt, settings, sleep=_no_sleep, on_retry=on_retry)

    assert attempt.calls == calls
    assert heard == list(range(1, calls))


async def test_call_asks_allow_retry_only_when_a_retry_is_due() -> None:
    """A refused retry re-raises at once; the last attempt asks nothing."""
    asked: list[BaseException | None] = []

    def allow(error: BaseException | None) -> bool:
        asked.append(error)
        return len(asked) < 2

    attempt = Script(*[ServerError("503")] * 5)
    with pytest.raises(ServerError):
        await retry.call(
            attempt,
            RetrySettings(5, 0.0, 0.0),
            sleep=_no_sleep,
            on_retry=lambda *_: None,
            allow_retry=allow,
        )

    assert attempt.calls == 2
    assert len(asked) == 2
