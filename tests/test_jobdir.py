"""Pause and resume with JOBDIR, in real crawls against mock nodes that
fetch a real login site: a crawl stopped mid-way (CLOSESPIDER_PAGECOUNT)
and started again with the same JOBDIR renders every page once, its queued
cache_args requests find their argument values, its session keeps its
cookie, and the values no request refers to any more are freed."""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

from tests.crawl_helpers import run_crawl
from tests.test_scrapy import assert_clean, errors, settings_for

LUA_10KB = "function main(splash, args)\n" + "  -- padding\n" * 850 + "  return 1\nend\n"
ACCOUNTS = 20


def _pages(site: str) -> list[dict[str, Any]]:
    def script(url: str, priority: int) -> dict[str, Any]:
        return {
            "url": url,
            "endpoint": "execute",
            "args": {"lua_source": LUA_10KB},
            "cache_args": ["lua_source"],
            "priority": priority,
            # The resumed crawl yields its start requests again: the
            # dupefilter (kept in JOBDIR too) lets through only the new ones.
            "dont_filter": False,
        }

    return [script(f"{site}/login", 10)] + [
        script(f"{site}/account?page={i}", 0) for i in range(ACCOUNTS)
    ]


def _state(jobdir: Path) -> dict[str, Any]:
    with (jobdir / "spider.state").open("rb") as f:
        return pickle.load(f)


def test_a_paused_crawl_resumes_with_its_arguments_and_sessions(splash_nodes, login_site, tmp_path):
    nodes = splash_nodes(2, render_mode="fetch")
    jobdir = tmp_path / "job"
    settings = settings_for(nodes, JOBDIR=str(jobdir), CONCURRENT_REQUESTS=1)
    first = run_crawl({**settings, "CLOSESPIDER_PAGECOUNT": 6}, _pages(login_site))
    assert first.returncode == 0, first.log[-3000:]
    assert first.finish_reason == "closespider_pagecount"
    assert not errors(first), errors(first)
    paused = _state(jobdir)
    # Queued requests still refer to the script: its value waits for them.
    assert list(paused["_splash_argument_values"].values()) == [LUA_10KB]
    assert [c.name for c in paused["_splash_cookie_jars"]["default"]] == ["sid"]

    second = run_crawl(settings, _pages(login_site))
    assert_clean(second)
    assert not errors(second), errors(second)
    indices = [item["index"] for item in first.items + second.items]
    assert sorted(indices) == list(range(ACCOUNTS + 1)), sorted(indices)
    assert second.items, "the resumed crawl rendered nothing"
    accounts = [i for i in first.items + second.items if "/account" in i["url"]]
    assert len(accounts) == ACCOUNTS
    for item in accounts:
        assert item["status"] == 200 and "Welcome back" in item["text"], item["url"]
    done = _state(jobdir)
    assert done["_splash_argument_values"] == {}
    assert done["_splash_argument_refs"] == {}
    assert [c.name for c in done["_splash_cookie_jars"]["default"]] == ["sid"]


def test_retried_requests_keep_their_values_until_the_last_attempt(splash_nodes, tmp_path):
    """Scrapy's RetryMiddleware sends the same request again: it refers to
    its value until its last attempt, and then lets it go."""
    (node,) = splash_nodes(1)
    node.set_fault("504")
    jobdir = tmp_path / "job"
    pages = [
        {
            "url": f"http://example.com/retried/{i}",
            "endpoint": "execute",
            "args": {"lua_source": LUA_10KB},
            "cache_args": ["lua_source"],
        }
        for i in range(3)
    ]
    settings = settings_for([node], JOBDIR=str(jobdir), SPLASH_CLUSTER_RETRIES=0, RETRY_TIMES=2)
    result = run_crawl(settings, pages)
    assert_clean(result)
    assert not errors(result), errors(result)
    assert sorted(item["status"] for item in result.items) == [504, 504, 504]
    assert result.stats["retry/count"] == 6
    assert node.stats()["requests"] == 9
    done = _state(jobdir)
    assert done["_splash_argument_values"] == {}
    assert done["_splash_argument_refs"] == {}
