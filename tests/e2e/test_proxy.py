"""Proxies and compressed pages through real Splash 3.5 nodes: a request's
proxy (with credentials HttpProxyMiddleware moved into its header) is the
one the node fetches through, and pages served gzip or br render on webkit
and chromium whatever Accept-Encoding Scrapy put on the request."""

from __future__ import annotations

import gzip
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import brotli
import pytest

from scripts.splash import RealSplashNode
from tests.crawl_helpers import run_crawl
from tests.e2e.helpers import assert_clean, errors, settings_for
from tests.e2e.proxy import AuthProxy
from tests.local_server import base_url, serving

pytestmark = pytest.mark.e2e

SECRET = "pr0xy-s3cret"
LUA = """
function main(splash, args)
  assert(splash:go(args.url))
  return {html=splash:html()}
end
"""
_PAGE = (
    "<html><head><title>{name}</title></head><body><div id='out'></div><script>"
    "document.getElementById('out').innerHTML = ['rendered', 'by', 'js'].join('-') + ':{name}';"
    "</script></body></html>"
)


def marker(name: str) -> str:
    return f"rendered-by-js:{name}"


class _Handler(BaseHTTPRequestHandler):
    """/<encoding>/<name>: the page, compressed with that encoding when the
    request accepts it (identity otherwise), as CDNs serve."""

    server: _Server
    protocol_version = "HTTP/1.1"

    def log_message(self, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        accepted = self.headers.get("Accept-Encoding", "")
        self.server.seen.append((self.path, accepted))
        encoding, _, name = self.path.strip("/").partition("/")
        body = _PAGE.format(name=name).encode()
        used = None
        if encoding == "br" and "br" in accepted:
            body, used = brotli.compress(body), "br"
        elif encoding in ("br", "gzip") and "gzip" in accepted:
            body, used = gzip.compress(body), "gzip"
        self.send_response(200)
        self.send_header("Content-Type", "text/html; charset=utf-8")
        if used:
            self.send_header("Content-Encoding", used)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    seen: list[tuple[str, str]]


@pytest.fixture(scope="module")
def compressing_site() -> Iterator[_Server]:
    server = _Server(("127.0.0.1", 0), _Handler)
    server.seen = []
    with serving(server):
        yield server


@pytest.fixture
def proxy() -> Iterator[AuthProxy]:
    server = AuthProxy("user", SECRET)
    try:
        yield server
    finally:
        server.stop()


def test_pages_are_fetched_through_the_requests_proxy_with_its_credentials(
    nodes: list[RealSplashNode], compressing_site: _Server, proxy: AuthProxy
) -> None:
    base = base_url(compressing_site)
    pages = [
        {"url": f"{base}/plain/meta-{i}", "meta": {"proxy": proxy.url_with_credentials}}
        for i in range(4)
    ] + [
        {
            "url": f"{base}/plain/lua-{i}",
            "endpoint": "execute",
            "args": {"lua_source": LUA},
            "meta": {"proxy": proxy.url_with_credentials},
        }
        for i in range(2)
    ]
    result = run_crawl(settings_for(nodes), pages)
    assert_clean(result)
    assert not errors(result), errors(result)
    assert len(result.items) == 6
    for item in result.items:
        name = item["url"].rsplit("/", 1)[1]
        assert marker(name) in item["text"], item["text"][:300]
        # The node asked the proxy, with the credentials, for this very page.
        assert proxy.relayed(item["url"]), (item["url"], proxy.seen)
    assert not [r for r in proxy.seen if not r.authorized]
    assert SECRET not in result.log
    assert all(SECRET not in item["meta_repr"] for item in result.items)


@pytest.mark.parametrize("engine", ["webkit", "chromium"])
@pytest.mark.parametrize("encoding", ["gzip", "br"])
def test_compressed_pages_render_with_scrapys_accept_encoding(
    nodes: list[RealSplashNode], compressing_site: _Server, engine: str, encoding: str
) -> None:
    base = base_url(compressing_site)
    pages = [
        {"url": f"{base}/{encoding}/{engine}-{i}", "args": {"engine": engine}} for i in range(3)
    ]
    result = run_crawl(settings_for(nodes), pages)
    assert_clean(result)
    assert not errors(result), errors(result)
    for item in result.items:
        name = item["url"].rsplit("/", 1)[1]
        assert marker(name) in item["text"], item["text"][:300]
    served = [accepted for path, accepted in compressing_site.seen if f"/{engine}-" in path]
    # The browser asked for a compressed page itself (so the test is about
    # decoding one), not with Scrapy's "gzip, deflate, br, zstd".
    assert served and all("gzip" in accepted for accepted in served), served
    assert not any("zstd" in accepted for accepted in served), served
