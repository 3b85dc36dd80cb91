"""
A simulator whose own rate limit rises mid-run: the adaptive benchmark's server.

``python bench/adaptive_sim.py --log FILE --limit 50 --hold 30 --then 1000``
admits ``--limit`` per second until ``--hold`` seconds after the first sync
request, then ``--then`` per second. Prints ``listening on URL`` like
``modelarts-sync simulate``.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
from pathlib import Path

from orchestrator import runtime
from orchestrator.simulator import Plan, Simulator


async def serve(log: Path, limit: float, hold_s: float, then: float) -> None:
    sim = Simulator(Plan(rate_limit_per_s=limit), log_path=log, keep_records=False)
    url = await sim.start()
    print(f"listening on {url}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for number in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(number, stop.set)

    await sim.wait_for_requests(1, timeout_s=600)
    try:
        await asyncio.wait_for(stop.wait(), hold_s)
    except TimeoutError:
        sim.set_rate_limit(then)
        print("limit raised", flush=True)
        await stop.wait()
    await sim.stop()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--log", type=Path, required=True)
    parser.add_argument("--limit", type=float, default=50)
    parser.add_argument("--hold", type=float, default=30)
    parser.add_argument("--then", type=float, default=1000)
    args = parser.parse_args()
    # Served as `modelarts-sync simulate` serves (see simulator.serve_forever).
    runtime.run(serve(args.log, args.limit, args.hold, args.then), young=0)


if __name__ == "__main__":
    main()
