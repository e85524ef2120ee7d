"""The slot gate's hand-over under cancellation (pure asyncio, no sockets)."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace

import pytest
from scrapy_splash_cluster._slot_gate import SlotGate


def gate_of(concurrency: int) -> SlotGate:
    # The gate reads only crawler.engine.downloader.slots[key].concurrency.
    slot = SimpleNamespace(concurrency=concurrency)
    downloader = SimpleNamespace(slots={"example.com": slot})
    return SlotGate(SimpleNamespace(engine=SimpleNamespace(downloader=downloader)))


async def test_a_waiter_cancelled_as_its_slot_frees_raises_cancelled_error():
    gate = gate_of(1)
    holder = gate.hold("example.com")
    await holder.__aenter__()

    async def wait_for_slot() -> None:
        async with gate.hold("example.com"):
            pytest.fail("a cancelled waiter got the slot")

    waiter = asyncio.create_task(wait_for_slot())
    await asyncio.sleep(0)  # the waiter queues
    waiter.cancel()  # its future is cancelled now, its handler runs later
    await holder.__aexit__(None, None, None)  # the release passes over it
    with pytest.raises(asyncio.CancelledError):
        await waiter
    # Nothing is left held: a new request goes straight through.
    async with asyncio.timeout(1):
        async with gate.hold("example.com"):
            pass


async def test_a_slot_handed_to_a_cancelled_waiter_goes_to_the_next():
    gate = gate_of(1)
    holder = gate.hold("example.com")
    await holder.__aenter__()
    entered: list[str] = []

    async def wait_for_slot(name: str) -> None:
        async with gate.hold("example.com"):
            entered.append(name)

    first = asyncio.create_task(wait_for_slot("first"))
    second = asyncio.create_task(wait_for_slot("second"))
    await asyncio.sleep(0)
    await holder.__aexit__(None, None, None)  # hands the slot to first...
    first.cancel()  # ...which is cancelled before it runs
    with pytest.raises(asyncio.CancelledError):
        await first
    async with asyncio.timeout(1):
        await second
    assert entered == ["second"]
