"""A node's real capacity: renders beyond it share the CPU and slow down.

Why: Splash's ``--slots`` says how many renders a node *accepts* at once, not
how many it can finish at full speed. A real node on a small or busy host is
CPU-bound: with more renders running than its cores can serve, every render
progresses more slowly, and renders that would take 1 s alone take k times
as long when k of them share one core. A balancer that finds each node's real
capacity (issue 14) must be tested against nodes that behave so.

The model is processor sharing (the M/G/1-PS queue of queueing theory, the
usual idealisation of a time-sliced CPU): a render brings an amount of
*work*, the seconds it takes alone at full speed (the node's latency plus
``wait``); with k renders working on a node of capacity c, each progresses at
``min(1, c / k)`` seconds of work per second. Up to c renders run at full
speed; beyond, their wall time stretches in proportion.

The algorithm is event-driven and exact, with no polling: work left only
changes at a constant rate between events (a render starts working, finishes,
or is cut), so at each event every render's work left is brought up to date
(minus elapsed time x the rate in force since the last event), and one timer
is set for the earliest finish under the new rate. Costs O(k) per event, k at
most the node's slots.

:class:`ProcessorSharing` is the pure model (times are given, no clock, no
I/O, so it is tested with tables of events); :class:`SharedCpu` drives it
from the asyncio loop for the mock node.
"""

from __future__ import annotations

import asyncio
from collections.abc import Hashable

__all__ = ["ProcessorSharing", "SharedCpu", "check_capacity"]

# Work left (seconds) below which a render counts as finished: float rounding
# of `elapsed x rate` sums, far below any latency a test configures.
_EPSILON = 1e-9


def check_capacity(capacity: int | None) -> None:
    """ValueError naming the problem unless ``capacity`` is None or an integer >= 1."""
    if capacity is not None and (type(capacity) is not int or capacity < 1):
        raise ValueError(f"capacity must be an integer >= 1 or None (unlimited), got {capacity!r}")


class ProcessorSharing:
    """Renders sharing a node of ``capacity`` (None: unlimited, all at full speed)."""

    def __init__(self, capacity: int | None) -> None:
        check_capacity(capacity)
        self.capacity = capacity
        self._left: dict[Hashable, float] = {}
        self._clock = 0.0
        #: The lowest per-render speed since start or :meth:`reset_min_speed`.
        self.min_speed = 1.0

    def __len__(self) -> int:
        """Renders working now."""
        return len(self._left)

    def __contains__(self, key: Hashable) -> bool:
        return key in self._left

    @property
    def speed(self) -> float:
        """Seconds of work each render does per second, now: ``min(1, capacity / k)``."""
        working = len(self._left)
        if self.capacity is None or working <= self.capacity:
            return 1.0
        return self.capacity / working

    def reset_min_speed(self) -> None:
        """Start :attr:`min_speed` again from the speed now."""
        self.min_speed = self.speed

    def add(self, key: Hashable, work: float, now: float) -> None:
        """A render starts working at ``now`` with ``work`` seconds of work."""
        if key in self._left:
            raise ValueError(f"{key!r} is already working")
        self._advance(now)
        self._left[key] = float(work)
        self.min_speed = min(self.min_speed, self.speed)

    def remove(self, key: Hashable, now: float) -> float:
        """A render is cut at ``now``; returns the work it had left."""
        self._advance(now)
        return self._left.pop(key)

    def left(self, key: Hashable, now: float) -> float:
        """The work ``key`` has left at ``now``."""
        self._advance(now)
        return self._left[key]

    def next_finish(self) -> float | None:
        """When the first render will finish at the present rate; None if none works."""
        if not self._left:
            return None
        return self._clock + min(self._left.values()) / self.speed

    def finish(self, now: float) -> list[Hashable]:
        """Remove and return the renders whose work is done at ``now``."""
        self._advance(now)
        done = [key for key, left in self._left.items() if left <= _EPSILON]
        for key in done:
            del self._left[key]
        return done

    def _advance(self, now: float) -> None:
        elapsed = now - self._clock
        if elapsed <= 0:
            return
        step = elapsed * self.speed
        for key in self._left:
            self._left[key] -= step
        self._clock = now


class SharedCpu:
    """The model on the running asyncio loop: ``await cpu.run(work)``."""

    def __init__(self, capacity: int | None) -> None:
        self.model = ProcessorSharing(capacity)
        self._timer: asyncio.TimerHandle | None = None

    async def run(self, work: float) -> None:
        """Do ``work`` seconds of work, sharing the node with the renders working.

        Cancellation (the render's timeout, its client gone, the node going
        down) takes the render out at once, and the others speed up.
        """
        if work <= 0:
            return
        loop = asyncio.get_running_loop()
        if self.model.capacity is None:
            await asyncio.sleep(work)  # nothing to share: the exact answer
            return
        done = loop.create_future()
        self.model.add(done, work, loop.time())
        self._schedule(loop)
        try:
            await done
        finally:
            if done in self.model:
                self.model.remove(done, loop.time())
                self._schedule(loop)

    def _schedule(self, loop: asyncio.AbstractEventLoop) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        when = self.model.next_finish()
        if when is not None:
            self._timer = loop.call_at(when, self._on_finish, loop, when)

    def _on_finish(self, loop: asyncio.AbstractEventLoop, when: float) -> None:
        self._timer = None
        # The loop may run a timer a clock tick early; the finish is `when`.
        for done in self.model.finish(max(loop.time(), when)):
            assert isinstance(done, asyncio.Future)
            if not done.done():
                done.set_result(None)
        self._schedule(loop)
