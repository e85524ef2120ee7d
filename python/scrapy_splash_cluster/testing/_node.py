"""The mock Splash node: Splash's HTTP API without a browser.

Why a mock: a real Splash node needs Qt, Xvfb and 370 MB per process and
renders in milliseconds to seconds; a balancer's tests need many nodes that
start in a tenth of a second, answer deterministically, and fail on command in
each way a real node (or the proxy in front of it) fails.

What is faithful to Splash 3.5 (``splash/resources.py``, ``render_options.py``):

* the endpoints, GET query arguments or a JSON POST body (query arguments
  first, the JSON object on top; ``application/javascript`` bodies become
  ``js_source``), 415 for other content types;
* the JSON error format ``{"error", "type", "description", "info"}`` with the
  descriptions taken from the exception docstrings, and the argument checks
  (``timeout`` within ``0..max_timeout``, ``wait`` within ``0..timeout``, 0/1
  flags, ``engine``);
* ``--slots`` renders at once, the rest in an unbounded FIFO queue, no 503;
  the global timeout starts when the request arrives, so a request can time out
  in the queue. As in Splash, the timer is ``timeout + wait`` seconds and the
  504's ``info.timeout`` is ``timeout``;
* a client that disconnects cancels its render and frees its slot.

What is not, in the default ``"static"`` render mode: pages are not fetched
and Lua is not run. A render takes ``latency + wait`` seconds and returns fixed
content naming the url and the node; ``/execute`` and ``/run`` return a JSON
summary instead of running the script. A url whose host ends in ``.invalid``
fails as an unresolvable host does (502 RenderError, Network error 3) on every
endpoint.

The ``"fetch"`` render mode (``render_mode="fetch"``, ``--render-mode fetch``)
is for demos and end-to-end tests that scrape a real local website through the
nodes. The render endpoints (``/render.*``) then really load the ``url``
argument, still taking ``latency + wait`` seconds besides the load:

* only ``http://`` urls on ``127.0.0.1`` or ``localhost`` are fetched, so that
  a mock can never reach beyond the machine; any other url fails as Splash
  reports an unreachable host: 502 RenderError, ``info.type`` Network (code 3
  "Host ... not found", or 301 for another scheme), plus ``info.mock`` saying
  why;
* the load is an asynchronous HTTP request (asyncio streams; the node keeps
  serving while pages load) with the ``http_method``, ``body`` and
  ``headers`` arguments (less hop-by-hop headers and Accept-Encoding); it
  follows up to 10 redirects and counts against the render's ``timeout``, so
  a page that never answers ends as 504 GlobalTimeoutError, as in Splash;
* a page that cannot be loaded (connection refused or closed, not HTTP) is a
  502 RenderError with ``info.type`` Network and Qt's error code, as Splash
  answers;
* a page with an error status (404, 500...) is rendered anyway, as Splash
  does: render.html answers 200 with that page. The page's status shows where
  Splash 3.5 shows it: in the HAR (render.har, or render.json with ``har=1``)
  and in render.json's ``history`` (``history=1``). Splash's render.json has
  no ``http_status`` key, so neither does the mock's: with scrapy-splash's
  magic responses, the Scrapy response of a 404 page is a 200 with both;
* render.json's ``url`` is the url after redirects and ``title`` the page's
  ``<title>``; render.png and render.jpeg load the page, then answer the fixed
  image. The mock runs no Lua: ``/execute`` and ``/run`` with a ``url``
  argument load that url as the usual session script would (cookies in,
  ``splash:go``, then ``{url, http_status, html, cookies}``); without one they
  load nothing and answer as in static mode;
* the mock cannot run JavaScript. It emulates one page convention instead,
  the one the demo site in ``examples/`` follows (see
  :func:`emulate_page_script`): a page written to it comes out of the mock as
  it would come out of a browser running the page's script, and a page that
  relies on any other script comes out as fetched, unrendered;
* every rendered page gets ``<meta name="rendered-by" content="NODE">`` at
  the start of its ``<head>``, so that a spider can tell which node rendered
  it (the ``X-Mock-Splash-Node`` header is still sent as well).

Fault injection (the ``/fault`` control call) is described in
:data:`FAULT_MODES` and in the package docstring.
"""

from __future__ import annotations

import asyncio
import base64
import collections
import contextlib
import dataclasses
import errno
import hashlib
import html
import json
import os
import re
import resource
import sys
import time
from dataclasses import dataclass
from typing import Any, NoReturn
from urllib.parse import parse_qsl, quote, urljoin, urlsplit

from ._http import Connection, HttpApp, Request, Response

__all__ = [
    "FAULT_MODES",
    "JPEG_BYTES",
    "PNG_BYTES",
    "RENDER_ENDPOINTS",
    "RENDER_MODES",
    "MockSplashServer",
    "build_app_html",
    "emulate_page_script",
]

RENDER_ENDPOINTS = (
    "/render.html",
    "/render.png",
    "/render.jpeg",
    "/render.json",
    "/render.har",
    "/execute",
    "/run",
)

#: What a render does: answer fixed content, or load the page (see the module docstring).
RENDER_MODES = ("static", "fetch")

# Splash keeps this many saved arguments per process (its LRU's size).
_ARGCACHE_SIZE = 500

#: Every mode ``/fault`` accepts, with what it does.
FAULT_MODES: dict[str, str] = {
    "none": "normal service; re-opens the render port after refuse",
    "clear": "same as none",
    "latency": "renders take `latency` seconds (param) instead of the node's latency",
    "504": "renders answer 504 GlobalTimeoutError after the render time",
    "render-error": "renders answer 502 RenderError (info type HTTP, code 500)",
    "internal-error": "renders answer 500 InternalError",
    "internal-error-502": "renders answer 502 InternalError",
    "proxy-502": "renders answer 502 with an HTML body, as a proxy in front does",
    "refuse": "the render port stops listening; its connections are closed",
    "die": "in-flight and new render requests: connection closed, no answer",
    "hang": "every request on the render port is read and never answered",
    "invalid-http": "renders get garbage bytes instead of HTTP, then a close",
    "truncate": "renders get headers with Content-Length 10000, part of the body, a close",
    "restart": "close everything, listen again after `downtime` seconds (default 0.5)",
    "crash": (
        "a render of a page whose url holds `url` (param) crashes the node after its render "
        "time: every render in flight is cut, the port listens again after `downtime` seconds "
        "(default 0.5), as under a supervisor; the fault stays"
    ),
}

# Faults applied when a render request arrives, before its arguments are read.
_CONNECTION_FAULTS = frozenset({"die", "hang", "invalid-http"})
# Faults applied to a valid render request: it takes a slot and its render
# time, then fails this way (so they respect slots and the queue).
_RENDER_FAULTS = frozenset(
    {
        "latency",
        "504",
        "render-error",
        "internal-error",
        "internal-error-502",
        "proxy-502",
        "truncate",
        "crash",
    }
)

_DEFAULT_TIMEOUT = 30.0
_LOG_SIZE = 1000
_DEFAULT_GARBAGE = b"HTTP/1.1 abc garbage\r\n\r\n"
_TRUNCATED_LENGTH = 10000

# A 1x1 grey PNG and a 1x1 grey baseline JPEG (checked with djpeg): constant
# bytes, so tests can compare them.
PNG_BYTES = base64.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAAAAAA6fptVAAAACklEQVR42mP4DwABAQEAHLCMmQAAAABJRU5ErkJggg=="
)
JPEG_BYTES = base64.b64decode(
    "/9j/4AAQSkZJRgABAQAAAQABAAD/2wBDAAEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEB"
    "AQEBAQEBAQEBAQEBAQEBAQEBAQEBAQH/wAALCAABAAEBAREA/8QAFAABAAAAAAAAAAAAAAAAAAAAAP/EABQQAQAA"
    "AAAAAAAAAAAAAAAAAAD/2gAIAQEAAD8AP//Z"
)
_PROXY_502_BODY = (
    b"<html><body><h1>502 Bad Gateway</h1>\n"
    b"The server returned an invalid or incomplete response.\n</body></html>\n"
)
_NOT_FOUND_BODY = (
    b"<html><head><title>404 - No Such Resource</title></head>"
    b"<body><h1>No Such Resource</h1><p>No such child resource.</p></body></html>"
)
_HTML = "text/html; charset=utf-8"
_JSON = "application/json"

# -- fetch mode: the page convention ----------------------------------------

_APP_DIV = '<div id="app"></div>'
_PAGE_DATA_RE = re.compile(r'<script type="application/json" id="page-data">(.*?)</script>', re.S)
_HEAD_RE = re.compile(r"<head(?:\s[^>]*)?>", re.I)
_TITLE_RE = re.compile(r"<title(?:\s[^>]*)?>(.*?)</title>", re.S | re.I)


def _serialize_text(value: str) -> str:
    """A text node as a browser serialises it (the HTML spec's algorithm)."""
    return (
        value.replace("&", "&amp;")
        .replace("\xa0", "&nbsp;")
        .replace("<", "&lt;")
        .replace(">", "&gt;")
    )


def _serialize_attr(value: str) -> str:
    """An attribute value as a browser serialises it, between double quotes."""
    return value.replace("&", "&amp;").replace("\xa0", "&nbsp;").replace('"', "&quot;")


def _string(value: Any, what: str) -> str:
    if not isinstance(value, str):
        raise ValueError(f"{what} must be a string, got {value!r}")
    return value


def build_app_html(data: Any) -> str:
    """The HTML a convention page's script puts into ``#app``, for ``data``.

    The one definition of the convention's rendering rules (the demo site's
    JavaScript builds the same DOM; ``tests/test_demo.py`` runs that script
    against this function). ``data`` is the page's JSON::

        {"title": str,
         "fields": [[name, value], ...],                         optional
         "items": [{"name": str, "price": str, "href": str}, ...],  optional
         "next": str or null}                                     optional

    and the script appends to ``#app``, in this order, with nothing between::

        <h1>TITLE</h1>
        <dl class="fields"><dt>NAME</dt><dd>VALUE</dd>...</dl>   (fields not empty)
        <ul class="products"><li class="product"><a href="HREF">NAME</a>
            <span class="price">PRICE</span></li>...</ul>        (items not empty;
            one space between the link and the price, no other whitespace)
        <a class="next" href="NEXT">Next page</a>                (next not empty)

    A browser serialises the text and attributes the script set (with
    ``textContent`` and ``setAttribute``) with the escaping done here. Every
    value must be a string (a script would turn other types into text its own
    way): ValueError otherwise, and the caller then leaves the page
    unrendered, as a browser whose page script threw.
    """
    if not isinstance(data, dict):
        raise ValueError("the page data must be a JSON object")
    parts = [f"<h1>{_serialize_text(_string(data.get('title'), 'title'))}</h1>"]
    fields = data.get("fields") or []
    if not isinstance(fields, list):
        raise ValueError("fields must be a list of [name, value] pairs")
    if fields:
        parts.append('<dl class="fields">')
        for pair in fields:
            if not isinstance(pair, list) or len(pair) != 2:
                raise ValueError(f"a field must be a [name, value] pair, got {pair!r}")
            name, value = (_serialize_text(_string(v, "a field")) for v in pair)
            parts.append(f"<dt>{name}</dt><dd>{value}</dd>")
        parts.append("</dl>")
    items = data.get("items") or []
    if not isinstance(items, list):
        raise ValueError("items must be a list")
    if items:
        parts.append('<ul class="products">')
        for item in items:
            if not isinstance(item, dict):
                raise ValueError(f"an item must be an object, got {item!r}")
            href = _serialize_attr(_string(item.get("href"), "an item's href"))
            name = _serialize_text(_string(item.get("name"), "an item's name"))
            price = _serialize_text(_string(item.get("price"), "an item's price"))
            parts.append(
                f'<li class="product"><a href="{href}">{name}</a> '
                f'<span class="price">{price}</span></li>'
            )
        parts.append("</ul>")
    next_href = data.get("next")
    if next_href is not None and _string(next_href, "next"):
        parts.append(f'<a class="next" href="{_serialize_attr(next_href)}">Next page</a>')
    return "".join(parts)


def emulate_page_script(page: str) -> str:
    """The page as a browser would serialise it after the page's script ran.

    The mock cannot run JavaScript, so this emulates one script: a page that
    holds, literally, ``<div id="app"></div>`` and
    ``<script type="application/json" id="page-data">DATA</script>`` (DATA
    with ``</`` written ``<\\/``, as JSON allows) gets ``#app`` filled with
    :func:`build_app_html` of DATA. The rest of the page is left as fetched
    (the scripts stay, as in a browser's DOM), without the normalisation a
    browser's serialiser would apply. A page without both markers, or whose
    DATA breaks the convention, is returned unchanged: what a browser shows
    when the script finds nothing to do, or throws.
    """
    match = _PAGE_DATA_RE.search(page)
    if match is None or _APP_DIV not in page:
        return page
    try:
        built = build_app_html(json.loads(match.group(1)))
    except ValueError:
        return page
    return page.replace(_APP_DIV, f'<div id="app">{built}</div>', 1)


def _add_rendered_by(page: str, node: str) -> str:
    """Insert ``<meta name="rendered-by" content=NODE>`` first in the head."""
    meta = f'<meta name="rendered-by" content="{_serialize_attr(node)}">'
    head = _HEAD_RE.search(page)
    if head is None:
        return meta + page
    return page[: head.end()] + meta + page[head.end() :]


def _page_title(page: str) -> str:
    match = _TITLE_RE.search(page)
    return html.unescape(match.group(1)).strip() if match else ""


# -- fetch mode: loading pages ------------------------------------------------

_LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost"})
_REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
_MAX_REDIRECTS = 10
_MAX_PAGE_BYTES = 16 * 1024 * 1024
_USER_AGENT = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/538.1 (KHTML, like Gecko) mock-splash"
# Headers the page request sets itself, or that make no sense to forward:
# hop-by-hop ones, and Accept-Encoding (the mock does not decompress pages).
_OWN_PAGE_HEADERS = frozenset(
    {
        "host",
        "connection",
        "keep-alive",
        "proxy-connection",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "content-length",
        "accept-encoding",
    }
)
_CHARSET_RE = re.compile(r"charset=[\"']?([\w.:-]+)", re.I)
# QNetworkReply error codes, as Splash puts them in ``info.code``.
_QT_CONNECTION_REFUSED = 1
_QT_REMOTE_HOST_CLOSED = 2
_QT_HOST_NOT_FOUND = 3
_QT_TOO_MANY_REDIRECTS = 110
_QT_PROTOCOL_UNKNOWN = 301
_QT_PROTOCOL_FAILURE = 399
_QT_UNKNOWN_NETWORK_ERROR = 99
_LOOPBACK_ONLY = "fetch mode loads only http:// pages on 127.0.0.1 and localhost"


class _LoadError(Exception):
    """A page that could not be loaded: Splash's RenderError, Network type."""

    def __init__(self, code: int, text: str, url: str, mock: str | None = None) -> None:
        super().__init__(text)
        self.code = code
        self.text = text
        self.url = url
        self.mock = mock

    def response(self) -> Response:
        info: dict[str, Any] = {
            "type": "Network",
            "code": self.code,
            "text": self.text,
            "url": self.url,
        }
        if self.mock is not None:
            info["mock"] = self.mock
        return _error(502, "RenderError", "Error rendering page", info)


@dataclass(slots=True)
class _Page:
    """A loaded page: where it ended up, its answer, its decoded HTML."""

    url: str
    status: int
    reason: str
    headers: list[tuple[str, str]]
    text: str


def _cookie_header(cookies: Any) -> str:
    """The ``cookies`` argument (HAR cookies) as a Cookie header."""
    if not isinstance(cookies, list):
        return ""
    return "; ".join(
        f"{c['name']}={c['value']}" for c in cookies if isinstance(c, dict) and "name" in c
    )


def _merge_cookies(sent: Any, page: _Page) -> list[dict[str, Any]]:
    """The session's cookies after the page: those sent, updated by the
    page's Set-Cookie headers (name=value and Path only: a mock's jar)."""
    jar = {c["name"]: c for c in sent or [] if isinstance(c, dict) and "name" in c}
    host = urlsplit(page.url).hostname or ""
    for name, value in page.headers:
        if name.lower() != "set-cookie" or "=" not in value:
            continue
        first, *attributes = [part.strip() for part in value.split(";")]
        cookie_name, cookie_value = first.split("=", 1)
        cookie: dict[str, Any] = {"name": cookie_name, "value": cookie_value, "domain": host}
        for attribute in attributes:
            if attribute.lower().startswith("path="):
                cookie["path"] = attribute[5:]
        jar[cookie_name] = cookie
    return list(jar.values())


def _page_headers(raw: Any) -> list[tuple[str, str]]:
    """The ``headers`` argument (a dict or a list of pairs) as headers to send."""
    pairs = raw.items() if isinstance(raw, dict) else raw if isinstance(raw, list) else []
    headers: list[tuple[str, str]] = []
    for pair in pairs:
        if not isinstance(pair, list | tuple) or len(pair) != 2:
            continue
        name, value = pair
        if not isinstance(name, str) or not isinstance(value, str):
            continue
        if name.lower() in _OWN_PAGE_HEADERS or any(c in name + value for c in "\r\n"):
            continue
        headers.append((name, value))
    if not any(name.lower() == "user-agent" for name, _ in headers):
        headers.append(("User-Agent", _USER_AGENT))
    return headers


def _check_target(url: str) -> tuple[str, int, str]:
    """(host, port, request target) of a url the mock may load; _LoadError if not."""
    try:
        parts = urlsplit(url)
        port = parts.port or 80
    except ValueError:
        raise _LoadError(_QT_HOST_NOT_FOUND, "Invalid URL", url, _LOOPBACK_ONLY) from None
    host = (parts.hostname or "").lower()
    if parts.scheme != "http":
        raise _LoadError(
            _QT_PROTOCOL_UNKNOWN, f'Protocol "{parts.scheme}" is unknown', url, _LOOPBACK_ONLY
        )
    if host not in _LOOPBACK_HOSTS:
        raise _LoadError(_QT_HOST_NOT_FOUND, f"Host {host} not found", url, _LOOPBACK_ONLY)
    target = quote(parts.path or "/", safe="/%:@!$&'()*+,;=-._~")
    if parts.query:
        target += "?" + quote(parts.query, safe="/%:@!$&'()*+,;=-._~?")
    return host, port, target


async def _load_page(url: str, method: str, headers: list[tuple[str, str]], body: bytes) -> _Page:
    """Load ``url`` as a browser's main frame does, following redirects."""
    for _ in range(_MAX_REDIRECTS + 1):
        status, reason, page_headers, content = await _http_request(url, method, headers, body)
        location = next((v for k, v in page_headers if k.lower() == "location"), None)
        if status in _REDIRECT_STATUSES and location:
            url = urljoin(url, location)
            if status == 303 or (status in (301, 302) and method == "POST"):
                method, body = "GET", b""
            continue
        content_type = next((v for k, v in page_headers if k.lower() == "content-type"), "")
        charset = _CHARSET_RE.search(content_type)
        try:
            text = content.decode(charset.group(1) if charset else "utf-8", "replace")
        except LookupError:  # an unknown charset name
            text = content.decode("utf-8", "replace")
        return _Page(url, status, reason, page_headers, text)
    raise _LoadError(_QT_TOO_MANY_REDIRECTS, "Too many redirects", url)


async def _http_request(
    url: str, method: str, headers: list[tuple[str, str]], body: bytes
) -> tuple[int, str, list[tuple[str, str]], bytes]:
    """One HTTP/1.1 exchange over asyncio streams (``Connection: close``)."""
    host, port, target = _check_target(url)
    lines = [f"{method} {target} HTTP/1.1", f"Host: {host}:{port}"]
    lines += [f"{name}: {value}" for name, value in headers]
    lines += ["Accept-Encoding: identity", "Connection: close"]
    if body or method not in ("GET", "HEAD"):
        lines.append(f"Content-Length: {len(body)}")
    head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1", "replace")
    try:
        reader, writer = await asyncio.open_connection(host, port)
    except ConnectionRefusedError:
        raise _LoadError(_QT_CONNECTION_REFUSED, "Connection refused", url) from None
    except OSError as exc:
        raise _LoadError(_QT_UNKNOWN_NETWORK_ERROR, str(exc) or "Network error", url) from None
    try:
        writer.write(head + body)
        data = bytearray()
        while chunk := await reader.read(65536):
            data += chunk
            if len(data) > _MAX_PAGE_BYTES:
                raise _LoadError(_QT_PROTOCOL_FAILURE, "Page too large for the mock", url)
    except OSError:
        raise _LoadError(_QT_REMOTE_HOST_CLOSED, "Connection closed", url) from None
    finally:
        writer.close()
    return _parse_http_response(bytes(data), url)


def _parse_http_response(data: bytes, url: str) -> tuple[int, str, list[tuple[str, str]], bytes]:
    head, sep, rest = data.partition(b"\r\n\r\n")
    if not sep:
        raise _LoadError(_QT_REMOTE_HOST_CLOSED, "Connection closed", url)
    lines = head.decode("latin-1").split("\r\n")
    status_line = lines[0].split(" ", 2)
    if len(status_line) < 2 or not status_line[0].startswith("HTTP/"):
        raise _LoadError(_QT_PROTOCOL_FAILURE, "Invalid HTTP response", url)
    try:
        status = int(status_line[1])
    except ValueError:
        raise _LoadError(_QT_PROTOCOL_FAILURE, "Invalid HTTP response", url) from None
    reason = status_line[2] if len(status_line) > 2 else ""
    headers: list[tuple[str, str]] = []
    for line in lines[1:]:
        name, colon, value = line.partition(":")
        if colon:
            headers.append((name.strip(), value.strip()))
    fields = {name.lower(): value for name, value in headers}
    if "chunked" in fields.get("transfer-encoding", "").lower():
        return status, reason, headers, _dechunk(rest, url)
    length = fields.get("content-length")
    if length is not None and length.isdigit():
        if len(rest) < int(length):
            raise _LoadError(_QT_REMOTE_HOST_CLOSED, "Connection closed", url)
        rest = rest[: int(length)]
    return status, reason, headers, rest


def _dechunk(data: bytes, url: str) -> bytes:
    body = bytearray()
    while True:
        size_line, sep, data = data.partition(b"\r\n")
        try:
            size = int(size_line.split(b";", 1)[0].strip(), 16)
        except ValueError:
            raise _LoadError(_QT_PROTOCOL_FAILURE, "Invalid chunked encoding", url) from None
        if not sep or len(data) < size:
            raise _LoadError(_QT_REMOTE_HOST_CLOSED, "Connection closed", url)
        if size == 0:
            return bytes(body)
        body += data[:size]
        data = data[size + 2 :]


class _BadOption(Exception):
    """Splash's BadOption: its ``info`` goes into the 400 answer."""

    def __init__(self, info: Any) -> None:
        super().__init__(info)
        self.info = info


class _ScriptError(Exception):
    """Splash's 400 ScriptError for a script that does not load."""

    def __init__(self, source: str) -> None:
        super().__init__(source)
        first_line = source.splitlines()[0] if source else ""
        self.info = {
            "source": f'[string "{first_line[:40]}"]',
            "line_number": 1,
            "error": "a script must define function main(splash, args)",
            "type": "LUA_INIT_ERROR",
            "message": "Lua error: the script does not define main",
        }


def _error(status: int, type_: str, description: str, info: Any) -> Response:
    body = {"error": status, "type": type_, "description": description, "info": info}
    return Response(status, json.dumps(body).encode(), _JSON)


_TWISTED_NOT_BYTES = (
    b"\n<html>\n  <head><title>500 - Request did not return bytes</title></head>\n"
    b"  <body>\n    <h1>Request did not return bytes</h1>\n  </body>\n</html>\n"
)


def _global_timeout(timeout: float) -> Response:
    # A real node reports the time left too; it is past when this is said.
    return _error(
        504,
        "GlobalTimeoutError",
        "Timeout exceeded rendering page",
        {"remaining": 0, "timeout": timeout},
    )


# What Splash 3.5's chromium engine refuses, each with a 400 BadOption whose
# info is "<argument> is not implemented" (seen against a real node).
_CHROMIUM_UNSUPPORTED = (
    "headers",
    "baseurl",
    "js_source",
    "js_profile",
    "body",
    "resource_timeout",
    "request_body",
    "response_body",
    "html5_media",
    "render_all",
)


def _bad_option(info: Any) -> Response:
    return _error(400, "BadOption", "Incorrect HTTP API arguments", info)


def _json(data: Any, status: int = 200) -> Response:
    return Response(status, json.dumps(data).encode(), _JSON)


def _maxrss_kb() -> int:
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss // 1024 if sys.platform == "darwin" else rss


def _num_fds() -> int:
    try:
        return len(os.listdir("/proc/self/fd"))
    except OSError:
        return 0


class _Stats:
    """Counters of the render port, since start or the last reset."""

    def __init__(self) -> None:
        self.requests = 0
        self.by_endpoint: collections.Counter[str] = collections.Counter()
        self.pings = 0
        self.in_progress = 0
        self.max_in_progress = 0
        self.max_active = 0
        self.completed = 0
        self.cancelled = 0
        self.dropped = 0
        self.bytes_received = 0
        self.expired_args = 0
        self.statuses: collections.Counter[str] = collections.Counter()
        self.log: collections.deque[dict[str, Any]] = collections.deque(maxlen=_LOG_SIZE)

    @classmethod
    def fresh(cls, in_progress: int, active: int) -> _Stats:
        """Zeroed counters that keep the live gauges (and start their maxima there)."""
        stats = cls()
        stats.in_progress = stats.max_in_progress = in_progress
        stats.max_active = active
        return stats


class _Job:
    """One render request from arrival to answer."""

    __slots__ = (
        "args",
        "conn",
        "endpoint",
        "entry",
        "fault",
        "fault_params",
        "page",
        "render_time",
        "rendering",
        "saved",
        "task",
        "timed_out",
        "timeout",
        "timer",
        "url",
    )

    def __init__(self, conn: Connection, endpoint: str, entry: dict[str, Any]) -> None:
        self.conn = conn
        self.endpoint = endpoint
        self.entry = entry
        self.args: dict[str, Any] = {}
        self.url: str = ""
        self.timeout = _DEFAULT_TIMEOUT
        self.render_time = 0.0
        self.fault: str | None = None
        self.fault_params: dict[str, Any] = {}
        # Fetch mode: the loaded page, or the RenderError answer of a failed load.
        self.page: _Page | Response | None = None
        self.rendering = False
        # save_args: argument name -> the key it was saved under.
        self.saved: dict[str, str] = {}
        self.timed_out = False
        self.task: asyncio.Task[Response | None] | None = None
        self.timer: asyncio.TimerHandle | None = None


class MockSplashServer:
    """A mock Splash node in the running asyncio loop: render port + control port.

    Use ``await start()`` / ``await close()``; :class:`MockSplashNode` runs one
    in a subprocess instead, which is what tests that kill nodes need.
    """

    def __init__(
        self,
        *,
        name: str = "mock-splash",
        host: str = "127.0.0.1",
        port: int = 0,
        control_port: int = 0,
        slots: int = 20,
        max_timeout: float = 90.0,
        latency: float = 0.0,
        bind_retry: float = 0.5,
        render_mode: str = "static",
    ) -> None:
        if not name or not name.isprintable() or not name.isascii():
            raise ValueError(f"name must be printable ASCII, got {name!r}")
        if slots < 1:
            raise ValueError(f"slots must be >= 1, got {slots}")
        if max_timeout <= 0:
            raise ValueError(f"max_timeout must be > 0, got {max_timeout}")
        if latency < 0:
            raise ValueError(f"latency must be >= 0, got {latency}")
        if render_mode not in RENDER_MODES:
            raise ValueError(f"render_mode must be one of {RENDER_MODES}, got {render_mode!r}")
        self._name = name
        self.render_mode = render_mode
        # Splash's argument cache: per process, an LRU of 500 values.
        self._argcache: collections.OrderedDict[str, Any] = collections.OrderedDict()
        self.host = host
        self.slots = slots
        self.max_timeout = float(max_timeout)
        self.latency = float(latency)
        self._port = port
        self._control_port = control_port
        self._bind_retry = bind_retry
        self._render_app = HttpApp(self._handle_render_port, (("X-Mock-Splash-Node", name),))
        self._control_app = HttpApp(self._handle_control)
        self._render_server: asyncio.Server | None = None
        self._control_server: asyncio.Server | None = None
        self._reopen_task: asyncio.Task[None] | None = None
        self._stats = _Stats()
        self._jobs: set[_Job] = set()
        self._active = 0
        self._waiters: collections.deque[asyncio.Future[None]] = collections.deque()
        self._fault = "none"
        self._fault_params: dict[str, Any] = {}
        self._fault_left: int | None = None
        self._background: set[asyncio.Task[Any]] = set()

    # -- lifecycle -----------------------------------------------------------

    @property
    def name(self) -> str:
        """The node's name, sent in every render-port answer as X-Mock-Splash-Node."""
        return self._name

    @name.setter
    def name(self, value: str) -> None:
        self._name = value
        self._render_app.set_extra_headers((("X-Mock-Splash-Node", value),))

    @property
    def port(self) -> int:
        """The render port (the one a balancer sends to)."""
        return self._port

    @property
    def control_port(self) -> int:
        """The control port (stats and faults)."""
        return self._control_port

    async def start(self) -> None:
        """Listen on both ports; ports given as 0 become the ephemeral ones chosen."""
        self._render_server = await self._listen(self._render_app, self._port)
        self._port = self._render_server.sockets[0].getsockname()[1]
        try:
            self._control_server = await self._listen(self._control_app, self._control_port)
        except BaseException:
            self._render_server.close()
            raise
        self._control_port = self._control_server.sockets[0].getsockname()[1]

    async def close(self) -> None:
        """Stop listening, drop every connection and cancel every render."""
        if self._reopen_task is not None:
            self._reopen_task.cancel()
        for server in (self._render_server, self._control_server):
            if server is not None:
                server.close()
        self._render_server = self._control_server = None
        for app in (self._render_app, self._control_app):
            for conn in list(app.connections):
                conn.drop("shutdown")
        for task in list(self._background):
            task.cancel()
        await asyncio.sleep(0)

    async def _listen(self, app: HttpApp, port: int) -> asyncio.Server:
        """Bind with SO_REUSEADDR, retrying a busy fixed port for a moment.

        The retry covers a restart on the same port while the old process's
        socket is still being torn down.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._bind_retry
        while True:
            try:
                return await loop.create_server(
                    app.protocol, self.host, port, reuse_address=True, backlog=1024
                )
            except OSError as exc:
                if port == 0 or exc.errno != errno.EADDRINUSE or loop.time() >= deadline:
                    raise
                await asyncio.sleep(0.05)

    def _close_render_port(self, reason: str) -> None:
        if self._render_server is not None:
            self._render_server.close()
            self._render_server = None
        for conn in list(self._render_app.connections):
            conn.drop(reason)

    async def _open_render_port(self) -> None:
        if self._render_server is None:
            self._render_server = await self._listen(self._render_app, self._port)

    def _spawn(self, coro: Any) -> asyncio.Task[Any]:
        task = asyncio.get_running_loop().create_task(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)
        return task

    # -- faults --------------------------------------------------------------

    async def set_fault(self, spec: dict[str, Any]) -> dict[str, Any]:
        """Apply a fault given as the JSON of ``POST /fault``; ValueError if invalid."""
        spec = dict(spec)
        mode = spec.pop("mode", None)
        count = spec.pop("count", None)
        if mode not in FAULT_MODES:
            raise ValueError(f"unknown fault mode {mode!r}; modes: {', '.join(FAULT_MODES)}")
        if count is not None and (type(count) is not int or count < 1):
            raise ValueError(f"count must be a positive integer or null, got {count!r}")
        for key in ("latency", "downtime"):
            value = spec.get(key)
            if value is not None and (
                isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0
            ):
                raise ValueError(f"{key} must be a number >= 0, got {value!r}")
        if mode == "latency" and spec.get("latency") is None:
            raise ValueError("mode latency needs a `latency` parameter (seconds)")
        if "garbage" in spec and not isinstance(spec["garbage"], str):
            raise ValueError("garbage must be a string")
        if mode == "clear":
            mode = "none"

        self._fault, self._fault_params, self._fault_left = mode, spec, count
        if mode == "none":
            self._fault_params, self._fault_left = {}, None

        if mode == "refuse":
            if self._reopen_task is not None:
                self._reopen_task.cancel()
                self._reopen_task = None
            self._close_render_port("refuse")
        elif mode == "restart":
            self._fault, self._fault_params, self._fault_left = "none", {}, None
            self._close_render_port("restart")
            if self._reopen_task is not None:
                self._reopen_task.cancel()
            self._reopen_task = self._spawn(self._reopen_after(float(spec.get("downtime", 0.5))))
        else:
            if mode == "die" and count is None:
                for job in list(self._jobs):
                    job.conn.drop("die")
            # Any other mode listens (after refuse, too); during a restart's
            # downtime only none/clear cuts the downtime short.
            restarting = self._reopen_task is not None and not self._reopen_task.done()
            if restarting and mode == "none":
                assert self._reopen_task is not None
                self._reopen_task.cancel()
                self._reopen_task = None
                restarting = False
            if not restarting:
                await self._open_render_port()
        return self.fault_info()

    def _crash(self, downtime: float) -> None:
        """Die as a crashing Splash does, and come back as its supervisor
        restarts it: every connection closed, listening again after
        ``downtime``."""
        self._close_render_port("crash")
        if self._reopen_task is not None:
            self._reopen_task.cancel()
        self._reopen_task = self._spawn(self._reopen_after(downtime))

    async def _reopen_after(self, downtime: float) -> None:
        await asyncio.sleep(downtime)
        try:
            await self._open_render_port()
        except OSError as exc:
            print(
                f"mock-splash {self.name}: cannot re-open port {self._port}: {exc}", file=sys.stderr
            )
        self._reopen_task = None

    def fault_info(self) -> dict[str, Any]:
        """The current fault: mode, renders left (None: until changed), params."""
        return {
            "mode": self._fault,
            "count_left": self._fault_left,
            "params": dict(self._fault_params),
        }

    def _take_fault(
        self, kinds: frozenset[str], url: str | None = None
    ) -> tuple[str, dict[str, Any]] | None:
        """The fault for this render request if it is of ``kinds``; counts it down.
        A ``crash`` is only for the pages it names."""
        mode = self._fault
        if mode not in kinds:
            return None
        params = self._fault_params
        if mode == "crash" and str(params.get("url", "")) not in (url or ""):
            return None
        if self._fault_left is not None:
            self._fault_left -= 1
            if self._fault_left <= 0:
                self._fault, self._fault_params, self._fault_left = "none", {}, None
        return mode, params

    # -- stats ---------------------------------------------------------------

    def stats(self) -> dict[str, Any]:
        """The ``GET /stats`` document (see the package docstring)."""
        s = self._stats
        return {
            "name": self.name,
            "port": self._port,
            "listening": self._render_server is not None,
            "slots": self.slots,
            "latency": self.latency,
            "render_mode": self.render_mode,
            "requests": s.requests,
            "by_endpoint": dict(s.by_endpoint),
            "pings": s.pings,
            "in_progress": s.in_progress,
            "max_in_progress": s.max_in_progress,
            "active": self._active,
            "max_active": s.max_active,
            "queued": len(self._waiters),
            "completed": s.completed,
            "cancelled": s.cancelled,
            "dropped": s.dropped,
            "bytes_received": s.bytes_received,
            "expired_args": s.expired_args,
            "saved_args": len(self._argcache),
            "statuses": dict(s.statuses),
            "log": list(s.log),
            "fault": self._fault,
            "fault_detail": self.fault_info(),
        }

    def reset_stats(self) -> None:
        """Zero the counters (not the fault, not what is in progress)."""
        self._stats = _Stats.fresh(len(self._jobs), self._active)

    # -- control port ----------------------------------------------------------

    def _handle_control(
        self, conn: Connection, request: Request
    ) -> Response | asyncio.Future[Response | None]:
        route = (request.method, request.path)
        if route == ("GET", "/stats"):
            return _json(self.stats())
        if route == ("POST", "/reset"):
            self.reset_stats()
            return _json({"status": "ok"})
        if route == ("GET", "/fault"):
            return _json(self.fault_info())
        if route == ("POST", "/fault"):
            try:
                spec = json.loads(request.body or b"{}")
            except ValueError as exc:
                return _json({"error": f"invalid JSON: {exc}"}, 400)
            if not isinstance(spec, dict):
                return _json({"error": "the body must be a JSON object"}, 400)
            # Shielded: a control client that hangs up must not leave a fault
            # half applied (the render port closed and never re-opened).
            return asyncio.shield(self._spawn(self._control_fault(spec)))
        if request.path in ("/stats", "/reset", "/fault"):
            return _json({"error": "method not allowed"}, 405)
        return _json(
            {"error": "not found", "endpoints": ["GET /stats", "POST /reset", "GET|POST /fault"]},
            404,
        )

    async def _control_fault(self, spec: dict[str, Any]) -> Response:
        try:
            info = await self.set_fault(spec)
        except ValueError as exc:
            return _json({"error": str(exc), "modes": list(FAULT_MODES)}, 400)
        except OSError as exc:
            return _json({"error": f"cannot re-open the render port: {exc}"}, 500)
        return _json({"status": "ok", "fault": info})

    # -- render port -----------------------------------------------------------

    def _handle_render_port(
        self, conn: Connection, request: Request
    ) -> Response | asyncio.Future[Response | None] | None:
        path = request.path
        if path in RENDER_ENDPOINTS:
            return self._handle_render(conn, request, path)
        if self._fault == "hang":
            conn.hang()
            return None
        if path == "/_ping":
            return self._handle_ping(conn, request)
        if path == "/_debug":
            if request.method != "GET":
                return Response(405, b"Method Not Allowed\n", "text/plain", (("Allow", "GET"),))
            return _json(
                {
                    "active": [job.url for job in self._jobs if job.rendering],
                    "qsize": len(self._waiters),
                    "maxrss": _maxrss_kb(),
                    "fds": _num_fds(),
                    "argcache": len(self._argcache),
                    "leaks": {},
                }
            )
        if path == "/" and request.method == "GET":
            title = f"Splash (mock) {html.escape(self.name)}"
            body = f"<html><head><title>{title}</title></head><body></body></html>"
            return Response(200, body.encode(), _HTML)
        return Response(404, _NOT_FOUND_BODY, _HTML)

    def _handle_ping(
        self, conn: Connection, request: Request
    ) -> Response | asyncio.Future[Response | None] | None:
        self._stats.pings += 1
        if request.method != "GET":
            return Response(405, b"Method Not Allowed\n", "text/plain", (("Allow", "GET"),))
        answer = _json({"status": "ok", "maxrss": _maxrss_kb() * 1024})
        mode = self._fault
        if not self._fault_params.get("ping") or mode not in _CONNECTION_FAULTS | _RENDER_FAULTS:
            return answer
        if mode == "hang":
            conn.hang()
            return None
        if mode == "latency":

            async def later() -> Response:
                await asyncio.sleep(float(self._fault_params["latency"]))
                return answer

            return self._spawn(later())
        return self._fault_answer(mode, self._fault_params, "", _DEFAULT_TIMEOUT, "/_ping")

    def _handle_render(
        self, conn: Connection, request: Request, endpoint: str
    ) -> Response | asyncio.Future[Response | None] | None:
        stats = self._stats
        stats.requests += 1
        stats.by_endpoint[endpoint] += 1
        entry: dict[str, Any] = {
            "endpoint": endpoint,
            "url": None,
            "status": None,
            "method": request.method,
            # Wall-clock arrival, comparable across processes: tests measure
            # the spacing Scrapy's download slots put between renders.
            "received_at": time.time(),
            # What the balancer sent as credentials, so tests can check that
            # a node gets its own and no other.
            "authorization": request.headers.get("authorization"),
        }
        stats.log.append(entry)
        job = _Job(conn, endpoint, entry)

        stats.bytes_received += len(request.body)
        parsed = self._parse_args(request)
        if isinstance(parsed, dict):
            parsed = self._use_argument_cache(job, parsed)
        if isinstance(parsed, dict):
            url = parsed.get("url")
            entry["url"] = url if isinstance(url, str) else None
            # Small arguments only: a 10 KB Lua source has no place in stats.
            entry["args"] = {
                k: v for k, v in parsed.items() if len(json.dumps(v, default=str)) <= 2000
            }

        taken = self._take_fault(_CONNECTION_FAULTS)
        if taken is not None:
            mode, params = taken
            stats.dropped += 1
            entry["status"] = mode
            if mode == "hang":
                conn.hang()
                return None
            if mode == "die":
                conn.drop("die")
                return None
            return Response(raw=str(params.get("garbage", "")).encode() or _DEFAULT_GARBAGE)

        stats.in_progress += 1
        stats.max_in_progress = max(stats.max_in_progress, stats.in_progress)
        if isinstance(parsed, Response):
            return self._answer(job, parsed)
        try:
            self._validate(job, parsed)
        except _BadOption as exc:
            return self._answer(job, _bad_option(exc.info))
        except _ScriptError as exc:
            return self._answer(
                job,
                _error(400, "ScriptError", "Error happened while executing Lua script", exc.info),
            )

        taken = self._take_fault(_RENDER_FAULTS, job.url)
        latency = self.latency
        if taken is not None:
            job.fault, job.fault_params = taken
            if job.fault == "latency":
                latency = float(job.fault_params["latency"])
        job.render_time = latency + float(job.args.get("wait") or 0.0)

        if (
            job.render_time <= 0
            and not self._loads_page(job)
            and self._active < self.slots
            and not self._waiters
        ):
            # Fast path: nothing to wait for, answer without a task.
            self._active += 1
            stats.max_active = max(stats.max_active, self._active)
            self._active -= 1
            return self._answer(job, self._result(job))

        loop = asyncio.get_running_loop()
        self._jobs.add(job)
        job.task = loop.create_task(self._render(job))
        deadline = job.timeout + float(job.args.get("wait") or 0.0)
        job.timer = loop.call_later(deadline, self._expire, job)
        return job.task

    def _expire(self, job: _Job) -> None:
        job.timed_out = True
        if job.task is not None:
            job.task.cancel()

    async def _render(self, job: _Job) -> Response | None:
        try:
            await self._acquire()
            try:
                job.rendering = True
                if self._loads_page(job):
                    job.page = await self._load(job)
                # A page that failed to load answers at once, as in Splash.
                if job.render_time > 0 and not isinstance(job.page, Response):
                    await asyncio.sleep(job.render_time)
            finally:
                job.rendering = False
                self._release()
        except asyncio.CancelledError:
            if not job.timed_out or job.conn.closed:
                self._end_unanswered(job)
                raise
            response = _global_timeout(job.timeout)
        else:
            if job.fault == "crash":
                # The page takes the whole process down with it: this
                # render and every other one in flight end unanswered.
                self._crash(float(job.fault_params.get("downtime", 0.5)))
                self._end_unanswered(job)
                raise asyncio.CancelledError
            response = self._result(job)
        finally:
            if job.timer is not None:
                job.timer.cancel()
        return self._answer(job, response)

    def _loads_page(self, job: _Job) -> bool:
        """Whether this render loads its page: fetch mode, a render endpoint, no fault
        that fails the render anyway."""
        # job.url is "about:blank" for a script given no url: nothing to load.
        scripted = job.endpoint in ("/execute", "/run") and job.url not in ("", "about:blank")
        return (
            self.render_mode == "fetch"
            and (job.endpoint.startswith("/render.") or scripted)
            and job.fault in (None, "latency")
        )

    async def _load(self, job: _Job) -> _Page | Response:
        """Load the job's page and run its emulated script; a RenderError answer if
        the page cannot be loaded."""
        args = job.args
        method = str(args.get("http_method") or "GET").upper()
        body = args.get("body")
        payload = body.encode("utf-8") if isinstance(body, str) else b""
        headers = _page_headers(args.get("headers"))
        cookie = _cookie_header(args.get("cookies"))
        if cookie:
            headers.append(("Cookie", cookie))
        try:
            page = await _load_page(job.url, method, headers, payload)
        except _LoadError as exc:
            job.entry["page_status"] = None
            return exc.response()
        job.entry["page_status"] = page.status
        page.text = _add_rendered_by(emulate_page_script(page.text), self.name)
        return page

    async def _acquire(self) -> None:
        """Take a render slot, waiting in FIFO order behind earlier requests."""
        if self._active < self.slots and not self._waiters:
            self._active += 1
            self._stats.max_active = max(self._stats.max_active, self._active)
            return
        waiter = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            await waiter
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled():
                self._release()  # the slot came just as we were cancelled: pass it on
            else:
                with contextlib.suppress(ValueError):
                    self._waiters.remove(waiter)
            raise

    def _release(self) -> None:
        """Hand the slot to the first waiter, or give it back."""
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return
        self._active -= 1

    def _answer(self, job: _Job, response: Response) -> Response:
        """Account for an answer being sent (or a broken one, for faults)."""
        stats = self._stats
        self._jobs.discard(job)
        stats.in_progress -= 1
        if response.raw is not None:
            stats.dropped += 1
            job.entry["status"] = job.fault or "fault"
        else:
            stats.completed += 1
            stats.statuses[str(response.status)] += 1
            job.entry["status"] = response.status
            if job.saved:
                saved = ";".join(f"{name}={key}" for name, key in job.saved.items())
                response = dataclasses.replace(
                    response, headers=(*response.headers, ("X-Splash-Saved-Arguments", saved))
                )
        return response

    def _end_unanswered(self, job: _Job) -> None:
        """Account for a render ended without an answer."""
        stats = self._stats
        self._jobs.discard(job)
        stats.in_progress -= 1
        reason = job.conn.drop_reason
        if reason is None:  # the client went away
            stats.cancelled += 1
            job.entry["status"] = "cancelled"
        else:
            stats.dropped += 1
            job.entry["status"] = reason

    # -- arguments -------------------------------------------------------------

    def _parse_args(self, request: Request) -> dict[str, Any] | Response:
        """Arguments as Splash reads them: query first, a JSON body on top."""
        args: dict[str, Any] = {}
        if request.query:
            for key, value in parse_qsl(request.query, keep_blank_values=True):
                args.setdefault(key, value)
        if request.method == "GET":
            return args
        if request.method != "POST":
            return Response(405, b"Method Not Allowed\n", "text/plain", (("Allow", "GET, POST"),))
        content_type = request.headers.get("content-type", "")
        supported = ["application/javascript", "application/json"]
        if not any(ct in content_type for ct in supported):
            error = _error(
                415,
                "UnsupportedContentType",
                "Request Content-Type is not supported",
                {"supported": supported, "received": request.headers.get("content-type")},
            )
            # Splash 3.5 writes its error JSON, then Twisted appends its own
            # "Request did not return bytes" page to the same body (seen
            # against a real node): the body is not one JSON document.
            return dataclasses.replace(error, body=error.body + _TWISTED_NOT_BYTES)
        try:
            text = request.body.decode("utf-8")
            if "application/json" in content_type:
                data = json.loads(text)
                if not isinstance(data, dict):
                    raise ValueError("the JSON body must be an object")
                args.update(data)
            if "application/javascript" in content_type:
                args["js_source"] = text
        except ValueError as exc:  # includes UnicodeDecodeError and JSONDecodeError
            return _bad_option(
                {"type": "invalid_json", "description": "Can't decode JSON", "message": str(exc)}
            )
        return args

    def _use_argument_cache(self, job: _Job, args: dict[str, Any]) -> dict[str, Any] | Response:
        """Splash's ``load_args`` / ``save_args``: values saved by an earlier
        request of this process replace their keys; a key this process does
        not hold (never saved here, evicted, or saved before a restart) is a
        498 ExpiredArguments, as in Splash."""
        load = args.pop("load_args", None)
        if isinstance(load, str):
            load = dict(p.split("=", 1) for p in load.split(";") if "=" in p)
        if isinstance(load, dict):
            expired = [name for name, key in load.items() if key not in self._argcache]
            if expired:
                self._stats.expired_args += 1
                return _error(
                    498,
                    "ExpiredArguments",
                    "Arguments stored with ``save_args`` are expired",
                    {"expired": sorted(expired)},
                )
            for name, key in load.items():
                self._argcache.move_to_end(key)
                args[name] = self._argcache[key]
        save = args.pop("save_args", None)
        names = save.split(",") if isinstance(save, str) else save
        for name in names or ():
            if name in args:
                key = hashlib.sha1(
                    json.dumps(args[name], sort_keys=True).encode(), usedforsecurity=False
                ).hexdigest()
                self._argcache[key] = args[name]
                self._argcache.move_to_end(key)
                job.saved[name] = key
        while len(self._argcache) > _ARGCACHE_SIZE:
            self._argcache.popitem(last=False)
        return args

    def _validate(self, job: _Job, args: dict[str, Any]) -> None:
        """Splash's argument checks, in Splash's order; raises _BadOption."""
        job.args = args
        timeout = _number(
            args, "timeout", min(self.max_timeout, _DEFAULT_TIMEOUT), 0.0, self.max_timeout
        )
        job.timeout = timeout
        _number(args, "wait", 0.0, 0.0, timeout)
        engine = args.get("engine") or "webkit"
        if engine not in ("webkit", "chromium"):
            _raise(
                "engine",
                f"Unknown render engine {engine}",
            )
        if engine == "chromium" and job.endpoint not in ("/render.html", "/render.png"):
            _raise(
                "engine",
                f"Render engine chromium does not support {job.endpoint}",
                supported=["/render.html", "/render.png"],
            )
        if engine == "chromium":
            refused = [a for a in _CHROMIUM_UNSUPPORTED if args.get(a)]
            if str(args.get("http_method") or "GET").upper() != "GET":
                refused.append("http_method")
            if refused:
                raise _BadOption(f"{refused[0]} is not implemented")
        if job.endpoint in ("/execute", "/run"):
            source = args.get("lua_source")
            if source is None or source == "":
                _raise(
                    "lua_source",
                    "Required argument is missing: lua_source",
                    type_="argument_required",
                )
            if "function main" not in source and "main = function" not in source:
                # The mock runs no Lua; a script without a main function is
                # the one error it can tell, answered as Splash answers it.
                raise _ScriptError(source)
            url = args.get("url")
            job.url = url if isinstance(url, str) and url else "about:blank"
        else:
            url = args.get("url")
            if url is None or url == "":
                _raise("url", "Required argument is missing: url", type_="argument_required")
            if not isinstance(url, str):
                _raise("url", "Argument 'url' has a wrong type", required_type="str")
            job.url = url
        if job.endpoint == "/render.json":
            for flag in ("html", "png", "jpeg", "har", "iframes", "script", "console", "history"):
                _flag(args, flag)

    # -- results ---------------------------------------------------------------

    def _result(self, job: _Job) -> Response:
        """What a finished render answers: its fault, a page error, or content."""
        if job.fault is not None and job.fault != "latency":
            return self._fault_answer(
                job.fault, job.fault_params, job.url, job.timeout, job.endpoint
            )
        if isinstance(job.page, Response):
            return job.page
        if job.page is not None:
            return self._loaded_content(job, job.page)
        host = urlsplit(job.url).hostname or ""
        if host == "invalid" or host.endswith(".invalid"):
            return _error(
                502,
                "RenderError",
                "Error rendering page",
                {"type": "Network", "code": 3, "text": f"Host {host} not found", "url": job.url},
            )
        return self._content(job)

    def _fault_answer(
        self, mode: str, params: dict[str, Any], url: str, timeout: float, endpoint: str
    ) -> Response:
        if mode == "504":
            return _global_timeout(timeout)
        if mode == "render-error":
            info = {"type": "HTTP", "code": 500, "text": "Internal Server Error", "url": url}
            return _error(502, "RenderError", "Error rendering page", info)
        if mode == "internal-error":
            return _error(
                500, "InternalError", "Unhandled internal error", "mock fault: internal-error"
            )
        if mode == "internal-error-502":
            return _error(
                502, "InternalError", "Unhandled internal error", "mock fault: internal-error-502"
            )
        if mode == "proxy-502":
            return Response(502, _PROXY_502_BODY, "text/html")
        if mode == "die":
            return Response(raw=b"")
        if mode == "invalid-http":
            return Response(raw=str(params.get("garbage", "")).encode() or _DEFAULT_GARBAGE)
        if mode == "truncate":
            body = self._page(url or endpoint).encode()[:100]
            head = (
                f"HTTP/1.1 200 OK\r\nContent-Type: {_HTML}\r\n"
                f"Content-Length: {_TRUNCATED_LENGTH}\r\n"
                f"X-Mock-Splash-Node: {self.name}\r\n\r\n"
            )
            return Response(raw=head.encode("latin-1") + body)
        raise AssertionError(f"no answer for fault {mode}")

    def _page(self, url: str) -> str:
        e_url, e_name = html.escape(url), html.escape(self.name)
        return (
            f"<html><head><title>Rendered {e_url}</title></head><body>"
            f'<div id="node">{e_name}</div><div id="url">{e_url}</div>'
            '<div id="rendered">rendered by mock splash</div></body></html>'
        )

    def _har(
        self,
        url: str,
        page: str,
        status: int = 200,
        status_text: str = "OK",
        headers: list[tuple[str, str]] | None = None,
        title: str | None = None,
    ) -> dict[str, Any]:
        """A one-entry HAR; fetch mode passes the loaded page's answer."""
        started = "1970-01-01T00:00:00.000Z"
        pairs = headers if headers is not None else [("Content-Type", _HTML)]
        mime = next((v for k, v in pairs if k.lower() == "content-type"), _HTML)
        entry = {
            "pageref": "1",
            "startedDateTime": started,
            "time": 0,
            "request": {
                "method": "GET",
                "url": url,
                "httpVersion": "HTTP/1.1",
                "cookies": [],
                "headers": [],
                "queryString": [],
                "headersSize": -1,
                "bodySize": -1,
            },
            "response": {
                "status": status,
                "statusText": status_text,
                "httpVersion": "HTTP/1.1",
                "cookies": [],
                "headers": [{"name": k, "value": v} for k, v in pairs],
                "content": {"size": len(page), "mimeType": mime},
                "redirectURL": "",
                "headersSize": -1,
                "bodySize": len(page),
            },
            "cache": {},
            "timings": {"blocked": 0, "dns": 0, "connect": 0, "send": 0, "wait": 0, "receive": 0},
        }
        return {
            "log": {
                "version": "1.2",
                "creator": {"name": "mock-splash", "version": "1.0"},
                "browser": {"name": "mock-splash", "version": "1.0"},
                "pages": [
                    {
                        "id": "1",
                        "title": f"Rendered {url}" if title is None else title,
                        "startedDateTime": started,
                        "pageTimings": {"onContentLoad": 0, "onLoad": 0},
                    }
                ],
                "entries": [entry],
            }
        }

    def _loaded_content(self, job: _Job, page: _Page) -> Response:
        """Fetch mode's answer for a loaded page, shaped as Splash shapes it."""
        endpoint, args = job.endpoint, job.args
        if endpoint == "/render.html":
            return Response(200, page.text.encode(), _HTML)
        if endpoint == "/render.png":
            return Response(200, PNG_BYTES, "image/png")
        if endpoint == "/render.jpeg":
            return Response(200, JPEG_BYTES, "image/jpeg")
        if endpoint in ("/execute", "/run"):
            # What the usual session script returns: splash:init_cookies,
            # splash:go, then {html, cookies = splash:get_cookies()}.
            source = args.get("lua_source")
            return _json(
                {
                    "url": page.url,
                    "http_status": page.status,
                    "html": page.text,
                    "node": self.name,
                    "cookies": _merge_cookies(args.get("cookies"), page),
                    "lua_source_length": len(source) if isinstance(source, str) else 0,
                }
            )
        title = _page_title(page.text)
        har = self._har(page.url, page.text, page.status, page.reason, page.headers, title)
        if endpoint == "/render.har":
            return _json(har)
        data: dict[str, Any] = {
            "url": page.url,
            "requestedUrl": job.url,
            "geometry": [0, 0, 1024, 768],
            "title": title,
            "node": self.name,
        }
        if _flag(args, "html"):
            data["html"] = page.text
        if _flag(args, "png"):
            data["png"] = base64.b64encode(PNG_BYTES).decode()
        if _flag(args, "jpeg"):
            data["jpeg"] = base64.b64encode(JPEG_BYTES).decode()
        if _flag(args, "history"):
            data["history"] = har["log"]["entries"]
        if _flag(args, "har"):
            data["har"] = har
        return _json(data)

    def _content(self, job: _Job) -> Response:
        endpoint, url, args = job.endpoint, job.url, job.args
        if endpoint == "/render.html":
            return Response(200, self._page(url).encode(), _HTML)
        if endpoint == "/render.png":
            return Response(200, PNG_BYTES, "image/png")
        if endpoint == "/render.jpeg":
            return Response(200, JPEG_BYTES, "image/jpeg")
        page = self._page(url)
        if endpoint == "/render.har":
            return _json(self._har(url, page))
        if endpoint == "/render.json":
            data: dict[str, Any] = {
                "url": url,
                "requestedUrl": url,
                "geometry": [0, 0, 1024, 768],
                "title": f"Rendered {url}",
                "node": self.name,
            }
            if _flag(args, "html"):
                data["html"] = page
            if _flag(args, "png"):
                data["png"] = base64.b64encode(PNG_BYTES).decode()
            if _flag(args, "jpeg"):
                data["jpeg"] = base64.b64encode(JPEG_BYTES).decode()
            if _flag(args, "har"):
                data["har"] = self._har(url, page)
            return _json(data)
        # /execute and /run: the mock cannot run Lua, so it reports what it got.
        source = args.get("lua_source")
        cookies = args.get("cookies")
        return _json(
            {
                "url": url,
                "html": page,
                "node": self.name,
                "cookies": cookies if cookies is not None else [],
                "lua_source_length": len(source) if isinstance(source, str) else 0,
            }
        )


def _raise(argument: str, description: str, type_: str = "bad_argument", **extra: Any) -> NoReturn:
    raise _BadOption({"type": type_, "argument": argument, "description": description, **extra})


def _number(args: dict[str, Any], name: str, default: float, low: float, high: float) -> float:
    """A float argument checked as Splash's ``RenderOptions.get`` does."""
    value = args.get(name)
    if value is None:
        return default
    try:
        number = float(value)
    except (TypeError, ValueError):
        _raise(name, f"Argument {name!r} has a wrong type", required_type="float")
    if not low <= number <= high:
        _raise(name, "Argument is out of the allowed range", min=low, max=high, value=number)
    return number


def _flag(args: dict[str, Any], name: str) -> int:
    """A 0/1 argument (``html=1``); Splash parses these as ints in 0..1."""
    value = args.get(name)
    if value is None:
        return 0
    try:
        number = int(value)
    except (TypeError, ValueError):
        _raise(name, f"Argument {name!r} has a wrong type", required_type="int")
    if not 0 <= number <= 1:
        _raise(name, "Argument is out of the allowed range", min=0, max=1, value=number)
    return number
