"""
How a run and the simulator set up the interpreter: the garbage collector.
"""

from __future__ import annotations

import gc

import pytest

from orchestrator import runtime


def test_collector_is_tuned_inside_and_restored_when_the_body_raises() -> None:
    """Inside, the collector runs rarely and skips what existed before it."""
    threshold = gc.get_threshold()
    seen: list[tuple[tuple[int, int, int], int]] = []

    def failing_run() -> None:
        with runtime.steady_collector():
            seen.append((gc.get_threshold(), gc.get_freeze_count()))
            raise RuntimeError("run failed")

    with pytest.raises(RuntimeError):
        failing_run()

    ((during, frozen),) = seen
    assert during == (runtime.RUN_GC_THRESHOLD, *threshold[1:])
    assert frozen > 0
    assert (gc.get_threshold(), gc.get_freeze_count()) == (threshold, 0)


def test_a_higher_threshold_of_the_caller_is_kept() -> None:
    """A caller that already collects less often is not made to collect more."""
    threshold = gc.get_threshold()
    gc.set_threshold(50_000, 20, 30)
    try:
        with runtime.steady_collector(young=0):
            during = gc.get_threshold()
    finally:
        gc.set_threshold(*threshold)

    assert during == (50_000, 20, 30)
