"""Each endpoint the add-on sends, through the cluster, to real Splash nodes,
on pages whose content exists only once their JavaScript ran."""

from __future__ import annotations

import base64

import pytest

from scripts.splash import RealSplashNode, http_get
from tests.crawl_helpers import run_crawl
from tests.e2e.helpers import assert_clean, assert_nothing_lost, js_pages, node_stat, settings_for
from tests.e2e.site import JsSite, marker

pytestmark = pytest.mark.e2e

LUA = """
function main(splash, args)
  assert(splash:go(args.url))
  splash:wait(0.1)
  return {html=splash:html(), title=splash:evaljs("document.title")}
end
"""


def test_the_site_needs_javascript(site: JsSite) -> None:
    """Without this, the marker checks below would prove nothing."""
    status, body = http_get(site.page(3), 5.0)
    source = body.decode()
    assert status == 200
    assert marker(3) not in source and 'id="app"></div>' in source


def test_render_html_runs_the_pages_javascript(nodes: list[RealSplashNode], site: JsSite) -> None:
    result = run_crawl(settings_for(nodes), js_pages(site, 10))
    assert_nothing_lost(result, 10)
    items = result.by_index()
    assert items[4]["class"] == "SplashTextResponse"
    assert items[4]["url"] == site.page(4)
    assert items[4]["real_url"] == items[4]["node"] + "/render.html"
    assert "<li>echo</li>" in items[4]["text"]
    assert {item["node"] for item in result.items} == {n.url for n in nodes}


def test_render_json_with_html_and_png(nodes: list[RealSplashNode], site: JsSite) -> None:
    result = run_crawl(
        settings_for(nodes), js_pages(site, 4, endpoint="render.json", args={"html": 1, "png": 1})
    )
    assert_nothing_lost(result, 4)
    for index, item in result.by_index().items():
        assert item["class"] == "SplashJsonResponse"
        data = item["data"]
        assert marker(index) in data["html"]
        assert data["title"] == f"Page {index}"
        assert data["url"] == site.page(index)
        png = base64.b64decode(data["png"])
        assert png.startswith(b"\x89PNG\r\n\x1a\n") and len(png) > 1000


def test_execute_runs_lua(nodes: list[RealSplashNode], site: JsSite) -> None:
    result = run_crawl(
        settings_for(nodes), js_pages(site, 4, endpoint="execute", args={"lua_source": LUA})
    )
    assert_nothing_lost(result, 4)
    for index, item in result.by_index().items():
        assert item["class"] == "SplashJsonResponse"
        assert item["data"]["title"] == f"Page {index}"
        assert marker(index) in item["data"]["html"]


def test_chromium_engine_renders_html(nodes: list[RealSplashNode], site: JsSite) -> None:
    """A plain SplashRequest with engine=chromium: Splash 3.5's chromium engine
    refuses a headers argument, so the add-on does not send the request's
    headers to it (it does for webkit)."""
    result = run_crawl(settings_for(nodes), js_pages(site, 4, args={"engine": "chromium"}))
    assert_nothing_lost(result, 4)
    for index, item in sorted((i["index"], i) for i in result.items):
        assert item["class"] == "SplashTextResponse"
        assert marker(index) in item["text"]


def test_chromium_refusing_headers_is_the_requests_fault(
    nodes: list[RealSplashNode], site: JsSite
) -> None:
    """Headers given explicitly to chromium: the 400 comes back to the spider
    once, not retried, not held against a node."""
    args = {"engine": "chromium", "headers": {"X-Test": "1"}}
    result = run_crawl(settings_for(nodes, RETRY_ENABLED=False), js_pages(site, 2, args=args))
    assert_clean(result)
    for item in result.items:
        assert item["status"] == 400, item
        assert item["data"]["type"] == "BadOption"
        assert item["data"]["info"] == "headers is not implemented"
        assert len(item["attempts"]) == 1
    assert result.stats["splash_cluster/responses/400"] == 2
    for node in nodes:
        assert node_stat(result, node, "failures") == 0
        assert node_stat(result, node, "downs") == 0
