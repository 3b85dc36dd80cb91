"""
The connection slots: a cap on requests in flight, handed over in arrival order.
"""

from __future__ import annotations

import asyncio

import pytest

from orchestrator.slots import Slots

TIMEOUT_S = 10.0


async def enter(slots: Slots, name: str, got: list[str]) -> None:
    """
    Take a slot, note ``name`` as having got one, and give it back.
    """
    async with slots:
        got.append(name)


async def test_slots_cap_holders_and_hand_over_in_arrival_order() -> None:
    """With 2 slots and 6 tasks, never more than 2 hold one; they enter in order."""
    slots = Slots(2)
    entered: list[int] = []
    holding = 0
    most = 0
    release = asyncio.Event()

    async def task(number: int) -> None:
        nonlocal holding, most
        async with slots:
            entered.append(number)
            holding += 1
            most = max(most, holding)
            await release.wait()
            holding -= 1

    tasks = [asyncio.create_task(task(number)) for number in range(6)]
    await asyncio.sleep(0)
    assert entered == [0, 1]
    release.set()
    await asyncio.wait_for(asyncio.gather(*tasks), TIMEOUT_S)

    assert entered == [0, 1, 2, 3, 4, 5]
    assert most == 2
    assert slots.free == 2


async def test_a_cancelled_waiter_leaves_no_slot_behind() -> None:
    """A task cancelled while queued takes nothing; the next one gets the slot."""
    slots = Slots(1)
    got: list[str] = []

    async with slots:
        cancelled = asyncio.create_task(enter(slots, "cancelled", got))
        later = asyncio.create_task(enter(slots, "later", got))
        await asyncio.sleep(0)
        cancelled.cancel()
        await asyncio.sleep(0)
    await asyncio.wait_for(later, TIMEOUT_S)

    assert cancelled.cancelled()
    assert got == ["later"]
    assert slots.free == 1


async def test_a_waiter_cancelled_after_the_hand_over_passes_the_slot_on() -> None:
    """Cancelled between being handed the slot and running: the slot moves on."""
    slots = Slots(1)
    got: list[str] = []

    async with slots:
        first = asyncio.create_task(enter(slots, "first", got))
        second = asyncio.create_task(enter(slots, "second", got))
        await asyncio.sleep(0)
    # The slot is now first's, but first has not run yet.
    first.cancel()
    await asyncio.wait_for(second, TIMEOUT_S)

    assert first.cancelled()
    assert got == ["second"]
    assert slots.free == 1


def test_slots_need_at_least_one() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        Slots(0)
