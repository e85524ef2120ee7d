"""Scrapy's HTTP cache with Splash requests, in real crawls against mock
nodes: answers are stored under the page's fingerprint (never the node's),
so a second crawl through other nodes replays them; a 498 (the node lost its
saved arguments) is never stored."""

from __future__ import annotations

from tests.crawl_helpers import run_crawl
from tests.test_scrapy import assert_clean, settings_for

# A key no node saved: the node answers 498 ExpiredArguments.
UNKNOWN_KEY = "0" * 40


def _pages() -> list[dict]:
    return [{"url": f"http://example.com/cached/{i}"} for i in range(3)] + [
        {
            "url": "http://example.com/expired",
            "endpoint": "execute",
            "args": {"load_args": {"lua_source": UNKNOWN_KEY}},
        }
    ]


def test_splash_answers_replay_from_the_cache_on_other_nodes_and_498_is_not_stored(
    splash_nodes, tmp_path
):
    first, second = splash_nodes(2)
    cache = {"HTTPCACHE_ENABLED": True, "HTTPCACHE_DIR": str(tmp_path / "httpcache")}
    before = run_crawl(settings_for([first], **cache), _pages())
    assert_clean(before)
    assert sorted(item["status"] for item in before.items) == [200, 200, 200, 498]
    assert first.stats()["requests"] == 4

    after = run_crawl(settings_for([second], **cache), _pages())
    assert_clean(after)
    # Only the 498 went to a node again; the pages came from the cache,
    # unwrapped into the same Splash responses.
    assert [e["endpoint"].strip("/") for e in second.stats()["log"]] == ["execute"]
    assert after.stats.get("httpcache/hit") == 3
    old, new = before.by_index(), after.by_index()
    for index in range(3):
        assert new[index]["class"] == old[index]["class"] == "SplashTextResponse"
        assert new[index]["text"] == old[index]["text"]
        assert new[index]["url"] == old[index]["url"]
    assert new[3]["status"] == 498
