"""The benchmark's scenarios and contenders: what runs, on which nodes, with which faults."""

from __future__ import annotations

from dataclasses import dataclass, field

# The contenders, in the order the tables list them.
CLUSTER = "cluster"
ADAPTIVE = "adaptive"
HAPROXY = "haproxy"
SINGLE = "single"
CONTENDERS = (CLUSTER, ADAPTIVE, HAPROXY, SINGLE)
CONTENDER_TITLES = {
    CLUSTER: "scrapy-splash-cluster",
    ADAPTIVE: "scrapy-splash-cluster, adaptive limits",
    HAPROXY: "scrapy-splash + HAProxy",
    SINGLE: "scrapy-splash, one node",
}
# The contenders that run this tree (the static limit and the adaptive one).
OURS = (CLUSTER, ADAPTIVE)
# What tells them apart: the setting each one's crawls get.
CONTENDER_SETTINGS = {
    CLUSTER: {"SPLASH_CLUSTER_ADAPTIVE": False},
    ADAPTIVE: {"SPLASH_CLUSTER_ADAPTIVE": True},
}

# The node every fault hits, and the one node the single-node contender uses.
VICTIM = 0


@dataclass(frozen=True)
class FaultEvent:
    """One action on the victim node, ``at`` seconds after the crawl's first request."""

    at: float
    action: str  # kill, restart, freeze, unfreeze, refuse, none
    label: str


@dataclass(frozen=True)
class Scenario:
    name: str
    title: str
    description: str
    latencies: tuple[float, ...]  # render latency of each node, seconds
    pages: int
    quick_pages: int
    concurrency: int = 30  # CONCURRENT_REQUESTS (and _PER_DOMAIN)
    slots: int = 5  # each mock node's --slots
    maxconn: int = 5  # per node: SPLASH_CLUSTER_MAXCONN, HAProxy's maxconn
    fault: str | None = None  # kill_restart, freeze, flap
    contenders: tuple[str, ...] = CONTENDERS
    # Renders each node runs at full speed (mock --capacity; None: all of them).
    capacities: tuple[int | None, ...] | None = None
    render_timeout: float = 30.0  # Splash's timeout argument of every page
    # Repeats for this scenario when fewer than --repeats (the 20,000-page crawl).
    max_repeats: int | None = None
    notes: tuple[str, ...] = field(default_factory=tuple)

    def capacity(self, contender: str) -> float:
        """The capacity limit in pages/s: sum over the contender's nodes of maxconn / latency."""
        if contender == SINGLE:
            return self.runs_at_once(VICTIM) / self.latencies[VICTIM]
        return sum(self.runs_at_once(i) / latency for i, latency in enumerate(self.latencies))

    def runs_at_once(self, node: int) -> int:
        """Renders node ``node`` finishes at full speed at once: maxconn, or its capacity."""
        capacity = self.capacities[node] if self.capacities else None
        return self.maxconn if capacity is None else min(self.maxconn, capacity)

    def ideal_duration(self, pages: int) -> float:
        """Seconds the crawl takes at the cluster's capacity limit."""
        return pages / self.capacity(CLUSTER)

    def fault_plan(self, pages: int, phase: float = 0.0) -> list[FaultEvent]:
        """The faults of this scenario, timed from the crawl's first request.

        Times are the same for every contender (a wall-clock schedule), taken
        from the ideal duration of the multi-node crawl, then moved ``phase``
        seconds later (see :func:`fault_phase`).
        """
        return [FaultEvent(round(e.at + phase, 2), e.action, e.label) for e in self._plan(pages)]

    def _plan(self, pages: int) -> list[FaultEvent]:
        ideal = self.ideal_duration(pages)
        if self.fault == "kill_restart":
            return [
                FaultEvent(round(0.3 * ideal, 2), "kill", "node-1 killed (SIGKILL)"),
                FaultEvent(round(0.6 * ideal, 2), "restart", "node-1 restarted"),
            ]
        if self.fault == "freeze":
            start = round(max(2.0, 0.15 * ideal), 2)
            return [
                FaultEvent(start, "freeze", "node-1 frozen (SIGSTOP)"),
                FaultEvent(start + FREEZE_SECONDS, "unfreeze", "node-1 resumed (SIGCONT)"),
            ]
        if self.fault == "flap":
            events = []
            # Bounded: 40 cycles (10 minutes); the runner stops at the crawl's end.
            for cycle in range(40):
                start = FLAP_FIRST + cycle * FLAP_PERIOD
                events.append(FaultEvent(start, "refuse", "node-1 refuses connections"))
                events.append(FaultEvent(start + FLAP_DOWN, "none", "node-1 accepts again"))
            return events
        return []


# Both balancers probe every 2 s (SPLASH_CLUSTER_HEALTH_INTERVAL's default,
# HAProxy's `inter 2s`) and need 2 good probes to bring a node back.
PROBE_INTERVAL = 2.0


def fault_phase(repeat: int, repeats: int) -> float:
    """How much later than planned the faults of run ``repeat`` (1-based) of ``repeats`` come.

    A node comes back UP at the second good probe after it recovers, so the
    time it stays out depends on where its recovery falls in the probe cycle
    (2 to 4 s here). The add-on's probes start with the crawl, so a fixed
    fault plan would always hit it at the same point of its cycle (a first
    version of this benchmark hit the worst one every time: a probe 0.1 s
    before each recovery, so 4 s out); HAProxy's checks start at a point of
    their own. Spreading the faults of the repeats evenly over one cycle (1 s
    for a single run) gives the add-on the average over the cycle instead.
    """
    return round((repeat - 0.5) / repeats * PROBE_INTERVAL, 2)


FREEZE_SECONDS = 20.0
FLAP_FIRST = 5.0
FLAP_PERIOD = 15.0
FLAP_DOWN = 5.0

_THREE = (0.2, 0.2, 0.2)

SCENARIOS: tuple[Scenario, ...] = (
    Scenario(
        name="capacity",
        title="Nodes of unequal capacity",
        description="3 nodes with --slots 8 (maxconn 8) that run 1, 2 and 8 renders at full "
        "speed (beyond, renders share the node and each slows in proportion, as a CPU-bound "
        "Splash does); 200 ms per render, Splash timeout 1.0 s; CONCURRENT_REQUESTS 30.",
        latencies=_THREE,
        pages=600,
        quick_pages=300,
        slots=8,
        maxconn=8,
        capacities=(1, 2, 8),
        render_timeout=1.0,
        contenders=(CLUSTER, ADAPTIVE, HAPROXY),
    ),
    Scenario(
        name="homogeneous",
        title="Homogeneous",
        description="3 nodes, 5 slots each, 200 ms per render; CONCURRENT_REQUESTS 30.",
        latencies=_THREE,
        pages=1200,
        quick_pages=300,
    ),
    Scenario(
        name="slow_node",
        title="One slow node",
        description="3 nodes, node-1 renders in 600 ms (3x slower), the others in 200 ms.",
        latencies=(0.6, 0.2, 0.2),
        pages=900,
        quick_pages=300,
        contenders=(CLUSTER, ADAPTIVE, HAPROXY),
    ),
    Scenario(
        name="kill_restart",
        title="Node killed and restarted",
        description="3 nodes at 200 ms; node-1 gets SIGKILL at 30 % of the crawl's ideal "
        "duration (renders in flight on it) and is started again on its port at 60 %.",
        latencies=_THREE,
        pages=1200,
        quick_pages=600,
        fault="kill_restart",
    ),
    Scenario(
        name="frozen",
        title="Frozen node",
        description=f"3 nodes at 200 ms; node-1 gets SIGSTOP for {FREEZE_SECONDS:.0f} s "
        "(connections still accepted by the kernel, nothing answered), then SIGCONT.",
        latencies=_THREE,
        pages=1500,
        quick_pages=1500,
        fault="freeze",
        contenders=(CLUSTER, ADAPTIVE, HAPROXY),
    ),
    Scenario(
        name="flapping",
        title="Flapping node",
        description=f"3 nodes at 200 ms; node-1 refuses connections for {FLAP_DOWN:.0f} s "
        f"every {FLAP_PERIOD:.0f} s (first at {FLAP_FIRST:.0f} s).",
        latencies=_THREE,
        pages=1500,
        quick_pages=900,
        fault="flap",
        contenders=(CLUSTER, ADAPTIVE, HAPROXY),
    ),
    Scenario(
        name="overload",
        title="Overload",
        description="3 nodes at 200 ms (15 slots in all); CONCURRENT_REQUESTS 100.",
        latencies=_THREE,
        pages=900,
        quick_pages=300,
        concurrency=100,
    ),
    Scenario(
        name="large",
        title="Large crawl",
        description="20,000 pages; 5 nodes, 5 slots each, 20 ms per render (capacity "
        "1,250 pages/s: the crawler is the bottleneck); CONCURRENT_REQUESTS 50.",
        latencies=(0.02,) * 5,
        pages=20000,
        quick_pages=2000,
        concurrency=50,
        max_repeats=1,
        contenders=(CLUSTER, ADAPTIVE, HAPROXY),
    ),
)

SCENARIOS_BY_NAME = {s.name: s for s in SCENARIOS}
