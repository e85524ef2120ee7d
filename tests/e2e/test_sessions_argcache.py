"""Sessions and the argument cache against real Splash nodes: Splash's own
save_args / load_args / 498 and its cookie functions, on a cluster."""

from __future__ import annotations

from scripts.splash import RealSplashNode
from tests.crawl_helpers import run_crawl
from tests.e2e.helpers import assert_clean, assert_nothing_lost, errors, node_stat, settings_for
from tests.e2e.site import JsSite, marker

# A real script of about 10 KB: most of it comments, as large scripts are.
LUA_10KB = (
    "function main(splash, args)\n"
    "  assert(splash:go(args.url))\n"
    "  splash:wait(args.wait)\n"
    + "  -- a comment line that makes the script as large as real ones get\n" * 140
    + "  return {html = splash:html()}\nend\n"
)

SESSION_LUA = """
function main(splash, args)
  splash:init_cookies(args.cookies)
  assert(splash:go(args.url))
  return {html = splash:html(), cookies = splash:get_cookies()}
end
"""


def test_cache_args_with_real_nodes_and_a_restart(
    nodes: list[RealSplashNode], site: JsSite
) -> None:
    assert len(LUA_10KB) > 9_000
    count = 200
    pages = [
        {
            "url": site.page(i),
            "endpoint": "execute",
            "args": {"lua_source": LUA_10KB, "wait": 0.2},
            "cache_args": ["lua_source"],
        }
        for i in range(count)
    ]
    restarted: list[bool] = []

    def restart() -> None:
        nodes[1].restart()
        restarted.append(True)

    result = run_crawl(settings_for(nodes), pages, during=[(1.5, restart)])
    assert restarted, "the crawl ended before the restart"
    assert_nothing_lost(result, count)
    for item in result.items:
        assert marker(item["index"]) in item["text"]
    stats = result.stats
    # Most requests sent the key, not the script; a node that restarted lost
    # what it saved and answered 498, which cost a resend, not a failure.
    assert stats["splash_cluster/args/sent_by_key"] >= count // 2, stats
    assert stats["splash_cluster/args/expired"] >= 1, stats
    for node in nodes:
        assert node_stat(result, node, "expired_args") == sum(
            1 for i in result.items for a in i["attempts"] if a[0] == node.url and a[1][:3] == "498"
        )


def test_session_cookies_with_real_nodes(nodes: list[RealSplashNode], login_site: str) -> None:
    account = {
        "url": f"{login_site}/account",
        "endpoint": "execute",
        "args": {"lua_source": SESSION_LUA},
    }
    login = {
        "url": f"{login_site}/login",
        "endpoint": "execute",
        "args": {"lua_source": SESSION_LUA},
        "then": account,
    }
    result = run_crawl(settings_for(nodes, CONCURRENT_REQUESTS=1), [login])
    assert_clean(result)
    assert not errors(result)
    first, second = sorted(result.items, key=lambda i: i["index"])
    assert [c["name"] for c in first["data"]["cookies"]] == ["sid"]
    assert "Welcome back" in second["text"]
    assert first["node"] != second["node"], "the session must survive a change of node"
