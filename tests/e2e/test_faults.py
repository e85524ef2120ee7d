"""Node faults during real crawls through real Splash nodes: every page is
still scraped, rendered, once, and the cluster's stats show what it cost.

Each fault waits until the node has renders in flight (``Fault``), so that a
kill or a freeze really catches work on the node. Renders carry a ``wait`` of
0.4 s so that they last long enough to be caught.
"""

from __future__ import annotations

import time
from typing import Any

import pytest

from scripts.splash import RealSplashNode
from tests.crawl_helpers import run_crawl
from tests.e2e.helpers import (
    Fault,
    assert_clean,
    assert_nothing_lost,
    down_delay,
    fault_cost,
    js_pages,
    node_stat,
    settings_for,
    up_time,
)
from tests.e2e.site import JsSite

pytestmark = pytest.mark.e2e

WAIT = {"wait": 0.4}


def rendered_by_after(items: list[dict[str, Any]], node: RealSplashNode, after: float) -> int:
    """Items that ``node`` answered after the monotonic time ``after``."""
    return sum(1 for i in items if i["node"] == node.url and i["at"] > after)


def test_node_killed_mid_crawl_loses_nothing(
    nodes: list[RealSplashNode], site: JsSite, measurements: dict[str, Any]
) -> None:
    victim, other = nodes
    fault = Fault(victim, victim.kill, min_active=3)
    result = run_crawl(settings_for(nodes), js_pages(site, 60, args=WAIT), during=[(0.2, fault)])
    fault.check()
    assert fault.at is not None
    assert_nothing_lost(result, 60)
    retried = [i for i in result.items if len(i["attempts"]) > 1]
    assert retried, "the kill should have caught renders in flight"
    assert all(i["attempts"][0][0] == victim.url for i in retried)
    assert all(i["node"] == other.url for i in retried)
    assert node_stat(result, victim, "downs") == 1
    assert node_stat(result, other, "downs") == 0
    # The kill left the node's Xvfb behind; kill() ended it by its pid.
    assert not victim.running and not victim.xvfb_alive
    measurements["fault_sigkill"] = {
        "in_flight_at_fault": fault.active_at_fault,
        "down_after_s": down_delay(result, victim, fault.at),
        **fault_cost(result, nodes),
    }


def test_node_stopped_and_restarted_loses_nothing(
    nodes: list[RealSplashNode], site: JsSite, measurements: dict[str, Any]
) -> None:
    victim, other = nodes
    timings: dict[str, float] = {}

    def stop_and_restart() -> None:
        begun = time.monotonic()
        victim.terminate()
        timings["sigterm_exit_s"] = time.monotonic() - begun
        victim.start()
        timings["restart_s"] = time.monotonic() - begun

    fault = Fault(victim, stop_and_restart, min_active=3)
    result = run_crawl(settings_for(nodes), js_pages(site, 150, args=WAIT), during=[(0.2, fault)])
    fault.check()
    assert fault.at is not None and fault.done_monotonic is not None
    assert_nothing_lost(result, 150)
    assert node_stat(result, victim, "downs") == 1
    assert node_stat(result, victim, "ups") == 1
    assert node_stat(result, other, "downs") == 0
    back = rendered_by_after(result.items, victim, fault.done_monotonic)
    assert back > 0, "the restarted node should have rendered again before the crawl ended"
    up = up_time(result, victim, fault.at)
    measurements["fault_sigterm_restart"] = {
        "in_flight_at_fault": fault.active_at_fault,
        "down_after_s": down_delay(result, victim, fault.at),
        "sigterm_exit_s": round(timings["sigterm_exit_s"], 2),
        "restart_s": round(timings["restart_s"], 2),
        "up_after_s": round(up - fault.at, 2) if up else None,
        "rendered_after_restart": back,
        **fault_cost(result, nodes),
    }


def test_node_frozen_goes_down_and_comes_back(
    nodes: list[RealSplashNode], site: JsSite, measurements: dict[str, Any]
) -> None:
    victim, other = nodes
    freeze_seconds = 3.0

    def freeze_then_thaw() -> None:
        victim.freeze()
        time.sleep(freeze_seconds)
        victim.unfreeze()

    fault = Fault(victim, freeze_then_thaw, min_active=3)
    settings = settings_for(
        nodes,
        SPLASH_CLUSTER_HEALTH_INTERVAL=0.5,
        SPLASH_CLUSTER_HEALTH_TIMEOUT=0.5,
        SPLASH_CLUSTER_FALL=2,
    )
    result = run_crawl(settings, js_pages(site, 150, args=WAIT), during=[(0.2, fault)])
    fault.check()
    assert fault.at is not None and fault.done_monotonic is not None
    assert_nothing_lost(result, 150)
    assert node_stat(result, victim, "downs") == 1
    assert node_stat(result, victim, "ups") == 1
    assert node_stat(result, other, "downs") == 0
    # The renders caught by the freeze moved to the other node when it went DOWN.
    assert node_stat(result, victim, "abandoned") >= 1
    moved = [i for i in result.items if len(i["attempts"]) > 1]
    assert moved and all(i["attempts"][0][0] == victim.url for i in moved)
    delay = down_delay(result, victim, fault.at)
    assert delay is not None and delay < freeze_seconds, delay
    back = rendered_by_after(result.items, victim, fault.done_monotonic)
    assert back > 0, "the thawed node should have rendered again before the crawl ended"
    up = up_time(result, victim, fault.at)
    measurements["fault_sigstop"] = {
        "in_flight_at_fault": fault.active_at_fault,
        "down_after_s": delay,
        "up_after_sigcont_s": round(up - fault.at - freeze_seconds, 2) if up else None,
        "rendered_after_sigcont": back,
        **fault_cost(result, nodes),
    }


def test_page_slow_everywhere_ends_as_504_and_blames_no_node(
    nodes: list[RealSplashNode], site: JsSite, measurements: dict[str, Any]
) -> None:
    described = [*js_pages(site, 4), {"url": site.slow(10), "args": {"timeout": 1}}]
    settings = settings_for(
        nodes,
        RETRY_ENABLED=False,
        # The whole cluster request (4 attempts of 1 s) fits in download_timeout.
        SPLASH_CLUSTER_EXTRA_TIMEOUT=10,
    )
    result = run_crawl(settings, described)
    assert_clean(result)
    items = result.by_index()
    assert sorted(items) == [0, 1, 2, 3, 4]
    assert all(items[i]["status"] == 200 for i in range(4))
    slow = items[4]
    assert slow["status"] == 504, slow
    assert slow["class"] == "SplashJsonResponse"
    assert slow["data"]["type"] == "GlobalTimeoutError"
    assert slow["data"]["info"]["timeout"] == 1
    outcomes = [a[1] for a in slow["attempts"]]
    assert outcomes == ["504 GlobalTimeoutError"] * 4, slow["attempts"]
    assert {a[0] for a in slow["attempts"]} == {n.url for n in nodes}
    assert result.stats["splash_cluster/responses/504"] == 1
    assert sum(node_stat(result, n, "render_timeouts") for n in nodes) == 4
    for node in nodes:
        assert node_stat(result, node, "downs") == 0
        assert node_stat(result, node, "failures") == 0
    assert "is DOWN" not in result.log
    measurements["slow_page_504"] = {
        "attempts": len(slow["attempts"]),
        "seconds_to_final_504": round(sum(a[2] for a in slow["attempts"]), 2),
        **fault_cost(result, nodes),
    }
