"""Answers of Lua scripts through real Splash 3.5 nodes: magic-response
headers as the script gave them, and a session whose jar holds a very large
cookie (it goes to Splash once, in the JSON body, and reaches the site once)."""

from __future__ import annotations

from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from scripts.splash import RealSplashNode
from tests.crawl_helpers import run_crawl
from tests.e2e.helpers import assert_clean, errors, settings_for
from tests.local_server import base_url, serving

pytestmark = pytest.mark.e2e

# Python's http.server refuses a header line over 65536 bytes: the largest
# cookie our test site can take is just under 64 KiB.
BIG_COOKIE = 65000
SESSION_LUA = """
function main(splash, args)
  splash:init_cookies(args.cookies)
  assert(splash:go(args.url))
  local history = splash:history()
  return {html=splash:html(), cookies=splash:get_cookies(),
          headers=history[#history].response.headers}
end
"""
HEADERS_LUA = """
function main(splash, args)
  assert(splash:go(args.url))
  return {html=splash:html(), headers={["Content-Type"]="text/html", ["X-Script"]="given"}}
end
"""


class _Handler(BaseHTTPRequestHandler):
    """/set sets a cookie of BIG_COOKIE bytes; every page shows the length of
    the Cookie header it got."""

    server: _Server
    protocol_version = "HTTP/1.1"

    def log_message(self, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        cookie = self.headers.get("Cookie", "")
        self.server.cookie_lengths.append((self.path, len(cookie)))
        body = f"<html><body><p id='len'>{len(cookie)}</p></body></html>".encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/html")
        if self.path.startswith("/set"):
            self.send_header("Set-Cookie", "big=" + "x" * BIG_COOKIE + "; Path=/")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    cookie_lengths: list[tuple[str, int]]


@pytest.fixture
def cookie_site() -> Iterator[_Server]:
    server = _Server(("127.0.0.1", 0), _Handler)
    server.cookie_lengths = []
    with serving(server):
        yield server


def _script(url: str, lua: str, then: dict[str, Any] | None = None) -> dict[str, Any]:
    page: dict[str, Any] = {"url": url, "endpoint": "execute", "args": {"lua_source": lua}}
    if then is not None:
        page["then"] = then
    return page


def test_magic_response_headers_are_the_scripts(
    nodes: list[RealSplashNode], cookie_site: _Server
) -> None:
    base = base_url(cookie_site)
    result = run_crawl(settings_for(nodes), [_script(f"{base}/page", HEADERS_LUA)])
    assert_clean(result)
    (item,) = result.items
    assert item["headers"]["content-type"] == "text/html"  # no charset added
    assert item["headers"]["x-script"] == "given"
    assert '<p id="len">' in item["text"]


def test_a_session_with_a_64kb_cookie_still_renders(
    nodes: list[RealSplashNode], cookie_site: _Server
) -> None:
    base = base_url(cookie_site)
    then = _script(f"{base}/check", SESSION_LUA, _script(f"{base}/again", SESSION_LUA))
    result = run_crawl(settings_for(nodes), [_script(f"{base}/set", SESSION_LUA, then)])
    assert_clean(result)
    assert not errors(result), errors(result)
    by_url = {item["url"].rsplit("/", 1)[1]: item for item in result.items}
    assert set(by_url) == {"set", "check", "again"}
    assert all(item["status"] == 200 for item in by_url.values())
    # The cookie reached the site once per page: "big=" and its value, not
    # doubled by a Cookie header of Scrapy's beside the session's jar.
    expected = len("big=") + BIG_COOKIE
    assert dict(cookie_site.cookie_lengths) == {"/set": 0, "/check": expected, "/again": expected}
    assert f">{expected}<" in by_url["again"]["text"]
