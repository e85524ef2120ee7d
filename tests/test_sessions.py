"""Splash sessions and the argument cache on a cluster, in real crawls
against mock nodes that implement save_args / load_args / 498 per node."""

from __future__ import annotations

import threading
from http.cookiejar import CookieJar
from typing import Any

from scrapy import Request
from scrapy_splash_cluster import SplashRequest
from scrapy_splash_cluster.argcache import ArgumentStore, json_hash
from scrapy_splash_cluster.cookies import SplashCookiesMiddleware, cookie_to_har, har_to_cookie

from tests.crawl_helpers import run_crawl, wait_for
from tests.test_scrapy import assert_clean, errors, settings_for

LUA_10KB = "function main(splash, args)\n" + "  -- padding\n" * 850 + "  return 1\nend\n"


def test_har_cookies_round_trip():
    har = {
        "name": "sid",
        "value": "1",
        "path": "/",
        "domain": "example.com",
        "expires": "2030-01-02T03:04:05Z",
        "httpOnly": True,
        "secure": False,
    }
    assert cookie_to_har(har_to_cookie(har)) == har


def test_session_jar_follows_the_script_and_forks():
    middleware = SplashCookiesMiddleware()
    first = SplashRequest("http://example.com/a", endpoint="execute", args={"lua_source": "x"})
    middleware.process_request(first)
    assert first.meta["_splash_session_cookies"] == []
    from scrapy_splash_cluster.response import SplashJsonResponse

    def answer(request: Request, cookies: list[dict[str, Any]]) -> SplashJsonResponse:
        return SplashJsonResponse(
            request.url, request=request, body=b"{}", data={"cookies": cookies}
        )

    set_cookie = [{"name": "sid", "value": "1", "domain": "example.com", "path": "/"}]
    response = middleware.process_response(first, answer(first, set_cookie))
    assert isinstance(response.cookiejar, CookieJar)
    second = SplashRequest("http://example.com/b", endpoint="execute", args={"lua_source": "x"})
    middleware.process_request(second)
    assert [c["value"] for c in second.meta["_splash_session_cookies"]] == ["1"]
    # The script deleted the cookie it was sent: the jar drops it too.
    middleware.process_response(second, answer(second, []))
    fork = SplashRequest(
        "http://example.com/c",
        endpoint="execute",
        args={"lua_source": "x"},
        meta={"splash": {"session_id": "default", "new_session_id": "other", "args": {}}},
    )
    middleware.process_request(fork)
    assert fork.meta["_splash_session_cookies"] == []
    # render.html keeps no session, as in scrapy-splash.
    plain = SplashRequest("http://example.com/d")
    middleware.process_request(plain)
    assert "_splash_session_cookies" not in plain.meta


def test_argument_store_plans_keyed_bodies_only_for_holders():
    store = ArgumentStore()
    options = {"cache_args": ["lua_source"]}
    plan = store.plan(options, {"lua_source": LUA_10KB, "url": "u"})
    assert plan is not None and plan.holders == [] and plan.keyed_args is None
    assert plan.full_args["save_args"] == ["lua_source"]
    key = json_hash(LUA_10KB)
    store.learn(plan, "http://n1", f"lua_source={key}".encode(), [("http://n1", "200", 0.1)])
    plan = store.plan(options, {"lua_source": LUA_10KB, "url": "u"})
    assert plan.holders == ["http://n1"]
    assert plan.keyed_args == {"url": "u", "load_args": {"lua_source": key}}
    # A 498 on n1 means it lost the value: no more keyed bodies for it.
    store.learn(plan, "http://n1", None, [("http://n1", "498 ExpiredArguments", 0.1)])
    assert store.plan(options, {"lua_source": LUA_10KB, "url": "u"}).holders == []


def test_session_cookies_carry_across_nodes(splash_nodes, login_site):
    nodes = splash_nodes(2, render_mode="fetch")
    lua = "function main(splash, args) ... end"
    account = {"url": f"{login_site}/account", "endpoint": "execute", "args": {"lua_source": lua}}
    described = [
        {
            "url": f"{login_site}/login",
            "endpoint": "execute",
            "args": {"lua_source": lua},
            "then": account,
        },
    ]
    result = run_crawl(settings_for(nodes, CONCURRENT_REQUESTS=1), described)
    assert_clean(result)
    login, account = sorted(result.items, key=lambda i: i["index"])
    assert login["data"]["cookies"][0]["name"] == "sid"
    assert "Welcome back" in account["text"]
    assert login["node"] != account["node"], "the session must survive a change of node"


def statuses(node) -> list[Any]:
    return [entry["status"] for entry in node.stats()["log"]]


def restart_holder_mid_crawl(nodes, before_restart: list[int]) -> None:
    """Restarts nodes[1] once it holds the saved script, and makes sure a
    request by key reaches it afterwards: the other nodes render slowly
    until the restarted one has answered a 498, so the crawl cannot end
    before the event the test is about."""
    holder, others = nodes[1], (nodes[0], nodes[2])
    wait_for(lambda: statuses(holder).count(200) >= 10, "renders on the holder")
    for node in others:
        node.set_fault("latency", latency=0.4)
    before_restart.append(holder.stats()["bytes_received"])
    holder.restart()
    try:
        wait_for(lambda: 498 in statuses(holder), "a request by key on the restarted node")
    finally:
        for node in others:
            node.set_fault("none")


def test_cache_args_on_a_cluster_with_a_restart(splash_nodes):
    nodes = splash_nodes(3, latency=0.05)
    count = 300
    pages = [
        {
            "url": f"http://example.com/{i}",
            "endpoint": "execute",
            "args": {"lua_source": LUA_10KB},
            "cache_args": ["lua_source"],
        }
        for i in range(count)
    ]
    before_restart: list[int] = []
    controller = threading.Thread(target=restart_holder_mid_crawl, args=(nodes, before_restart))
    controller.start()
    try:
        result = run_crawl(settings_for(nodes, CONCURRENT_REQUESTS=6), pages)
    finally:
        controller.join(timeout=60)
    assert_clean(result)
    assert not errors(result)
    assert len(result.items) == count
    assert before_restart, "the crawl ended before the restart"
    received = sum(n.stats()["bytes_received"] for n in nodes) + before_restart[0]
    every_time = count * len(LUA_10KB)
    # Measured: about 5 % of sending the script every time.
    assert received < every_time / 5, (received, every_time)
    stats = result.stats
    assert stats["splash_cluster/args/sent_by_key"] > count * 0.8
    # The restarted node lost the saved script: 498s, resent at once.
    restarted = f"splash_cluster/nodes/127.0.0.1:{nodes[1].port}"
    assert stats["splash_cluster/args/expired"] >= 1
    assert stats[f"{restarted}/expired_args"] == stats["splash_cluster/args/expired"]
    # A resend after a 498 is not a retry: only attempts after another
    # outcome count in splash_cluster/retries.
    retries = sum(
        1
        for item in result.items
        for previous in item["attempts"][:-1]
        if not previous[1].startswith("498")
    )
    assert stats.get("splash_cluster/retries", 0) == retries
    # Failures are the renders the restart cut short, never the 498s.
    attempts = [a for item in result.items for a in item["attempts"]]
    cut_short = [
        a
        for a in attempts
        if a[0] == nodes[1].url and a[1][:3] not in ("200", "498", "aba")  # abandoned: no blame
    ]
    assert stats[f"{restarted}/failures"] == len(cut_short)
    for node in (nodes[0], nodes[2]):
        assert stats[f"splash_cluster/nodes/127.0.0.1:{node.port}/failures"] == 0
