"""
How a long-lived process of ours sets up the interpreter: event loop and collector.

``modelarts-sync run`` and ``modelarts-sync simulate`` both spend their life
in one event loop moving many small requests; both choose the loop and tune
the garbage collector here, the same way, so the client and the server it is
measured against in bench/ are set up alike.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
from collections.abc import Callable, Coroutine, Iterator
from typing import Any, TypeVar

_T = TypeVar("_T")

# Allocations between young-generation collections while a run lasts (the
# interpreter's default is 700): a sent request allocates a few hundred
# container objects, so the default collects every few requests.
RUN_GC_THRESHOLD = 10_000


def loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    """
    Return uvloop's loop factory when uvloop is installed, else None (asyncio's).

    uvloop is optional: it cut the CPU per request when measured in bench/.
    """
    try:
        import uvloop  # optional: looked for at run time
    except ImportError:
        return None
    factory: Callable[[], asyncio.AbstractEventLoop] = uvloop.new_event_loop

    return factory


@contextlib.contextmanager
def steady_collector(young: int = RUN_GC_THRESHOLD) -> Iterator[None]:
    """
    Keep Python's cyclic garbage collector off the hot path, then restore it.

    Profiled on a run of 20,000 targets, collections took about 0.75 s, most
    of it full collections walking the config and the targets, which live as
    long as the run does. Freezing what exists now moves those objects out of
    the collector's sight; a higher young-generation threshold makes the
    collections that remain rarer. Cyclic garbage is still collected, every
    ``young`` allocations at most, so memory stays bounded. The caller's
    settings come back on the way out, however it ends.

    ``young`` is the young-generation threshold while inside; a caller's
    higher one is kept. Rarer collections cost less in all but take longer
    each (a few ms at 10,000), which a server stamping arrivals feels: the
    simulator passes 0 and keeps the interpreter's short ones.
    """
    threshold = gc.get_threshold()
    gc.freeze()
    gc.set_threshold(max(threshold[0], young), *threshold[1:])
    try:
        yield
    finally:
        gc.set_threshold(*threshold)
        gc.unfreeze()


def run(main: Coroutine[Any, Any, _T], *, young: int = RUN_GC_THRESHOLD) -> _T:
    """
    Run ``main`` to completion on :func:`loop_factory`'s loop, collector steadied.

    ``young`` goes to :func:`steady_collector`.
    """
    with steady_collector(young), asyncio.Runner(loop_factory=loop_factory()) as runner:
        return runner.run(main)
