"""
The alternatives modelarts-sync is measured against, each POSTing the same URLs.

``python bench/peers.py KIND --url URL --count N --concurrency C [--rate R]``

- ``bare``: a plain aiohttp loop, C workers, no pacing: the stack's ceiling;
- ``aiometer``: ``aiometer.run_on_each`` with ``max_at_once`` and ``max_per_second``
  (``--rate inf``: no ``max_per_second``);
- ``aiolimiter``: an ``AsyncLimiter(R, 1)`` and a semaphore around aiohttp;
- ``requests``: a naive sequential ``requests.Session`` loop.

Each uses uvloop when it is installed, as modelarts-sync does.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import os
from collections.abc import Awaitable, Callable

import aiohttp

PROJECT = "0b2c5e7f9a1d4c3b8e6f0a2d4c6e8b1f"
HEADERS = {"Content-Type": "application/json", "X-Auth-Token": "sim-token"}


def urls(base: str, count: int) -> list[str]:
    """
    Return the sync-data URLs of ``count`` datasets, as the tool would build them.
    """
    return [
        f"{base}/v2/{PROJECT}/datasets/ds-{i:06d}/sync-data"
        for i in range(1, count + 1)
    ]


async def _session_run(
    concurrency: int, body: Callable[[aiohttp.ClientSession], Awaitable[None]]
) -> None:
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector, headers=HEADERS) as session:
        await body(session)


async def _post(session: aiohttp.ClientSession, url: str) -> None:
    async with session.post(url) as response:
        await response.read()


async def bare(targets: list[str], concurrency: int, rate: float) -> None:
    """
    Post every URL from ``concurrency`` workers sharing one iterator.
    """
    del rate
    pending = iter(targets)

    async def body(session: aiohttp.ClientSession) -> None:
        async def worker() -> None:
            for url in pending:
                await _post(session, url)

        await asyncio.gather(*(worker() for _ in range(concurrency)))

    await _session_run(concurrency, body)


async def with_aiometer(targets: list[str], concurrency: int, rate: float) -> None:
    """
    Post every URL through aiometer's pacing.
    """
    import aiometer

    async def body(session: aiohttp.ClientSession) -> None:
        await aiometer.run_on_each(
            lambda url: _post(session, url),
            targets,
            max_at_once=concurrency,
            # inf: no pacer at all. With any rate aiometer sleeps before each
            # start, and uvloop's millisecond timers then cap it near 1,000/s.
            max_per_second=None if math.isinf(rate) else rate,
        )

    await _session_run(concurrency, body)


async def with_aiolimiter(targets: list[str], concurrency: int, rate: float) -> None:
    """
    Post every URL through an aiolimiter leaky bucket and a semaphore.
    """
    from aiolimiter import AsyncLimiter

    limiter = AsyncLimiter(rate, 1.0)
    slots = asyncio.Semaphore(concurrency)

    async def one(session: aiohttp.ClientSession, url: str) -> None:
        async with slots, limiter:
            await _post(session, url)

    async def body(session: aiohttp.ClientSession) -> None:
        await asyncio.gather(*(one(session, url) for url in targets))

    await _session_run(concurrency, body)


def with_requests(targets: list[str]) -> None:
    """
    Post every URL one after another with requests.
    """
    import requests

    with requests.Session() as session:
        session.headers.update(HEADERS)
        for url in targets:
            session.post(url, timeout=30).content  # noqa: B018 - read the body


_ASYNC = {"bare": bare, "aiometer": with_aiometer, "aiolimiter": with_aiolimiter}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("kind", choices=[*_ASYNC, "requests"])
    parser.add_argument("--url", required=True)
    parser.add_argument("--count", type=int, required=True)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--rate", type=float, default=1e9)
    args = parser.parse_args()
    targets = urls(args.url, args.count)
    if args.kind == "requests":
        with_requests(targets)
        return
    run = _ASYNC[args.kind](targets, args.concurrency, args.rate)
    if os.environ.get("BENCH_NO_UVLOOP"):
        asyncio.run(run)
        return
    try:
        import uvloop
    except ImportError:
        asyncio.run(run)
    else:
        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            runner.run(run)


if __name__ == "__main__":
    main()
