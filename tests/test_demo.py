"""The demo (examples/) and the mock node's fetch mode it runs on.

Fetch mode over real sockets: a render loads its page from a local site and
emulates the page's script; what fails to load fails as Splash says. Then the
one thing the emulation promises, that the demo site's JavaScript builds the
DOM the mock writes (run under Node.js when it is installed), and the demo
itself, end to end and smaller, as ``make demo`` runs it.
"""

from __future__ import annotations

import http.client
import json
import re
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar
from urllib.parse import urlsplit

import pytest
from parsel import Selector
from scrapy_splash_cluster.testing import MockSplashNode, MockSplashServer
from scrapy_splash_cluster.testing._pages import build_app_html, emulate_page_script

if TYPE_CHECKING:
    from scrapy_splash_cluster.testing.fixtures import SplashNodesFactory

pytest_plugins = ["scrapy_splash_cluster.testing.fixtures"]

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"
sys.path.insert(0, str(EXAMPLES))

from demo_site import PAGE_SCRIPT, Catalogue, DemoSite, render_raw_page  # noqa: E402
from run_demo import Terminal, build_report, print_report  # noqa: E402

SHOP_DATA = {
    "title": "Tea & <Things>",
    "items": [
        {"name": "Amber Teapot", "price": "€12.50", "href": "/product/1.html"},
        {"name": 'The "Best" Cup', "price": "€3.00", "href": "/product/2.html?a=1&b=2"},
    ],
    "next": "/shop?page=2",
}


def convention_page(data: Any, title: str = "Shop") -> str:
    """A raw page that follows the fetch mode's convention (script omitted: the
    mock does not read it)."""
    payload = json.dumps(data).replace("</", "<\\/")
    return (
        f"<!DOCTYPE html><html><head><title>{title}</title></head><body>"
        '<div id="app"></div>'
        f'<script type="application/json" id="page-data">{payload}</script>'
        "<script>/* builds #app */</script></body></html>"
    )


class Site:
    """A tiny website on 127.0.0.1 that remembers the headers it was sent."""

    PAGES: ClassVar[dict[str, tuple[int, str]]] = {
        "/shop": (200, convention_page(SHOP_DATA, "The shop")),
        "/missing": (404, convention_page({"title": "Not found"}, "404")),
        "/broken-data": (200, convention_page({"title": 42})),
        "/plain": (200, "<html><head><title>Plain</title></head><body>static</body></html>"),
    }

    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []
        site = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                site.requests.append({"path": self.path, "headers": dict(self.headers)})
                if self.path == "/moved":
                    self._send(302, b"", location="/shop")
                    return
                status, page = site.PAGES.get(self.path, (404, "<html>no such page</html>"))
                self._send(status, page.encode())

            def _send(self, status: int, body: bytes, location: str | None = None) -> None:
                self.send_response(status)
                self.send_header("Content-Type", "text/html; charset=utf-8")
                self.send_header("Content-Length", str(len(body)))
                if location:
                    self.send_header("Location", location)
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def close(self) -> None:
        self.server.shutdown()
        self.thread.join()
        self.server.server_close()


@pytest.fixture
def site() -> Iterator[Site]:
    site = Site()
    try:
        yield site
    finally:
        site.close()


@pytest.fixture
def fetch_node(splash_nodes: SplashNodesFactory) -> MockSplashNode:
    (node,) = splash_nodes(1, render_mode="fetch")
    return node


class Reply:
    def __init__(self, response: http.client.HTTPResponse) -> None:
        self.status = response.status
        self.headers = response.headers
        self.body = response.read()

    @property
    def text(self) -> str:
        return self.body.decode("utf-8")

    def json(self) -> Any:
        assert self.headers["Content-Type"] == "application/json", self.body
        return json.loads(self.body)


def render(node: MockSplashNode, endpoint: str, **args: Any) -> Reply:
    """POST Splash arguments to a node's endpoint, as the cluster does."""
    conn = http.client.HTTPConnection("127.0.0.1", node.port, timeout=10)
    try:
        body = json.dumps(args).encode()
        conn.request("POST", endpoint, body=body, headers={"Content-Type": "application/json"})
        return Reply(conn.getresponse())
    finally:
        conn.close()


def app_html(page: str) -> str:
    """What a page's ``#app`` holds, as serialised HTML."""
    match = re.search(r'<div id="app">(.*?)</div><script type="application/json"', page, re.S)
    assert match, page
    return match.group(1)


# -- fetch mode ----------------------------------------------------------------


def test_fetch_mode_renders_the_page_data(fetch_node: MockSplashNode, site: Site):
    reply = render(fetch_node, "/render.html", url=site.url + "/shop", wait=0.1)
    assert reply.status == 200
    assert reply.headers["Content-Type"] == "text/html; charset=utf-8"
    assert reply.headers["X-Mock-Splash-Node"] == "node-1"
    page = Selector(reply.text)
    assert page.css('head > meta[name="rendered-by"]::attr(content)').get() == "node-1"
    assert page.css("#app h1::text").get() == "Tea & <Things>"
    products = page.css("#app ul.products li.product")
    assert [p.css("a::text").get() for p in products] == ["Amber Teapot", 'The "Best" Cup']
    assert [p.css("a::attr(href)").get() for p in products] == [
        "/product/1.html",
        "/product/2.html?a=1&b=2",
    ]
    assert [p.css("span.price::text").get() for p in products] == ["€12.50", "€3.00"]
    assert page.css("#app a.next::attr(href)").get() == "/shop?page=2"
    # Serialised as a browser does, and the page's own scripts are still there.
    assert app_html(reply.text) == build_app_html(SHOP_DATA)
    assert "&lt;Things&gt;" in reply.text and 'href="/product/2.html?a=1&amp;b=2"' in reply.text
    assert page.css("#page-data")
    assert fetch_node.stats()["log"][-1]["page_status"] == 200


def test_fetch_mode_render_json_and_redirects(fetch_node: MockSplashNode, site: Site):
    data = render(
        fetch_node, "/render.json", url=site.url + "/moved", html=1, history=1, har=1
    ).json()
    assert data["url"] == site.url + "/shop"
    assert data["requestedUrl"] == site.url + "/moved"
    assert data["title"] == "The shop"
    assert data["node"] == "node-1"
    assert app_html(data["html"]) == build_app_html(SHOP_DATA)
    assert [e["response"]["status"] for e in data["history"]] == [200]
    assert data["har"]["log"]["entries"][0]["request"]["url"] == site.url + "/shop"
    assert "http_status" not in data  # Splash 3.5's render.json has none
    for endpoint, content_type in (("/render.png", "image/png"), ("/render.jpeg", "image/jpeg")):
        reply = render(fetch_node, endpoint, url=site.url + "/shop")
        assert (reply.status, reply.headers["Content-Type"]) == (200, content_type)
    assert [r["path"] for r in site.requests] == ["/moved", "/shop", "/shop", "/shop"]


def test_fetch_mode_error_pages_render_anyway(fetch_node: MockSplashNode, site: Site):
    # Splash renders a 404 page like any other (its test_404_get): render.html
    # answers 200 with the page; the page's status is in the HAR and history.
    reply = render(fetch_node, "/render.html", url=site.url + "/missing")
    assert reply.status == 200
    assert Selector(reply.text).css("#app h1::text").get() == "Not found"
    data = render(fetch_node, "/render.json", url=site.url + "/missing", history=1).json()
    assert data["history"][0]["response"]["status"] == 404
    assert data["history"][0]["response"]["statusText"] == "Not Found"
    har = render(fetch_node, "/render.har", url=site.url + "/missing").json()
    assert har["log"]["entries"][0]["response"]["status"] == 404
    assert fetch_node.stats()["log"][-1]["page_status"] == 404


def test_fetch_mode_loads_only_loopback_http(fetch_node: MockSplashNode, site: Site):
    for url, code, text in (
        ("http://example.com/", 3, "Host example.com not found"),
        ("http://10.0.0.1:8080/", 3, "Host 10.0.0.1 not found"),
        ("http://shop.invalid/", 3, "Host shop.invalid not found"),
        (site.url.replace("http:", "https:") + "/shop", 301, 'Protocol "https" is unknown'),
        ("ftp://127.0.0.1/file", 301, 'Protocol "ftp" is unknown'),
    ):
        reply = render(fetch_node, "/render.html", url=url)
        assert reply.status == 502, url
        error = reply.json()
        assert error["type"] == "RenderError" and error["error"] == 502
        assert error["info"]["type"] == "Network"
        assert (error["info"]["code"], error["info"]["text"]) == (code, text)
        assert error["info"]["url"] == url
        assert "127.0.0.1 and localhost" in error["info"]["mock"]
    assert site.requests == []


def test_fetch_mode_unreachable_page_is_a_render_error(fetch_node: MockSplashNode):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]  # nothing listens there once closed
    reply = render(fetch_node, "/render.json", url=f"http://localhost:{port}/")
    assert reply.status == 502
    info = reply.json()["info"]
    assert (info["type"], info["code"], info["text"]) == ("Network", 1, "Connection refused")


def test_fetch_mode_load_is_async_and_bounded_by_timeout(fetch_node: MockSplashNode, site: Site):
    # A listening socket that never accepts: the page's connect succeeds and
    # no answer ever comes. Meanwhile the node keeps rendering other pages.
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        hung_url = f"http://127.0.0.1:{silent.getsockname()[1]}/"
        result: dict[str, Reply] = {}

        def render_hung_page() -> None:
            result["hung"] = render(fetch_node, "/render.html", url=hung_url, timeout=1.0)

        waiter = threading.Thread(target=render_hung_page)
        started = time.monotonic()
        waiter.start()
        time.sleep(0.2)
        quick = render(fetch_node, "/render.html", url=site.url + "/shop")
        quick_at = time.monotonic() - started
        waiter.join()
    assert quick.status == 200 and quick_at < 0.9
    hung = result["hung"]
    assert hung.status == 504
    assert hung.json()["type"] == "GlobalTimeoutError"
    assert hung.json()["info"] == {"remaining": 0, "timeout": 1.0}


def test_fetch_mode_forwards_headers_and_method(fetch_node: MockSplashNode, site: Site):
    headers = {"User-Agent": "demo-bot/1.0", "Accept-Encoding": "gzip, br", "X-Token": "t"}
    assert render(fetch_node, "/render.html", url=site.url + "/shop", headers=headers).status == 200
    sent = site.requests[-1]["headers"]
    assert sent["User-Agent"] == "demo-bot/1.0" and sent["X-Token"] == "t"
    assert sent["Accept-Encoding"] == "identity"  # the mock does not decompress pages
    render(fetch_node, "/render.html", url=site.url + "/plain")
    assert "mock-splash" in site.requests[-1]["headers"]["User-Agent"]


def test_fetch_mode_leaves_other_pages_unrendered(fetch_node: MockSplashNode, site: Site):
    for path in ("/plain", "/broken-data"):
        text = render(fetch_node, "/render.html", url=site.url + path).text
        raw = Site.PAGES[path][1]
        assert text == raw.replace("<head>", '<head><meta name="rendered-by" content="node-1">')


def test_fetch_mode_loads_nothing_for_failing_renders_or_urlless_scripts(
    fetch_node: MockSplashNode, site: Site
):
    data = render(fetch_node, "/execute", lua_source="function main(splash) return 1 end").json()
    assert data["node"] == "node-1" and data["url"] == "about:blank"
    fetch_node.set_fault("render-error", count=1)
    assert render(fetch_node, "/render.html", url=site.url + "/shop").status == 502
    assert site.requests == []  # neither the script nor the failed render loaded a page


def test_static_mode_is_still_the_default(splash_nodes: SplashNodesFactory, site: Site):
    (node,) = splash_nodes(1)
    reply = render(node, "/render.html", url=site.url + "/shop")
    assert Selector(reply.text).css("#node::text").get() == "node-1"
    assert site.requests == [] and node.stats()["render_mode"] == "static"
    with pytest.raises(ValueError, match="render_mode"):
        MockSplashNode("x", render_mode="browser")
    with pytest.raises(ValueError, match="render_mode"):
        MockSplashServer(render_mode="browser")


def test_emulation_rules():
    assert build_app_html({"title": "Empty"}) == "<h1>Empty</h1>"
    assert (
        build_app_html({"title": "a\xa0b", "fields": [["K", "v&w"]], "items": [], "next": None})
        == '<h1>a&nbsp;b</h1><dl class="fields"><dt>K</dt><dd>v&amp;w</dd></dl>'
    )
    for bad in (
        [],
        {"title": 1},
        {"title": "t", "items": [{"name": "n"}]},
        {"title": "t", "fields": [["k"]]},
    ):
        with pytest.raises(ValueError):
            build_app_html(bad)
    no_app = convention_page({"title": "x"}).replace('<div id="app"></div>', "")
    assert emulate_page_script(no_app) == no_app


# -- the demo site and its script ------------------------------------------------

# A minimal DOM: what the page script uses, serialised by the HTML spec's rules.
_DOM_SHIM = r"""
const fs = require("fs");
const input = JSON.parse(fs.readFileSync(0, "utf8"));
const escText = (s) => s.replace(/&/g, "&amp;").replace(/\u00a0/g, "&nbsp;")
  .replace(/</g, "&lt;").replace(/>/g, "&gt;");
const escAttr = (s) => s.replace(/&/g, "&amp;").replace(/\u00a0/g, "&nbsp;")
  .replace(/"/g, "&quot;");
class Text { constructor(data) { this.data = String(data); } html() { return escText(this.data); } }
class Element {
  constructor(tag) { this.tag = tag; this.attrs = []; this.children = []; }
  setAttribute(name, value) {
    const found = this.attrs.find((a) => a[0] === name);
    if (found) { found[1] = String(value); } else { this.attrs.push([name, String(value)]); }
  }
  appendChild(child) { this.children.push(child); return child; }
  set textContent(value) { this.children = value === "" ? [] : [new Text(value)]; }
  get textContent() { return this.text; }
  get innerHTML() { return this.children.map((c) => c.html()).join(""); }
  html() {
    const attrs = this.attrs.map(([n, v]) => ` ${n}="${escAttr(v)}"`).join("");
    return `<${this.tag}${attrs}>${this.innerHTML}</${this.tag}>`;
  }
}
const results = input.pages.map((pageData) => {
  const app = new Element("div");
  const data = new Element("script");
  data.text = pageData;
  const document = {
    createElement: (tag) => new Element(tag),
    createTextNode: (text) => new Text(text),
    getElementById: (id) => ({ app: app, "page-data": data })[id],
  };
  new Function("document", input.script)(document);
  return app.innerHTML;
});
process.stdout.write(JSON.stringify(results));
"""


def _page_data_text(raw: str) -> str:
    match = re.search(r'<script type="application/json" id="page-data">(.*?)</script>', raw, re.S)
    assert match
    return match.group(1)


@pytest.mark.skipif(shutil.which("node") is None, reason="Node.js is not installed")
def test_site_script_builds_the_dom_the_mock_emulates():
    catalogue = Catalogue(pages=3, products=4)
    datas = [
        catalogue.page_data(Catalogue.listing_path(1)),
        catalogue.page_data(Catalogue.listing_path(3)),  # the last: no next link
        catalogue.page_data(catalogue.product(2, 1).path),
        {**SHOP_DATA, "fields": [["Größe", 'a\xa0"b" <c> & d']], "title": "x</script>y"},
    ]
    raws = [render_raw_page(data) for data in datas if data is not None]
    assert len(raws) == 4
    shim_input = json.dumps({"script": PAGE_SCRIPT, "pages": [_page_data_text(r) for r in raws]})
    run = subprocess.run(
        ["node", "-e", _DOM_SHIM], input=shim_input, capture_output=True, text=True, timeout=30
    )
    assert run.returncode == 0, run.stderr
    built_by_script = json.loads(run.stdout)
    emulated = [
        re.search(r'<div id="app">(.*?)</div>\n<script', emulate_page_script(raw), re.S)
        for raw in raws
    ]
    assert [m.group(1) if m else None for m in emulated] == built_by_script


def test_site_pages_have_nothing_to_scrape_before_rendering():
    catalogue = Catalogue(pages=2, products=3)
    with DemoSite(catalogue) as shop:
        host, port = shop.url.removeprefix("http://").split(":")
        conn = http.client.HTTPConnection(host, int(port), timeout=5)
        try:
            conn.request("GET", Catalogue.listing_path(1))
            listing = Reply(conn.getresponse())
            conn.request("GET", "/")
            home = Reply(conn.getresponse())
            conn.request("GET", "/product/0099.html")
            missing = Reply(conn.getresponse())
        finally:
            conn.close()
        assert shop.page_loads == 1
    raw = Selector(listing.text)
    assert listing.status == 200
    assert raw.css("#app").get() == '<div id="app"></div>'
    assert not raw.css("h1, li.product, a.next, a[href]")
    data = json.loads(raw.css("#page-data::text").get())
    assert [i["name"] for i in data["items"]] == [p.name for p in catalogue.listing(1)]
    assert (home.status, home.headers["Location"]) == (302, Catalogue.listing_path(1))
    assert missing.status == 404


# -- the demo, end to end ----------------------------------------------------------


def test_demo_end_to_end(tmp_path: Path):
    report_path = tmp_path / "report.json"
    command = [
        sys.executable,
        str(EXAMPLES / "run_demo.py"),
        "--pages=5",
        "--products=6",
        "--latency=0.3",
        "--concurrency=3",
        "--kill-at=0.2",
        "--restart-at=0.45",
        f"--json-report={report_path}",
    ]
    run = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=90)
    output = run.stdout + run.stderr
    assert run.returncode == 0, output[-5000:]
    report = json.loads(report_path.read_text())
    catalogue = Catalogue(pages=5, products=6)
    assert report["ok"] and report["lost"] == 0, output[-5000:]
    assert report["expected_pages"] == report["scraped_pages"] == 35
    assert report["scraped_products"] == 30 and report["scraped_listings"] == 5
    assert report["finish_reason"] == "finished" and report["failed_pages"] == 0

    # The victim died with renders in flight, was marked DOWN, came back UP.
    kill, restart = report["events"]
    assert (kill["event"], kill["node"], restart["event"]) == ("kill", "node-2", "restart")
    assert kill["pid"] != restart["pid"]
    victim = next(n for n in report["nodes"] if n["name"] == "node-2")
    assert victim["downs"] >= 1 and victim["ups"] >= 1, report["nodes"]
    assert all(n["downs"] == 0 for n in report["nodes"] if n["name"] != "node-2")
    assert ">>> killing node-2" in output and ">>> restarting node-2" in output
    assert "is DOWN" in output and "is UP again" in output
    assert sum(n["answered"] for n in report["nodes"]) >= 35

    # Each product item has what only the rendered page shows: the raw page
    # has no heading and no fields, just data for a script.
    by_path = {urlsplit(item["url"]).path: item for item in report["items"]}
    with DemoSite(catalogue) as shop:
        for product in catalogue.all_products():
            item = by_path[product.path]
            assert (item["name"], item["price"], item["sku"]) == (
                product.name,
                product.price,
                product.sku,
            )
            assert item["rendered_by"] in {"node-1", "node-2", "node-3"}
        host, port = shop.url.removeprefix("http://").split(":")
        conn = http.client.HTTPConnection(host, int(port), timeout=5)
        try:
            conn.request("GET", catalogue.product(1, 0).path)
            raw = Selector(Reply(conn.getresponse()).text)
        finally:
            conn.close()
    assert not raw.css("h1, dl.fields, #app *")
    assert {item["rendered_by"] for item in report["items"]} == {"node-1", "node-2", "node-3"}


def test_report_counts_lost_pages_from_the_crawls_files(capsys: pytest.CaptureFixture[str]):
    catalogue = Catalogue(pages=2, products=2)
    node = MockSplashNode("node-1", port=8050)
    products = catalogue.all_products()
    items = [
        {"url": f"http://127.0.0.1:9/{p.path.lstrip('/')}", "name": p.name, "rendered_by": "node-1"}
        for p in products[:-1]
    ]
    stats = {
        "demo/pages/listing": 2,
        "splash_cluster/nodes/127.0.0.1:8050/requests": 6,
        "splash_cluster/nodes/127.0.0.1:8050/responses/200": 5,
        "splash_cluster/retries": 1,
        "finish_reason": "finished",
    }
    kwargs: dict[str, Any] = {"crawl_status": 0, "duration": 1.0, "events": [], "page_loads": 5}
    report = build_report(catalogue, [node], items, stats, **kwargs)
    assert (report["expected_pages"], report["scraped_pages"], report["lost"]) == (6, 5, 1)
    assert report["missing_products"] == [products[-1].path] and not report["ok"]
    assert report["nodes"][0] | {"url": None} == {
        "name": "node-1",
        "url": None,
        "requests": 6,
        "answered": 5,
        "products_rendered": 3,
        "failures": 0,
        "downs": 0,
        "ups": 0,
    }
    print_report(report, Terminal())
    assert "RESULT: FAILED: 1 page(s) lost" in capsys.readouterr().out
    complete = [*items, {"url": "http://127.0.0.1:9" + products[-1].path}]
    assert build_report(catalogue, [node], complete, stats, **kwargs)["ok"]
    assert not build_report(catalogue, [node], complete, {}, **kwargs)["ok"]  # no stats file
