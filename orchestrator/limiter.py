"""
Pace requests under a hard ceiling of N starts per T seconds.

Three rules, all enforced for every request:

- a smooth schedule (GCRA): request k may start at ``t0 + k * T / N``, so
  ``300/min`` means one start every 0.2 s, never 300 in the first second; a
  loop that wakes a little late keeps its slot, so the pace does not drift
  below the rate (aiometer's pacing drifted 4-13 % under its limit when
  measured here); after an idle spell up to ``burst`` requests may go back to
  back;
- a moving window: no more than ``floor(N)`` starts in any window of T
  seconds, counted from when a request was really sent, plus a small margin,
  so a connection set-up or a garbage-collection pause that bunches requests
  together cannot push the server's view over the ceiling;
- adaptive throttling: a 429 without Retry-After (:meth:`on_throttled`) cuts
  the schedule's rate (multiplicative decrease), which then regrows toward
  the configured rate along CUBIC's curve (RFC 9438). The moving window
  always keeps the configured ceiling; only the schedule adapts.

A request counts from its release until :meth:`Ticket.mark_sent` moves it to
the moment its head was handed to the socket (the client's request class
calls it: ``client._TimedRequest``).
"""

from __future__ import annotations

import asyncio
import math
import time
from collections import deque
from typing import Protocol

import structlog

log = structlog.get_logger(__name__)

# Loopback arrivals trailed sends by well under 1 ms on an idle machine, but by
# a few ms more for some requests than others on a loaded one (bench/ and the
# soak measured up to 19 ms when the simulator's loop stalled). 5 ms keeps the
# window strict at the server in ordinary conditions and costs 0.5 % of the rate.
DEFAULT_MARGIN_S = 0.005
# Lateness the schedule forgives before it restarts: 50 ms covers a garbage
# collection pause, and the window still caps the catch-up burst.
MAX_LATENESS_S = 0.05
# CUBIC's constants (RFC 9438), with "window" read as requests per second:
# a 429 keeps 70 % of the rate; C sets how fast it climbs back.
CUBIC_BETA = 0.7
CUBIC_C = 0.4
# A 429 after a quiet spell (no cut for QUIET_ROUNDS windows) means the rate
# only just touched the limit while probing: a gentler cut keeps more of it.
# Back-to-back rounds with 429s mean the rate is well over: CUBIC_BETA.
GENTLE_BETA = 0.9
QUIET_ROUNDS = 1.5
# The adapted rate moves in steps at most this often, each one logged.
ADAPT_STEP_S = 0.5
# The adapted rate never falls below this share of the configured one.
MIN_RATE_SHARE = 0.02
# A cut needs evidence of throttling in proportion to the traffic: 429s from at
# least this share of the requests released in the last window (at least one).
# At 200/s one refusal in a window is noise; cutting on each drove a run whose
# server refused a scattered 3-4 % at random to the rate floor (the chaos soak:
# 250/s down to 5/s). At 50/s one 429 is already 2 % and still cuts at once.
MIN_THROTTLED_SHARE = 0.02


class Clock(Protocol):
    """
    The time source the limiter and the runner wait on.
    """

    def now(self) -> float:
        """
        Return monotonic seconds.
        """

    async def sleep(self, seconds: float) -> None:
        """
        Return after ``seconds`` have passed.
        """


class MonotonicClock:
    """
    The real clock: ``time.monotonic`` and ``asyncio.sleep``.
    """

    def now(self) -> float:
        """
        Return monotonic seconds.
        """
        return time.monotonic()

    async def sleep(self, seconds: float) -> None:
        """
        Return after ``seconds`` have passed.
        """
        await asyncio.sleep(seconds)


class Ticket:
    """
    One released request; ``sent_at`` moves to the real send time once known.
    """

    __slots__ = ("_clock", "released_at", "sent_at")

    def __init__(self, released_at: float, clock: Clock) -> None:
        self._clock = clock
        self.released_at = released_at
        self.sent_at = released_at

    def mark_sent(self) -> None:
        """
        Record that the request has just gone out on the wire.
        """
        self.sent_at = max(self.sent_at, self._clock.now())


class RateLimiter:
    """
    Release requests no faster than ``rate_per_s``, first come first served.

    ``window_s`` is T in "N per T" (N is ``rate_per_s * window_s``); ``burst``
    is how many may start back to back after an idle spell.
    """

    def __init__(
        self,
        rate_per_s: float,
        *,
        window_s: float = 1.0,
        burst: int = 1,
        clock: Clock | None = None,
        margin_s: float = DEFAULT_MARGIN_S,
    ) -> None:
        self._clock = clock or MonotonicClock()
        self._ceiling_per_s = rate_per_s
        self._window_s = window_s
        self._capacity = max(1, math.floor(rate_per_s * window_s + 1e-9))
        self._burst = max(1, min(burst, self._capacity))
        self._margin_s = margin_s
        self._recent: deque[Ticket] = deque(maxlen=self._capacity)
        self._throttled: deque[float] = deque()
        self._next_slot = -math.inf
        self._paused_until = -math.inf
        self._lock = asyncio.Lock()
        # Callers inside acquire(): while any waits, try_acquire() defers to it.
        self._queued = 0
        # The schedule never outpaces the window (T + margin per N starts), so
        # the window is a safety net for bunched sends, and a late wake-up does
        # not add its lateness to every later window.
        self._min_interval_s = (window_s + margin_s) / self._capacity
        self._rate_per_s = rate_per_s
        self._interval_s = max(1.0 / rate_per_s, self._min_interval_s)
        self._cubic: _Cubic | None = None
        self._next_step = math.inf

    @property
    def paused_until(self) -> float:
        """
        Return the monotonic time before which nothing is released.
        """
        return self._paused_until

    @property
    def rate_per_s(self) -> float:
        """
        Return the schedule's current rate (below the ceiling after a 429).
        """
        return self._rate_per_s

    def pause_until(self, until: float) -> None:
        """
        Hold back every request until ``until`` (monotonic), e.g. a Retry-After.
        """
        self._paused_until = max(self._paused_until, until)

    def _throttling(self, now: float) -> bool:
        """
        Count a 429 and return whether the last window holds enough to act on.
        """
        horizon = now - self._window_s
        self._throttled.append(now)
        while self._throttled and self._throttled[0] < horizon:
            self._throttled.popleft()
        released = sum(1 for ticket in self._recent if ticket.released_at >= horizon)
        needed = max(1, math.ceil(MIN_THROTTLED_SHARE * released))

        return len(self._throttled) >= needed

    def on_throttled(self, released_at: float) -> None:
        """
        Cut the rate after a 429 that said nothing of when to come back.

        One cut per round, like TCP counting one loss per window: a round
        lasts one window T after the cut, because the server's own window
        still holds requests sent at the old rate until then. The rate holds
        still for that round, then regrows.
        """
        now = self._clock.now()
        if not self._throttling(now):
            return
        last = self._cubic
        if last is not None and released_at <= last.cut_at + self._window_s:
            return
        self._throttled.clear()
        previous = self._rate_per_s
        # No fast convergence (RFC 9438 4.7): a server's limit is a fixed
        # line, not flows competing for a share, and aiming below the rate
        # that hit it cost 5 % of throughput when measured here.
        max_rate = previous
        beta = CUBIC_BETA
        if last is not None and now - last.cut_at > QUIET_ROUNDS * self._window_s:
            beta = GENTLE_BETA
        floor = self._ceiling_per_s * MIN_RATE_SHARE
        self._set_rate(max(floor, previous * beta))
        self._cubic = _Cubic(max_rate, self._rate_per_s, now, now + self._window_s)
        self._next_step = now + self._window_s
        log.warning(
            "limiter.rate_decreased",
            rate_per_s=round(self._rate_per_s, 3),
            previous_rate_per_s=round(previous, 3),
            ceiling_per_s=self._ceiling_per_s,
        )

    def try_acquire(self) -> Ticket | None:
        """
        Return a ticket if a request may start now and none is queued, else None.

        The unthrottled path without a coroutine or the lock; callers fall
        back to :meth:`acquire`, which queues them in turn.
        """
        if self._queued:
            return None
        now = self._clock.now()
        if now >= self._next_step:
            self._regrow(now)
        if self._ready_at(now) > now:
            return None
        return self._release(now)

    async def acquire(self) -> Ticket:
        """
        Wait for this request's turn and return its ticket.
        """
        self._queued += 1
        try:
            async with self._lock:
                while True:
                    now = self._clock.now()
                    if now >= self._next_step:
                        self._regrow(now)
                    ready_at = self._ready_at(now)
                    if ready_at <= now:
                        break
                    await self._clock.sleep(ready_at - now)

                return self._release(now)
        finally:
            self._queued -= 1

    def _release(self, now: float) -> Ticket:
        ticket = Ticket(now, self._clock)
        self._recent.append(ticket)
        self._next_slot = self._slot_for(now) + self._interval_s
        return ticket

    def _set_rate(self, rate_per_s: float) -> None:
        """
        Change the schedule's rate; a slot already promised moves with it.
        """
        self._rate_per_s = rate_per_s
        self._interval_s = max(1.0 / rate_per_s, self._min_interval_s)

    def _regrow(self, now: float) -> None:
        """
        Step the rate up along the CUBIC curve, stopping at the ceiling.
        """
        assert self._cubic is not None
        previous = self._rate_per_s
        target = min(self._ceiling_per_s, self._cubic.rate_at(now))
        if target > previous:
            self._set_rate(target)
            log.info(
                "limiter.rate_increased",
                rate_per_s=round(target, 3),
                previous_rate_per_s=round(previous, 3),
                ceiling_per_s=self._ceiling_per_s,
            )
        if self._rate_per_s >= self._ceiling_per_s:
            self._next_step = math.inf
        else:
            self._next_step = now + ADAPT_STEP_S

    def _slot_for(self, now: float) -> float:
        """
        Return the schedule slot a release at ``now`` fills.

        A release a little late keeps its slot, so the schedule does not drift;
        after idling, a pause or a long stall the schedule restarts at ``now``
        (less the burst allowance) instead of letting a backlog catch up.
        """
        if now - self._next_slot <= MAX_LATENESS_S:
            return self._next_slot

        return max(self._next_slot, now - (self._burst - 1) * self._interval_s)

    def _ready_at(self, now: float) -> float:
        """
        Return the earliest time the next request may be released.
        """
        ready_at = max(self._next_slot, self._paused_until)
        if len(self._recent) == self._capacity:
            oldest = self._recent[0].sent_at
            ready_at = max(ready_at, oldest + self._window_s + self._margin_s)

        return ready_at


class _Cubic:
    """
    CUBIC's growth curve after one cut: concave back to the old rate, then convex.
    """

    __slots__ = ("cut_at", "grows_from", "k_s", "max_rate")

    def __init__(
        self, max_rate: float, cut_rate: float, cut_at: float, grows_from: float
    ) -> None:
        self.max_rate = max_rate
        self.cut_at = cut_at
        self.grows_from = grows_from
        self.k_s = math.cbrt(max(0.0, max_rate - cut_rate) / CUBIC_C)

    def rate_at(self, now: float) -> float:
        """
        Return the curve's rate ``now``: W(t) = C (t - K)^3 + W_max.
        """
        elapsed_s = now - self.grows_from - self.k_s
        return CUBIC_C * elapsed_s * elapsed_s * elapsed_s + self.max_rate
