"""Failure paths under abuse: a stats page flooded with half-open clients in
a crawl short of file descriptors, an interpreter exiting with requests in
flight."""

from __future__ import annotations

import socket
import subprocess
import sys
import threading
import time

from tests.crawl_helpers import run_crawl
from tests.test_scrapy import assert_clean, errors, pages, settings_for


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class HalfOpenFlood:
    """Opens `count` connections to a port as soon as it listens, each
    sending half a request head, and holds them open."""

    def __init__(self, port: int, count: int) -> None:
        self.port, self.count = port, count
        self.sockets: list[socket.socket] = []
        self.done_at: float | None = None
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def _run(self) -> None:
        deadline = time.monotonic() + 60
        while len(self.sockets) < self.count and time.monotonic() < deadline:
            s = socket.socket()
            s.settimeout(2)
            try:
                s.connect(("127.0.0.1", self.port))
                s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n")
            except OSError:
                s.close()
                time.sleep(0.01)  # not listening yet
                continue
            self.sockets.append(s)
        self.done_at = time.monotonic()

    def close(self) -> None:
        self._thread.join(timeout=60)
        for s in self.sockets:
            s.close()


def test_a_flooded_stats_page_costs_the_crawl_nothing(splash_nodes):
    nodes = splash_nodes(3, latency=0.2)
    port = free_port()
    # The cap (32) plus the listen backlog (128) connect at once; the rest
    # would wait for the cap to free.
    flood = HalfOpenFlood(port, 160)
    flood.start()
    try:
        result = run_crawl(
            settings_for(
                nodes,
                SPLASH_CLUSTER_STATS_PORT=port,
                SPLASH_CLUSTER_STATS_PASSWORD="pw",
                SPLASH_CLUSTER_MAXCONN=2,
                CONCURRENT_REQUESTS=6,
            ),
            pages(120),
            # Fewer descriptors than the flood has connections: before the
            # cap, accepting them all left none for the nodes' connections.
            max_open_files=150,
        )
        ended = time.monotonic()
    finally:
        flood.close()
    assert flood.done_at is not None and flood.done_at < ended, "the flood came too late"
    assert len(flood.sockets) == 160
    assert_clean(result)
    assert not errors(result), errors(result)[:3]
    assert sorted(i["index"] for i in result.items) == list(range(120))
    for node in nodes:
        assert result.stats.get(f"splash_cluster/nodes/127.0.0.1:{node.port}/downs", 0) == 0
    assert "is DOWN" not in result.log


EXIT_WITH_REQUESTS_IN_FLIGHT = """
import asyncio, sys
from scrapy_splash_cluster import SplashCluster

async def main(url, delay):
    # Never closed; 50 requests, some answered in the very instant the
    # interpreter starts to exit.
    cluster = SplashCluster([url, "http://127.0.0.1:9"], health_interval=0.05, maxconn=50)
    for _ in range(50):
        asyncio.ensure_future(cluster.request("GET", "/render.html?url=http://x/", timeout=30))
    await asyncio.sleep(delay)

asyncio.run(main(sys.argv[1], float(sys.argv[2])))
"""


def test_exiting_with_requests_in_flight_never_hangs_or_aborts(splash_nodes):
    # Before the exit gate, 6 of 60 such runs died (SIGSEGV, SIGABRT).
    (node,) = splash_nodes(1, latency=0.05, slots=50)
    outcomes = []
    for run in range(50):
        # Exit before, during and after the answers come (50 ms renders).
        delay = 0.03 + (run % 10) * 0.005
        proc = subprocess.run(
            [sys.executable, "-c", EXIT_WITH_REQUESTS_IN_FLIGHT, node.url, str(delay)],
            capture_output=True,
            text=True,
            timeout=30,
        )
        outcomes.append((proc.returncode, proc.stderr[-500:]))
    assert all(code == 0 for code, _ in outcomes), [o for o in outcomes if o[0] != 0]


def test_a_page_that_kills_nodes_takes_down_two_and_no_victim(splash_nodes):
    # Four nodes under a supervisor (each crash: back 0.3 s later); one page
    # of 80 crashes whichever node renders it. Before the poison limit it
    # took down 10 nodes (4 attempts, then RetryMiddleware twice more).
    nodes = splash_nodes(4, latency=0.1)
    for node in nodes:
        node.set_fault("crash", url="/poison", downtime=0.3)
    crawl = pages(80)
    crawl[20] = {"url": "http://example.com/poison"}
    result = run_crawl(
        settings_for(nodes, CONCURRENT_REQUESTS=8, SPLASH_CLUSTER_ERROR_LIMIT=100),
        crawl,
    )
    assert_clean(result)
    (poisoned,) = errors(result)
    assert poisoned["index"] == 20
    assert poisoned["error"] == "SplashPoisonedRequest"
    crashes = [
        entry
        for node in nodes
        for entry in node.stats()["log"]
        if "/poison" in (entry.get("url") or "")
    ]
    assert [e["status"] for e in crashes] == ["crash", "crash"], crashes
    # Every other page was rendered, the victims of both crashes included.
    answered = {i["index"] for i in result.items if i.get("status") == 200}
    assert answered == set(range(80)) - {20}
    victims = [i for i in result.items if len(i.get("attempts", [])) > 1 and i["index"] != 20]
    assert victims, "the crashes should have cut renders in flight"
    assert result.stats["splash_cluster/poisoned"] == 1
    assert result.log.count("Splash request for http://example.com/poison not sent") == 1
