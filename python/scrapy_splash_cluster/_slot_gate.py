"""Keeps CONCURRENT_REQUESTS_PER_DOMAIN (and per-slot concurrency) true for
Splash requests.

Scrapy 2.19 under the asyncio reactor over-dispatches a download slot: when
one transfer ends, ``Downloader._process_queue`` pops every queued request
while ``free_transfer_slots() > 0``, but each popped request is started as
an asyncio task and only counts as transferring once that task runs, so the
whole queue leaves at once. Measured with Scrapy's own HTTP handler and no
add-on: CONCURRENT_REQUESTS_PER_DOMAIN = 1, 5 requests to a page answering
in 0.2 s: arrivals at 0, 0.206, 0.207, 0.207, 0.207 s. DOWNLOAD_DELAY is not
affected (it dispatches one request per timer).

The gate holds a Splash request in the handler until fewer than the slot's
concurrency are in flight, so a page's site sees the limit the user set.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import AsyncIterator
from typing import Any

__all__ = ["SlotGate"]


class _Gate:
    __slots__ = ("in_flight", "waiters")

    def __init__(self) -> None:
        self.in_flight = 0
        self.waiters: deque[asyncio.Future[None]] = deque()


class SlotGate:
    """At most the slot's concurrency of Splash requests in flight per slot."""

    def __init__(self, crawler: Any) -> None:
        self._crawler = crawler
        self._gates: dict[str, _Gate] = {}

    def _limit(self, key: str) -> int:
        engine = getattr(self._crawler, "engine", None)
        slot = engine.downloader.slots.get(key) if engine is not None else None
        return max(1, getattr(slot, "concurrency", 0) or 0) if slot is not None else 1 << 30

    @contextlib.asynccontextmanager
    async def hold(self, key: str) -> AsyncIterator[None]:
        gate = self._gates.setdefault(key, _Gate())
        if gate.in_flight >= self._limit(key):
            waiter = asyncio.get_running_loop().create_future()
            gate.waiters.append(waiter)
            try:
                await waiter  # the releaser counted us in already
            except BaseException:
                if waiter.done() and not waiter.cancelled():
                    # Handed our place in the instant we were cancelled:
                    # pass it on.
                    self._release(key, gate)
                elif waiter in gate.waiters:
                    # A releaser may have taken our cancelled waiter out
                    # already, passing over it.
                    gate.waiters.remove(waiter)
                raise
        else:
            gate.in_flight += 1
        try:
            yield
        finally:
            self._release(key, gate)

    def _release(self, key: str, gate: _Gate) -> None:
        while gate.waiters:
            waiter = gate.waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)  # hands our place over
                return
        gate.in_flight -= 1
        if gate.in_flight == 0:
            del self._gates[key]
