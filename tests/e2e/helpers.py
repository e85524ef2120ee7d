"""What the e2e tests share: crawl settings for real nodes, the checks that
nothing was lost, fault triggers that wait for renders in flight, and the
numbers a crawl's log and stats give about a fault."""

from __future__ import annotations

import json
import re
import statistics
import time
from collections.abc import Callable, Sequence
from typing import Any

from scripts.splash import RealSplashNode, http_get
from tests.crawl_helpers import CrawlResult
from tests.e2e.site import JsSite, marker

# Epoch seconds on every log line, so that a DOWN line can be set against the
# moment the test hurt the node (both clocks are the machine's).
LOG_FORMAT = "%(created).3f [%(name)s] %(levelname)s: %(message)s"
CLEAN_EXIT_MARKERS = ("Traceback", "Event loop is closed", "Unclosed", "never awaited")


def settings_for(nodes: Sequence[RealSplashNode], **extra: Any) -> dict[str, Any]:
    """The add-on in front of ``nodes``, with one request per slot of the cluster."""
    slots = sum(n.slots for n in nodes)
    return {
        "SPLASH_URLS": [n.url for n in nodes],
        "SPLASH_CLUSTER_MAXCONN": max(n.slots for n in nodes),
        "SPLASH_CLUSTER_HEALTH_INTERVAL": 0.5,
        "SPLASH_CLUSTER_HEALTH_TIMEOUT": 1.0,
        "SPLASH_CLUSTER_FALL": 2,
        "CONCURRENT_REQUESTS": slots,
        "CONCURRENT_REQUESTS_PER_DOMAIN": slots,
        "HTTPERROR_ALLOW_ALL": True,
        "LOG_FORMAT": LOG_FORMAT,
        **extra,
    }


def js_pages(site: JsSite, n: int, **extra: Any) -> list[dict[str, Any]]:
    """``n`` page descriptions for the crawl spider (``tests/crawl/spiders.py``)."""
    return [{"url": site.page(i), **extra} for i in range(n)]


def errors(result: CrawlResult) -> list[dict[str, Any]]:
    return [item for item in result.items if "error" in item]


def assert_clean(result: CrawlResult) -> None:
    """The crawl finished and its process exited clean."""
    assert result.returncode == 0, result.log[-4000:]
    assert result.finish_reason == "finished", result.log[-4000:]
    for bad in CLEAN_EXIT_MARKERS:
        assert bad not in result.log, result.log[-4000:]


def assert_nothing_lost(result: CrawlResult, n: int, *, rendered: bool = True) -> None:
    """Every page came back once, as a 200, rendered (its script ran)."""
    assert_clean(result)
    assert not errors(result), errors(result)[:3]
    assert sorted(item["index"] for item in result.items) == list(range(n))
    bad = [item for item in result.items if item["status"] != 200]
    assert not bad, [(item["index"], item["status"], item["attempts"]) for item in bad][:5]
    if rendered:
        unrendered = [i["index"] for i in result.items if marker(i["index"]) not in i["text"]]
        assert not unrendered, unrendered


def node_stat(result: CrawlResult, node: RealSplashNode, key: str) -> int:
    return int(result.stats.get(f"splash_cluster/nodes/{node.label}/{key}", 0))


def active_renders(node: RealSplashNode) -> int:
    """Renders the node says it is running (its /_debug), 0 if it does not answer."""
    try:
        status, body = http_get(f"{node.url}/_debug", 1.0)
        return len(json.loads(body)["active"]) if status == 200 else 0
    except (OSError, ValueError, KeyError):
        return 0


class Fault:
    """A fault injected during a crawl once the node has renders in flight.

    ``run_crawl`` starts its ``during`` actions on a timer from the moment the
    crawler process is spawned; Scrapy takes a second or more to start, so a
    fixed delay would hit an idle node on a slow day. The trigger waits until
    the node reports ``min_active`` renders, then acts, and records when
    (epoch seconds, comparable with the crawl's log lines) and what it did.
    """

    def __init__(
        self,
        node: RealSplashNode,
        action: Callable[[], None],
        *,
        min_active: int = 2,
        wait_limit: float = 30.0,
    ) -> None:
        self.node = node
        self.action = action
        self.min_active = min_active
        self.wait_limit = wait_limit
        self.at: float | None = None
        self.active_at_fault = 0
        self.done_at: float | None = None
        self.done_monotonic: float | None = None
        self.error: BaseException | None = None

    def __call__(self) -> None:
        try:
            deadline = time.monotonic() + self.wait_limit
            while time.monotonic() < deadline:
                self.active_at_fault = active_renders(self.node)
                if self.active_at_fault >= self.min_active:
                    break
                time.sleep(0.02)
            self.at = time.time()
            self.action()
            self.done_at = time.time()
            # The crawl's items carry time.monotonic() of the crawler process:
            # the same clock, machine-wide on Linux.
            self.done_monotonic = time.monotonic()
        except BaseException as exc:  # reported by the test, not lost in a timer thread
            self.error = exc

    def check(self) -> None:
        assert self.error is None, f"the fault action failed: {self.error!r}"
        assert self.at is not None, "the fault never ran"
        assert self.active_at_fault >= self.min_active, (
            f"{self.node} never had {self.min_active} renders in flight"
        )


_LINE = re.compile(r"^(\d+\.\d+) \[[^\]]*\] \w+: (.*)$")


def log_events(log: str, text: str) -> list[float]:
    """Epoch times of the crawl's log lines containing ``text`` (see LOG_FORMAT)."""
    times = []
    for line in log.splitlines():
        match = _LINE.match(line)
        if match and text in match.group(2):
            times.append(float(match.group(1)))
    return times


def down_delay(result: CrawlResult, node: RealSplashNode, since: float) -> float | None:
    """Seconds from ``since`` to the first 'is DOWN' line of ``node``."""
    times = [t for t in log_events(result.log, f"Splash node {node.url} is DOWN") if t >= since]
    return round(times[0] - since, 3) if times else None


def up_time(result: CrawlResult, node: RealSplashNode, since: float) -> float | None:
    """Epoch time of the first 'is UP again' line of ``node`` after ``since``."""
    times = [t for t in log_events(result.log, f"Splash node {node.url} is UP") if t >= since]
    return times[0] if times else None


def fault_cost(result: CrawlResult, nodes: Sequence[RealSplashNode]) -> dict[str, Any]:
    """What a fault cost the crawl, from its stats."""
    stats = result.stats
    return {
        "requests": stats.get("splash_cluster/requests"),
        "attempts_total": stats.get("splash_cluster/attempts"),
        "retries": stats.get("splash_cluster/retries", 0),
        "redispatches": stats.get("splash_cluster/redispatches", 0),
        "retried_items": sum(1 for i in result.items if len(i.get("attempts") or ()) > 1),
        "per_node": {
            n.label: {
                key: node_stat(result, n, key)
                for key in ("requests", "failures", "abandoned", "downs", "ups")
            }
            for n in nodes
        },
        "crawl_seconds": round(float(stats.get("elapsed_time_seconds", 0)), 2),
    }


def median_ms(values: Sequence[float]) -> float:
    return round(statistics.median(values) * 1000, 1)
