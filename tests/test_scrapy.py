"""Real Scrapy crawls (each in its own process) with the add-on, against mock
Splash nodes: spreading, a node killed mid-crawl, download slots, cache keys,
endpoints and response classes, POST pages, errors, settings, and requests
that are not for Splash."""

from __future__ import annotations

import base64
import itertools
import json
from collections import Counter
from typing import Any

import pytest

from tests.crawl_helpers import Crawl, CrawlResult, run_crawl, wait_for

CLEAN_EXIT_MARKERS = ("Traceback", "Event loop is closed", "Unclosed", "never awaited")


def settings_for(nodes, **extra: Any) -> dict[str, Any]:
    return {
        "SPLASH_URLS": [n.url for n in nodes],
        "SPLASH_CLUSTER_HEALTH_INTERVAL": 0.2,
        "SPLASH_CLUSTER_FALL": 2,
        "CONCURRENT_REQUESTS": 16,
        "CONCURRENT_REQUESTS_PER_DOMAIN": 16,
        "HTTPERROR_ALLOW_ALL": True,
        **extra,
    }


def pages(n: int, domain: str = "example.com", **extra: Any) -> list[dict[str, Any]]:
    return [{"url": f"http://{domain}/page/{i}", **extra} for i in range(n)]


def assert_clean(result: CrawlResult) -> None:
    assert result.returncode == 0, result.log[-3000:]
    assert result.finish_reason == "finished", result.log[-3000:]
    for marker in CLEAN_EXIT_MARKERS:
        assert marker not in result.log, result.log[-3000:]


def errors(result: CrawlResult) -> list[dict[str, Any]]:
    return [i for i in result.items if "error" in i]


def arrival_gaps(nodes) -> list[float]:
    """Seconds between consecutive renders arriving at any of the nodes."""
    arrivals = [e["received_at"] for e in render_log(nodes)]
    return [b - a for a, b in itertools.pairwise(arrivals)]


def render_log(nodes) -> list[dict[str, Any]]:
    return sorted(
        (entry for node in nodes for entry in node.stats()["log"]),
        key=lambda e: e["received_at"],
    )


def test_crawl_spreads_over_nodes_and_reports(splash_nodes):
    nodes = splash_nodes(3, latency=0.05)
    result = run_crawl(settings_for(nodes), pages(30))
    assert_clean(result)
    assert len(result.items) == 30 and not errors(result)
    assert Counter(i["node_div"] for i in result.items).keys() == {"node-1", "node-2", "node-3"}
    item = result.by_index()[7]
    assert item["url"] == "http://example.com/page/7"
    assert item["class"] == "SplashTextResponse"
    assert item["node"] in [n.url for n in nodes]
    assert item["real_url"] == item["node"] + "/render.html"
    stats = result.stats
    assert stats["splash_cluster/requests"] == 30
    assert stats["splash_cluster/responses/200"] == 30
    per_node = [stats[f"splash_cluster/nodes/127.0.0.1:{n.port}/requests"] for n in nodes]
    assert sum(per_node) == 30 and min(per_node) >= 5, per_node
    for node in nodes:
        assert f"Splash node {node.url}: UP, " in result.log


def test_node_killed_mid_crawl_loses_nothing(splash_nodes):
    nodes = splash_nodes(3, latency=0.3)
    crawl = Crawl(settings_for(nodes, CONCURRENT_REQUESTS=9), pages(90))
    # Killed once it has renders in flight and pages are left: the event the
    # test is about, made to happen rather than hoped for on a timer.
    wait_for(
        lambda: (
            nodes[0].stats()["in_progress"] >= 2 and sum(n.stats()["completed"] for n in nodes) >= 9
        ),
        "renders in flight on node-1",
    )
    nodes[0].kill()
    result = crawl.result()
    assert_clean(result)
    assert not errors(result), errors(result)
    assert sorted(i["index"] for i in result.items) == list(range(90))
    assert all(i["status"] == 200 for i in result.items)
    retried = [i for i in result.items if len(i["attempts"]) > 1]
    assert retried, "the kill should have caught renders in flight"
    assert all(i["attempts"][0][0] == nodes[0].url for i in retried)
    assert result.stats[f"splash_cluster/nodes/127.0.0.1:{nodes[0].port}/downs"] == 1
    assert "is DOWN" in result.log


def test_per_domain_slot_limits_splash_requests(splash_nodes):
    nodes = splash_nodes(2, latency=0.2)
    result = run_crawl(settings_for(nodes, CONCURRENT_REQUESTS_PER_DOMAIN=1), pages(6))
    assert_clean(result)
    gaps = arrival_gaps(nodes)
    # One request at a time for the domain: each render starts after the last ended.
    assert min(gaps) >= 0.18, gaps


def test_download_delay_spaces_splash_requests(splash_nodes):
    nodes = splash_nodes(2)
    result = run_crawl(
        settings_for(nodes, DOWNLOAD_DELAY=0.4, RANDOMIZE_DOWNLOAD_DELAY=False),
        pages(5),
    )
    assert_clean(result)
    gaps = arrival_gaps(nodes)
    assert min(gaps) >= 0.35, gaps


def test_slot_policies(splash_nodes):
    nodes = splash_nodes(2, latency=0.3)
    spread = [{"url": f"http://site-{i}.example/"} for i in range(4)]
    per_domain = run_crawl(settings_for(nodes, CONCURRENT_REQUESTS_PER_DOMAIN=1), spread)
    arrivals = [e["received_at"] for e in render_log(nodes)]
    # Four domains, four slots: the renders overlap.
    assert max(arrivals) - min(arrivals) < 0.25, arrivals
    for node in nodes:
        node.reset_stats()
    single = run_crawl(
        settings_for(nodes, CONCURRENT_REQUESTS_PER_DOMAIN=1),
        [{**page, "slot_policy": "single_slot"} for page in spread],
    )
    gaps = arrival_gaps(nodes)
    # One slot for all Splash requests: one at a time.
    assert min(gaps) >= 0.28, gaps
    assert_clean(per_domain)
    assert_clean(single)


def test_cache_keys_do_not_depend_on_the_node(splash_nodes, tmp_path):
    nodes = splash_nodes(3)
    cache = {"HTTPCACHE_ENABLED": True, "HTTPCACHE_DIR": str(tmp_path / "cache")}
    described = [
        *pages(9, args={"wait": 0.01}),
        {"url": "http://example.com/page/0", "args": {"wait": 0.02}},
    ]
    first = run_crawl(settings_for(nodes, **cache), described)
    assert_clean(first)
    served = {node.name: node.stats()["requests"] for node in nodes}
    assert sum(served.values()) == 10
    # Other nodes now: the cache must still answer every page.
    second = run_crawl(settings_for(list(reversed(nodes)), **cache), described)
    assert_clean(second)
    assert second.stats["httpcache/hit"] == 10
    assert {node.name: node.stats()["requests"] for node in nodes} == served
    assert {i["index"]: i["text"] for i in second.items} == {
        i["index"]: i["text"] for i in first.items
    }


def test_duplicate_splash_requests_are_filtered_by_args(splash_nodes):
    nodes = splash_nodes(2)
    described = [
        {"url": "http://example.com/a", "dont_filter": False},
        {"url": "http://example.com/a", "dont_filter": False},
        {"url": "http://example.com/a", "args": {"wait": 0.1}, "dont_filter": False},
        {"url": "http://example.com/a", "endpoint": "render.json", "dont_filter": False},
    ]
    result = run_crawl(settings_for(nodes), described)
    assert_clean(result)
    assert len(result.items) == 3
    assert result.stats["dupefilter/filtered"] == 1


def test_each_endpoint_and_response_class(splash_nodes):
    nodes = splash_nodes(2)
    lua = "function main(splash) return {html=splash:html()} end"
    described = [
        {"url": "http://example.com/html"},
        {"url": "http://example.com/png", "endpoint": "render.png"},
        {"url": "http://example.com/jpeg", "endpoint": "render.jpeg"},
        {"url": "http://example.com/json", "endpoint": "render.json", "args": {"html": 1}},
        {"url": "http://example.com/har", "endpoint": "render.har"},
        {"url": "http://example.com/exec", "endpoint": "execute", "args": {"lua_source": lua}},
        {"url": "http://example.com/run", "endpoint": "run", "args": {"lua_source": lua}},
        {
            "url": "http://example.com/nomagic",
            "endpoint": "render.json",
            "args": {"html": 1},
            "magic_response": False,
        },
        {"url": "http://example.com/raw", "dont_process_response": True},
    ]
    result = run_crawl(settings_for(nodes), described)
    assert_clean(result)
    items = result.by_index()
    assert not errors(result)
    assert items[0]["class"] == "SplashTextResponse"
    assert "http://example.com/html" in items[0]["text"]
    assert items[1]["class"] == "SplashResponse"
    assert items[1]["headers"]["content-type"] == "image/png"
    assert items[2]["class"] == "SplashResponse"
    # render.json with html=1 is a magic response: the body is the page.
    assert items[3]["class"] == "SplashJsonResponse"
    assert items[3]["data"]["url"] == "http://example.com/json"
    assert items[3]["text"].startswith("<html")
    assert items[3]["node_div"] in {"node-1", "node-2"}
    assert items[4]["class"] == "SplashJsonResponse" and "log" in items[4]["data"]
    for i in (5, 6):
        assert items[i]["class"] == "SplashJsonResponse"
        assert items[i]["data"]["lua_source_length"] == len(lua)
        assert items[i]["text"].startswith("<html")
    assert items[7]["class"] == "SplashJsonResponse"
    assert json.loads(items[7]["text"])["url"] == "http://example.com/nomagic"
    assert items[8]["class"] in {"Response", "HtmlResponse", "TextResponse"}
    assert items[8]["url"] == "http://example.com/raw"


def test_post_pages_pass_method_and_body(splash_nodes):
    (node,) = splash_nodes(1)
    described = [
        {"url": "http://example.com/api", "method": "POST", "body": '{"q": 1}'},
        {"url": "http://example.com/form", "kind": "form", "formdata": {"a": "1", "b": "x y"}},
    ]
    result = run_crawl(settings_for([node]), described)
    assert_clean(result)
    assert not errors(result)
    args = {e["url"]: e["args"] for e in node.stats()["log"]}
    assert args["http://example.com/api"]["http_method"] == "POST"
    assert args["http://example.com/api"]["body"] == '{"q": 1}'
    assert args["http://example.com/form"]["http_method"] == "POST"
    assert args["http://example.com/form"]["body"] == "a=1&b=x+y"
    assert "Content-Type" in args["http://example.com/form"]["headers"]


def test_headers_go_to_splash_unless_told_not_to(splash_nodes):
    (node,) = splash_nodes(1)
    described = [
        {"url": "http://example.com/h", "meta": {}},
        {
            "url": "http://example.com/n",
            "kind": "meta",
            "splash": {"args": {"url": "http://example.com/n"}, "dont_send_headers": True},
        },
    ]
    result = run_crawl(settings_for([node], USER_AGENT="test-agent/1.0"), described)
    assert_clean(result)
    args = {e["url"]: e["args"] for e in node.stats()["log"]}
    assert args["http://example.com/h"]["headers"]["User-Agent"] == "test-agent/1.0"
    assert "headers" not in args["http://example.com/n"]


def test_hand_made_splash_meta_works_like_splash_request(splash_nodes):
    (node,) = splash_nodes(1)
    described = [
        {
            "url": "http://example.com/hand",
            "kind": "meta",
            "splash": {"endpoint": "render.json", "args": {"html": 1}},
        }
    ]
    result = run_crawl(settings_for([node]), described)
    assert_clean(result)
    (item,) = result.items
    assert item["class"] == "SplashJsonResponse"
    assert item["data"]["url"] == "http://example.com/hand"


def test_request_errors_are_returned_once(splash_nodes):
    nodes = splash_nodes(2)
    described = [
        {"url": "http://example.com/noscript", "endpoint": "execute"},
        {"url": "http://site.invalid/"},
    ]
    result = run_crawl(settings_for(nodes, RETRY_ENABLED=False), described)
    assert_clean(result)
    items = result.by_index()
    assert items[0]["status"] == 400
    assert items[0]["data"]["type"] == "BadOption"
    assert len(items[0]["attempts"]) == 1
    assert items[1]["status"] == 502
    assert items[1]["data"]["type"] == "RenderError"
    assert len(items[1]["attempts"]) == 1
    assert sum(n.stats()["requests"] for n in nodes) == 2
    assert all(
        result.stats[f"splash_cluster/nodes/127.0.0.1:{n.port}/failures"] == 0 for n in nodes
    )


def test_errback_gets_one_typed_error_when_every_node_is_gone(splash_nodes):
    nodes = splash_nodes(2)
    for node in nodes:
        node.set_fault("refuse")
    result = run_crawl(
        settings_for(nodes, RETRY_ENABLED=False, SPLASH_CLUSTER_QUEUE_TIMEOUT=1.0),
        pages(2),
    )
    assert result.returncode == 0
    assert result.finish_reason == "finished"
    errs = errors(result)
    assert len(errs) == 2
    for err in errs:
        assert err["error"] == "SplashNoNodeAvailable"
        assert "DownloadTimeoutError" in err["error_mro"]
        assert "NoNodeAvailable" in err["error_mro"]
        assert "DOWN" in err["message"]
    outcomes = {a[1] for e in errs for a in e["attempts"]}
    # An attempt in flight on a node that another request found refusing is
    # abandoned at once (the node is DOWN), not left to fail on its own.
    assert "connection refused" in outcomes
    assert outcomes <= {"connection refused", "abandoned: node marked DOWN"}
    assert result.stats["splash_cluster/errors/NoNodeAvailable"] == 2


def test_errback_gets_all_attempts_failed(splash_nodes):
    nodes = splash_nodes(2)
    for node in nodes:
        node.set_fault("invalid-http")
    result = run_crawl(
        settings_for(nodes, RETRY_ENABLED=False, SPLASH_CLUSTER_ERROR_LIMIT=100), pages(1)
    )
    (err,) = errors(result)
    assert err["error"] == "SplashAllAttemptsFailed"
    assert "DownloadFailedError" in err["error_mro"]
    assert len(err["attempts"]) == 4
    assert "all 4 attempts failed" in err["message"]
    # The attempts are logged once, in the error, not as a traceback each.
    assert result.log.count("invalid HTTP response") <= 8


def test_a_poisoned_request_is_not_retried_by_scrapy(splash_nodes):
    nodes = splash_nodes(3)
    for node in nodes[:2]:
        node.set_fault("die")
    # Scrapy's RetryMiddleware is on (RETRY_TIMES 2): it must not send the
    # request round again to kill more nodes.
    result = run_crawl(settings_for(nodes, SPLASH_CLUSTER_ERROR_LIMIT=100), pages(1))
    (err,) = errors(result)
    assert err["error"] == "SplashPoisonedRequest"
    assert "DownloadFailedError" not in err["error_mro"]
    assert len(err["attempts"]) == 2
    assert result.stats["splash_cluster/requests"] == 1
    assert result.stats["splash_cluster/poisoned"] == 1
    assert not nodes[2].stats()["log"]
    assert result.log.count("Splash request for http://example.com/page/0 not sent to another") == 1


def test_render_timeout_raises_download_timeout(splash_nodes):
    (node,) = splash_nodes(1, latency=0.1)
    result = run_crawl(
        settings_for([node], DOWNLOAD_TIMEOUT=1),
        [{"url": "http://example.com/slow", "args": {"wait": 1.5, "timeout": 10}}],
    )
    assert_clean(result)
    (item,) = result.items
    # download_timeout was raised to 10 + 5 s, so the 1.6 s render finished.
    assert item["status"] == 200


def test_requests_without_splash_meta_are_untouched(splash_nodes):
    (node,) = splash_nodes(1)
    plain = {"url": f"{node.url}/_ping", "kind": "plain"}
    result = run_crawl(settings_for([node]), [plain])
    assert_clean(result)
    (item,) = result.items
    assert item["status"] == 200
    assert item["node"] is None
    assert item["class"] in {"JsonResponse", "TextResponse", "Response"}
    assert "splash_cluster/requests" not in result.stats


def test_credentials_go_to_nodes_only(splash_nodes):
    (node,) = splash_nodes(1)
    described = [
        {"url": "http://example.com/secret"},
        {"url": f"{node.url}/render.html?url=http://example.com/direct", "kind": "plain"},
    ]
    result = run_crawl(settings_for([node], SPLASH_USER="scrapy", SPLASH_PASS="s3cret"), described)
    assert_clean(result)
    auth = {e["url"]: e["authorization"] for e in node.stats()["log"]}
    expected = "Basic " + base64.b64encode(b"scrapy:s3cret").decode()
    assert auth["http://example.com/secret"] == expected
    assert auth["http://example.com/direct"] is None
    assert "s3cret" not in result.log


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        (
            {"SPLASH_CLUSTER_MAXCONN": 0},
            "invalid SPLASH_CLUSTER_MAXCONN: 0; expected an integer >= 1",
        ),
        ({"SPLASH_CLUSTER_RETRIES": "many"}, "invalid SPLASH_CLUSTER_RETRIES: 'many'"),
        ({"SPLASH_URLS": ["ftp://x:1"]}, "invalid SPLASH_URLS[0]: 'ftp://x:1'"),
        ({"SPLASH_URLS": [], "SPLASH_URL": None}, "no Splash nodes: set SPLASH_URLS"),
        ({"SPLASH_SLOT_POLICY": "fast"}, "invalid SPLASH_SLOT_POLICY: 'fast'"),
        ({"SPLASH_CLUSTER_QUEUE_TIMEOUT": -1}, "invalid SPLASH_CLUSTER_QUEUE_TIMEOUT: -1"),
        ({"SPLASH_CLUSTER_ADAPTIVE": "maybe"}, "invalid SPLASH_CLUSTER_ADAPTIVE: 'maybe'"),
    ],
)
def test_bad_settings_stop_the_crawl_before_any_request(splash_nodes, settings, message):
    (node,) = splash_nodes(1)
    result = run_crawl({**settings_for([node]), **settings}, pages(2))
    assert message in result.log, result.log[-3000:]
    assert not result.items
    assert node.stats()["requests"] == 0


def test_urls_from_the_command_line(splash_nodes):
    nodes = splash_nodes(2)
    result = run_crawl(
        {**settings_for(nodes), "SPLASH_URLS": ",".join(n.url for n in nodes)}, pages(6)
    )
    assert_clean(result)
    assert {i["node_div"] for i in result.items} == {"node-1", "node-2"}


def test_per_node_maxconn_and_weight(splash_nodes):
    a, b = splash_nodes(2, latency=0.1)
    urls = [{"url": a.url, "maxconn": 1}, {"url": b.url, "maxconn": 4, "weight": 4}]
    result = run_crawl(settings_for([a, b], SPLASH_URLS=urls), pages(20))
    assert_clean(result)
    assert a.stats()["max_in_progress"] == 1
    assert b.stats()["max_in_progress"] <= 4
    assert b.stats()["requests"] > a.stats()["requests"]


def test_script_without_a_page_url(splash_nodes):
    (node,) = splash_nodes(1)
    script = {"kind": "script", "args": {"lua_source": "function main(splash) return 1 end"}}
    result = run_crawl(settings_for([node]), [script])
    assert_clean(result)
    (item,) = result.items
    assert item["status"] == 200
    assert item["class"] == "SplashJsonResponse"
    assert node.stats()["by_endpoint"] == {"/execute": 1}


def test_download_maxsize_cuts_node_answers_short(splash_nodes):
    (node,) = splash_nodes(1)
    result = run_crawl(settings_for([node], DOWNLOAD_MAXSIZE=100, RETRY_ENABLED=False), pages(1))
    assert_clean(result)
    (err,) = errors(result)
    assert err["error"] == "SplashResponseTooLarge"
    assert "DownloadCancelledError" in err["error_mro"]
    assert "larger than the size limit of 100 bytes" in err["message"]
