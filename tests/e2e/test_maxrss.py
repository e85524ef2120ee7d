"""A node that exits on ``--maxrss`` mid-crawl, as Splash does on long crawls.

How Splash does it (``splash/server.py``, ``monitor_maxrss``): a Twisted
``LoopingCall(check).start(60, now=False)``, so the first check comes 60 s
after start; when the peak RSS is over the limit it logs "maxrss exceeded",
stops the reactor (the port closes and every render in flight is cut off),
and would ``os._exit(0)`` two seconds later if the reactor had not stopped.
Seen here: the reactor stops, Splash ends the Xvfb it started while Qt is
still connected to it, and Qt exits the process with status 1 ("XIO: fatal
IO error") within milliseconds of the check.

There is no honest way to make the check come sooner without patching
Splash, so this test pays for it: it starts a node whose limit (100 MB) is
below what a fresh node uses (about 250 MB peak), sleeps until shortly before
the first check, and crawls through that node and a healthy one with a crawl
that lasts well past the check. The sleep (about 50 s) is most of this
tier's time; the measurements report it.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import pytest

from scripts.splash import RealSplashNode, SplashInstall
from tests.crawl_helpers import run_crawl
from tests.e2e.conftest import make_node
from tests.e2e.helpers import (
    assert_nothing_lost,
    fault_cost,
    js_pages,
    log_events,
    node_stat,
    settings_for,
)
from tests.e2e.site import JsSite

pytestmark = pytest.mark.e2e

MAXRSS_MB = 100
CHECK_PERIOD = 60.0  # splash/server.py: LoopingCall(check_maxrss).start(60, now=False)
# The crawl starts this long before the earliest moment of the check, and is
# long enough to run well past the latest one: Scrapy's start-up time (1 to 3 s)
# cannot make it miss the exit.
LEAD = 8.0
PAGES = 240
WAIT = {"wait": 0.6}


class ExitWatch:
    """Watches the node from a thread during the crawl; records when it exited."""

    def __init__(self, node: RealSplashNode, limit: float) -> None:
        self.node = node
        self.limit = limit
        self.exit_at: float | None = None
        self.exit_monotonic: float | None = None
        self.exit_code: int | None = None
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def join(self) -> None:
        self._thread.join(self.limit + 10)

    def _run(self) -> None:
        deadline = time.monotonic() + self.limit
        while time.monotonic() < deadline:
            if not self.node.running:
                self.exit_at = time.time()
                self.exit_monotonic = time.monotonic()
                self.exit_code = self.node.wait_exit(5.0)
                return
            time.sleep(0.02)


def test_node_exiting_on_maxrss_loses_nothing(
    nodes: list[RealSplashNode],
    site: JsSite,
    splash_install: SplashInstall,
    splash_logs: Path,
    measurements: dict[str, Any],
) -> None:
    healthy = nodes[0]
    node = make_node(splash_install, splash_logs, "maxrss", maxrss_mb=MAXRSS_MB)
    try:
        node.start()
        assert node.spawned_at is not None
        # The check is armed during start-up, before /_ping answers: not before
        # spawn + 60 s, not after ready + 60 s.
        earliest_check = node.spawned_at + CHECK_PERIOD
        idle = max(0.0, earliest_check - LEAD - time.monotonic())
        time.sleep(idle)
        assert node.running, f"the node exited before the crawl:\n{node.log_tail()}"
        watch = ExitWatch(node, limit=LEAD + 40)
        watch.start()
        result = run_crawl(
            settings_for([healthy, node]), js_pages(site, PAGES, args=WAIT), timeout=180
        )
        watch.join()
        assert watch.exit_at is not None, f"the node did not exit:\n{node.log_tail()}"
        # Exited by itself, not killed by a signal. Splash means status 0, but
        # its reactor stops cleanly, which ends the Xvfb it started while Qt
        # is still connected, and Qt exits 1 on the broken X connection
        # ("XIO: fatal IO error"): 1 is what this setup gives.
        assert watch.exit_code in (0, 1), (watch.exit_code, node.log_tail())
        assert "maxrss exceeded" in node.log_path.read_text()
        assert not node.running and not node.xvfb_alive
        assert_nothing_lost(result, PAGES)
        assert node_stat(result, node, "downs") == 1
        downs = log_events(result.log, f"Splash node {node.url} is DOWN")
        assert node_stat(result, healthy, "downs") == 0
        assert watch.exit_monotonic is not None
        after_exit = [i for i in result.items if i["at"] > watch.exit_monotonic]
        assert after_exit, "the crawl should have gone on after the exit"
        assert all(i["node"] == healthy.url for i in after_exit)
        retried = [i for i in result.items if len(i["attempts"]) > 1]
        # The node had its 5 slots busy all along: the exit cut renders off.
        assert retried, "renders were in flight when the node exited"
        assert all(i["attempts"][0][0] == node.url for i in retried)
        measurements["fault_maxrss"] = {
            "idle_wait_s": round(idle, 1),
            "exit_after_spawn_s": round((watch.exit_monotonic or 0) - node.spawned_at, 1),
            "exit_code": watch.exit_code,
            # Splash stops listening at the check and exits up to 2 s later:
            # the node may be DOWN before its process is gone (negative).
            "down_minus_exit_s": round(downs[0] - watch.exit_at, 2) if downs else None,
            **fault_cost(result, [healthy, node]),
        }
    finally:
        node.stop()
