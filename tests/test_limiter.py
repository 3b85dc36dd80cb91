"""
The rate limiter, driven by a fake clock so every figure is exact.
"""

from __future__ import annotations

import asyncio
import bisect

import pytest
from structlog.testing import capture_logs

from orchestrator.limiter import DEFAULT_MARGIN_S, RateLimiter, Ticket


class FakeClock:
    """
    A clock that jumps ahead when slept on, optionally waking up late.
    """

    def __init__(self, lateness_s: float = 0.0) -> None:
        self.t = 1000.0
        self.lateness_s = lateness_s

    def now(self) -> float:
        return self.t

    async def sleep(self, seconds: float) -> None:
        self.t += seconds + self.lateness_s
        await asyncio.sleep(0)


def max_in_window(times: list[float], window_s: float = 1.0) -> int:
    """
    Return the most starts inside any closed window of ``window_s`` seconds.
    """
    ordered = sorted(times)
    return max(
        bisect.bisect_right(ordered, t + window_s) - i for i, t in enumerate(ordered)
    )


def achieved_rate(times: list[float]) -> float:
    return (len(times) - 1) / (max(times) - min(times))


async def release_times(
    limiter: RateLimiter, count: int, workers: int = 16
) -> list[float]:
    """
    Acquire ``count`` tickets from ``workers`` concurrent tasks; return send times.
    """
    times: list[float] = []
    remaining = iter(range(count))

    async def worker() -> None:
        for _ in remaining:
            # As the runner asks: the quick path when free, else the queue.
            ticket = limiter.try_acquire() or await limiter.acquire()
            ticket.mark_sent()
            times.append(ticket.sent_at)

    await asyncio.gather(*(worker() for _ in range(workers)))
    return times


@pytest.mark.parametrize(
    "rate",
    [
        pytest.param(10.0, id="10-per-s"),
        pytest.param(40.0, id="40-per-s"),
        pytest.param(200.0, id="200-per-s"),
        pytest.param(3.5, id="fractional"),
    ],
)
async def test_never_exceeds_rate_in_any_second_and_keeps_99_percent(
    rate: float,
) -> None:
    """No 1 s window holds more than floor(rate) starts; the long-run rate stays."""
    clock = FakeClock()
    limiter = RateLimiter(rate, clock=clock)

    times = await release_times(limiter, count=int(rate * 30))

    assert max_in_window(times) <= int(rate)
    assert achieved_rate(times) >= 0.99 * int(rate)


async def test_late_wakeups_do_not_drift_below_the_rate() -> None:
    """A loop that always wakes 2 ms late (10 % of an interval) keeps the rate."""
    # When the window binds, lateness adds to the margin once per window, so
    # the figure is realistic: asyncio wakes well under 1 ms late when idle.
    clock = FakeClock(lateness_s=0.002)
    limiter = RateLimiter(50, clock=clock)

    times = await release_times(limiter, count=1500)

    assert achieved_rate(times) >= 0.99 * 50
    assert max_in_window(times) <= 50


async def test_try_acquire_never_jumps_the_queue() -> None:
    """A free slot goes to a caller already waiting, not to one trying its luck."""
    clock = FakeClock()
    limiter = RateLimiter(10, clock=clock)
    assert limiter.try_acquire() is not None
    assert limiter.try_acquire() is None  # the next slot is 0.1 s away

    waiting = asyncio.create_task(limiter.acquire())
    await asyncio.sleep(0)  # it is now queued, asleep until its slot
    clock.t += 1.0
    refused = limiter.try_acquire()
    ticket = await waiting

    assert refused is None
    assert ticket.released_at == clock.t
    assert limiter.try_acquire() is None  # the waiter took the slot


async def test_window_counts_from_the_real_send_time() -> None:
    """A request that left 30 ms after release holds its window slot 30 ms longer."""
    clock = FakeClock()
    limiter = RateLimiter(5, clock=clock)
    first = await limiter.acquire()
    clock.t += 0.03
    first.mark_sent()
    for _ in range(4):
        (await limiter.acquire()).mark_sent()

    sixth = await limiter.acquire()

    assert sixth.released_at >= first.sent_at + 1.0 + DEFAULT_MARGIN_S


async def test_pause_holds_every_request_and_resumes_without_a_burst() -> None:
    """After pause_until, nothing is released early and the pace restarts evenly."""
    clock = FakeClock()
    limiter = RateLimiter(20, clock=clock)
    await release_times(limiter, count=5)
    resume_at = clock.now() + 5.0

    limiter.pause_until(resume_at)
    times = await release_times(limiter, count=20)

    assert min(times) >= resume_at
    gaps = [b - a for a, b in zip(sorted(times), sorted(times)[1:], strict=False)]
    assert min(gaps) >= 1 / 20 - 1e-9


async def test_slow_rate_spaces_requests_by_whole_intervals() -> None:
    """At 0.5/s two requests start 2 s apart."""
    clock = FakeClock()
    limiter = RateLimiter(0.5, clock=clock)

    times = await release_times(limiter, count=3, workers=3)

    assert sorted(times)[1] - sorted(times)[0] == pytest.approx(2.0)
    assert sorted(times)[2] - sorted(times)[1] == pytest.approx(2.0)


async def test_releases_in_arrival_order() -> None:
    """Waiters are served first come, first served."""
    clock = FakeClock()
    limiter = RateLimiter(2, clock=clock)
    order: list[int] = []

    async def take(n: int) -> None:
        await limiter.acquire()
        order.append(n)

    tasks = [asyncio.create_task(take(n)) for n in range(6)]
    await asyncio.gather(*tasks)

    assert order == list(range(6))


@pytest.mark.parametrize(
    ("count", "window_s"),
    [
        pytest.param(300, 60.0, id="300-per-min"),
        pytest.param(20, 10.0, id="20-per-10s"),
        pytest.param(7, 60.0, id="7-per-min"),
    ],
)
async def test_n_per_t_holds_in_every_window_and_is_smooth(
    count: int, window_s: float
) -> None:
    """No window of T holds more than N starts, and the first second is not a burst."""
    clock = FakeClock(lateness_s=0.001)
    limiter = RateLimiter(count / window_s, window_s=window_s, clock=clock)

    times = await release_times(limiter, count=count * 3)

    assert max_in_window(times, window_s) <= count
    assert max_in_window(times, window_s / count * 0.999) == 1
    assert achieved_rate(times) >= 0.99 * count / window_s


async def test_burst_lets_that_many_go_back_to_back_after_idle() -> None:
    """With burst 5, five start at once after idling; the sixth waits an interval."""
    clock = FakeClock()
    limiter = RateLimiter(300 / 60, window_s=60.0, burst=5, clock=clock)
    await release_times(limiter, count=1)
    clock.t += 120.0

    times = sorted(await release_times(limiter, count=7, workers=7))

    assert times[4] == pytest.approx(times[0])
    assert times[5] - times[0] == pytest.approx(0.2, rel=1e-3)
    assert max_in_window([1000.0, *times], 60.0) <= 300


async def test_throttle_cuts_the_rate_once_per_round_then_regrows_to_ceiling() -> None:
    """A 429 cuts the rate to 70 %; 429s of earlier releases change nothing more."""
    clock = FakeClock()
    limiter = RateLimiter(100, clock=clock)
    tickets = [await limiter.acquire() for _ in range(10)]

    with capture_logs() as logged:
        limiter.on_throttled(tickets[5].released_at)
        limiter.on_throttled(tickets[9].released_at)
        cut = limiter.rate_per_s
        times = await release_times(limiter, count=2000, workers=4)

    assert cut == pytest.approx(70.0)
    assert limiter.rate_per_s == 100.0
    events = [e for e in logged if e["event"].startswith("limiter.")]
    assert [e["event"] for e in events].count("limiter.rate_decreased") == 1
    assert events[-1]["rate_per_s"] == 100.0
    assert all(e["rate_per_s"] <= 100.0 for e in events)
    assert set(events[0]) >= {"rate_per_s", "previous_rate_per_s", "ceiling_per_s"}
    assert max_in_window(times) <= 100


async def release_tickets(limiter: RateLimiter, count: int) -> list[Ticket]:
    tickets = []
    for _ in range(count):
        ticket = await limiter.acquire()
        ticket.mark_sent()
        tickets.append(ticket)
    return tickets


async def test_scattered_429s_do_not_cut_until_they_are_2_percent() -> None:
    """At 200/s one 429 in a window's 200 releases is noise: the rate holds."""
    clock = FakeClock()
    limiter = RateLimiter(200, clock=clock)
    tickets = await release_tickets(limiter, 200)

    limiter.on_throttled(tickets[100].released_at)
    limiter.on_throttled(tickets[150].released_at)
    held = limiter.rate_per_s
    limiter.on_throttled(tickets[180].released_at)
    limiter.on_throttled(tickets[190].released_at)

    assert held == 200.0
    assert limiter.rate_per_s == pytest.approx(140.0)


async def test_throttle_during_regrowth_cuts_again_from_the_current_rate() -> None:
    """A 429 for a request released a window after the last cut cuts again."""
    clock = FakeClock()
    limiter = RateLimiter(100, clock=clock)
    first = await limiter.acquire()
    limiter.on_throttled(first.released_at)
    within_round = await limiter.acquire()
    limiter.on_throttled(within_round.released_at)
    clock.t += 1.0
    later = await limiter.acquire()

    limiter.on_throttled(later.released_at)

    assert limiter.rate_per_s == pytest.approx(49.0, rel=0.02)
