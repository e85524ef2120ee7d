"""Fetch mode: loading a real page, and failing as Qt fails to load one.

Why: demos and end-to-end tests scrape a real local website through the mock
nodes, so a render must really load its ``url``, and a page that cannot be
loaded must fail as Splash reports it: 502 RenderError whose ``info`` has
``type`` Network and QNetworkReply's error ``code`` (1 refused, 2 closed,
3 host not found, 110 too many redirects, 301 unknown protocol, 399
protocol failure, 99 other). Static mode uses the same error for its one
network failure (a host under ``.invalid``).

The load is one HTTP/1.1 exchange per hop over asyncio streams
(``Connection: close``, no decompression), following up to 10 redirects as a
browser's main frame does (303, and 301/302 after a POST, become GET). Only
``http://`` urls on ``127.0.0.1`` or ``localhost`` are loaded, so a mock can
never reach beyond the machine; anything else fails as an unreachable host,
with ``info.mock`` saying why.
"""

from __future__ import annotations

import asyncio
import re
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, urljoin, urlsplit

from ._errors import error
from ._http import Response

__all__ = ["LoadError", "Page", "load_render_page", "merge_cookies", "unresolvable_host"]

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


class LoadError(Exception):
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
        return error(502, "RenderError", "Error rendering page", info)


@dataclass(slots=True)
class Page:
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


def merge_cookies(sent: Any, page: Page) -> list[dict[str, Any]]:
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
    """(host, port, request target) of a url the mock may load; LoadError if not."""
    try:
        parts = urlsplit(url)
        port = parts.port or 80
    except ValueError:
        raise LoadError(_QT_HOST_NOT_FOUND, "Invalid URL", url, _LOOPBACK_ONLY) from None
    host = (parts.hostname or "").lower()
    if parts.scheme != "http":
        raise LoadError(
            _QT_PROTOCOL_UNKNOWN, f'Protocol "{parts.scheme}" is unknown', url, _LOOPBACK_ONLY
        )
    if host not in _LOOPBACK_HOSTS:
        raise LoadError(_QT_HOST_NOT_FOUND, f"Host {host} not found", url, _LOOPBACK_ONLY)
    target = quote(parts.path or "/", safe="/%:@!$&'()*+,;=-._~")
    if parts.query:
        target += "?" + quote(parts.query, safe="/%:@!$&'()*+,;=-._~?")
    return host, port, target


async def _load_page(url: str, method: str, headers: list[tuple[str, str]], body: bytes) -> Page:
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
        return Page(url, status, reason, page_headers, text)
    raise LoadError(_QT_TOO_MANY_REDIRECTS, "Too many redirects", url)


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
        raise LoadError(_QT_CONNECTION_REFUSED, "Connection refused", url) from None
    except OSError as exc:
        raise LoadError(_QT_UNKNOWN_NETWORK_ERROR, str(exc) or "Network error", url) from None
    try:
        writer.write(head + body)
        data = bytearray()
        while chunk := await reader.read(65536):
            data += chunk
            if len(data) > _MAX_PAGE_BYTES:
                raise LoadError(_QT_PROTOCOL_FAILURE, "Page too large for the mock", url)
    except OSError:
        raise LoadError(_QT_REMOTE_HOST_CLOSED, "Connection closed", url) from None
    finally:
        writer.close()
    return _parse_http_response(bytes(data), url)


def _parse_http_response(data: bytes, url: str) -> tuple[int, str, list[tuple[str, str]], bytes]:
    head, sep, rest = data.partition(b"\r\n\r\n")
    if not sep:
        raise LoadError(_QT_REMOTE_HOST_CLOSED, "Connection closed", url)
    lines = head.decode("latin-1").split("\r\n")
    status_line = lines[0].split(" ", 2)
    if len(status_line) < 2 or not status_line[0].startswith("HTTP/"):
        raise LoadError(_QT_PROTOCOL_FAILURE, "Invalid HTTP response", url)
    try:
        status = int(status_line[1])
    except ValueError:
        raise LoadError(_QT_PROTOCOL_FAILURE, "Invalid HTTP response", url) from None
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
            raise LoadError(_QT_REMOTE_HOST_CLOSED, "Connection closed", url)
        rest = rest[: int(length)]
    return status, reason, headers, rest


def _dechunk(data: bytes, url: str) -> bytes:
    body = bytearray()
    while True:
        size_line, sep, data = data.partition(b"\r\n")
        try:
            size = int(size_line.split(b";", 1)[0].strip(), 16)
        except ValueError:
            raise LoadError(_QT_PROTOCOL_FAILURE, "Invalid chunked encoding", url) from None
        if not sep or len(data) < size:
            raise LoadError(_QT_REMOTE_HOST_CLOSED, "Connection closed", url)
        if size == 0:
            return bytes(body)
        body += data[:size]
        data = data[size + 2 :]


async def load_render_page(url: str, args: dict[str, Any]) -> Page:
    """Load a render's page with its ``http_method``, ``body``, ``headers`` and
    ``cookies`` arguments; LoadError if it cannot be loaded."""
    method = str(args.get("http_method") or "GET").upper()
    body = args.get("body")
    payload = body.encode("utf-8") if isinstance(body, str) else b""
    headers = _page_headers(args.get("headers"))
    cookie = _cookie_header(args.get("cookies"))
    if cookie:
        headers.append(("Cookie", cookie))
    return await _load_page(url, method, headers, payload)


def unresolvable_host(url: str) -> LoadError | None:
    """Static mode's one network failure: a host under ``.invalid`` (RFC 2606)
    fails as a name that does not resolve."""
    host = urlsplit(url).hostname or ""
    if host == "invalid" or host.endswith(".invalid"):
        return LoadError(_QT_HOST_NOT_FOUND, f"Host {host} not found", url)
    return None
