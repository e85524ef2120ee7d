"""A node's memory as Splash reports it, and Splash's ``--maxrss`` exit.

Why: Splash leaks memory by design of its caches, so deployments run it with
``--maxrss MB`` under a supervisor that restarts it. Splash 3.5 compares its
*peak* RSS (``getrusage``'s ``ru_maxrss``, which never goes down) with the
limit every 60 s (``splash/monitoring.py``: a LoopingCall, first check 60 s
after start) and when over, stops at once with exit status 1: every render in
flight or queued is lost. The peak is in ``/_ping`` (``maxrss``, bytes) and
``/_debug`` (``maxrss``, KB), so a balancer that reads it can drain a node
before its certain exit (issue 13).

A mock's own RSS says nothing about a browser's, so the mock reports a
simulated peak instead: ``base_rss`` MB at start, plus ``rss_per_render`` MB
per render that ran, or what the control port sets (``POST /rss``). The
check compares it as Splash does: ``peak > maxrss`` MB, strictly. The exit
and the supervisor's restart are the server's (``_node``): the same downtime
as the ``crash`` fault's, after which the node is a new process (base RSS,
empty argument cache).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

__all__ = ["MB", "MaxrssOptions", "SimulatedRss"]

MB = 1024 * 1024


@dataclass(frozen=True, slots=True)
class MaxrssOptions:
    """A node's memory options, checked once for the server, the handle and the CLI."""

    #: Splash's ``--maxrss``, MB; None: no limit, the node never exits on it.
    maxrss: float | None = None
    #: MB the peak RSS grows per render that ran.
    rss_per_render: float = 0.0
    #: MB of peak RSS at start (and after each restart).
    base_rss: float = 100.0
    #: Seconds between checks (Splash: 60), the first one this long after start.
    maxrss_check: float = 60.0
    #: Seconds until a supervisor restarts a node that exited; None: stays down.
    restart_after: float | None = None

    def __post_init__(self) -> None:
        _check("maxrss", self.maxrss, optional=True, positive=True)
        _check("rss_per_render", self.rss_per_render)
        _check("base_rss", self.base_rss)
        _check("maxrss_check", self.maxrss_check, positive=True)
        _check("restart_after", self.restart_after, optional=True)

    def cli_args(self) -> list[str]:
        """The command line flags that give these options (``python -m ...testing``)."""
        flags = {
            "--maxrss": self.maxrss,
            "--rss-per-render": self.rss_per_render,
            "--base-rss": self.base_rss,
            "--maxrss-check": self.maxrss_check,
            "--restart-after": self.restart_after,
        }
        return [
            part
            for flag, value in flags.items()
            if value is not None
            for part in (flag, repr(float(value)))
        ]


def _check(name: str, value: object, optional: bool = False, positive: bool = False) -> None:
    if value is None and optional:
        return
    valid = isinstance(value, (int, float)) and not isinstance(value, bool)
    if not valid or not math.isfinite(value) or value < 0 or (positive and value == 0):  # type: ignore[arg-type,operator]
        bound = "> 0" if positive else ">= 0"
        allowed = f"a number {bound}" + (" or None" if optional else "")
        raise ValueError(f"{name} must be {allowed}, got {value!r}")


class SimulatedRss:
    """The peak RSS a mock node reports: grows per render, never shrinks."""

    def __init__(self, base_mb: float = 100.0, per_render_mb: float = 0.0) -> None:
        self.base_mb = float(base_mb)
        self.per_render_mb = float(per_render_mb)
        self.peak_mb = self.base_mb

    def rendered(self) -> None:
        """A render ran: the caches it filled stay."""
        self.peak_mb += self.per_render_mb

    def set(self, mb: float) -> None:
        """Set the peak (a test pushing the node over its limit on demand)."""
        _check("mb", mb)
        self.peak_mb = float(mb)

    def restart(self) -> None:
        """A new process: back to the base."""
        self.peak_mb = self.base_mb

    def over(self, maxrss_mb: float | None) -> bool:
        """Whether Splash's check would exit now (never without a limit)."""
        return maxrss_mb is not None and self.peak_mb > maxrss_mb

    @property
    def peak_bytes(self) -> int:
        """``/_ping``'s ``maxrss``."""
        return int(self.peak_mb * MB)

    @property
    def peak_kb(self) -> int:
        """``/_debug``'s ``maxrss``."""
        return int(self.peak_mb * 1024)
