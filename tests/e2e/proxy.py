"""A small HTTP forward proxy on loopback that requires basic auth, for the
proxy tests: it really proxies (a GET for an absolute URL is fetched from
the origin and relayed), and it records what it saw, so a test can tell a
page fetched through it from one fetched directly.

Only plain ``http://`` targets (Splash sends an absolute-URI request to an
HTTP proxy for them); CONNECT is refused with 501, which the tests do not
need. Stdlib only, in a daemon thread.
"""

from __future__ import annotations

import base64
import contextlib
import http.client
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

from tests.local_server import serving

__all__ = ["AuthProxy"]

# Hop-by-hop headers: a proxy consumes them (RFC 9110 7.6.1).
_HOP_BY_HOP = {
    "connection",
    "keep-alive",
    "proxy-authorization",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
}


@dataclass
class ProxiedRequest:
    """One request the proxy relayed (or refused)."""

    url: str
    authorized: bool
    headers: dict[str, str] = field(default_factory=dict)


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: object) -> None:  # quiet
        pass

    def do_CONNECT(self) -> None:
        self._reply(501, b"CONNECT is not supported by this test proxy")

    def do_GET(self) -> None:
        self._relay()

    def do_POST(self) -> None:
        self._relay()

    def _relay(self) -> None:
        authorized = self.headers.get("Proxy-Authorization") == self.server.expected
        seen = ProxiedRequest(
            self.path, authorized, {k.lower(): v for k, v in self.headers.items()}
        )
        self.server.seen.append(seen)
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else None
        if not authorized:
            self._reply(
                407, b"proxy authentication required", [("Proxy-Authenticate", 'Basic realm="t"')]
            )
            return
        target = urlsplit(self.path)
        if target.scheme != "http" or not target.hostname:
            self._reply(400, b"this test proxy relays absolute http:// URLs only")
            return
        headers = {k: v for k, v in self.headers.items() if k.lower() not in _HOP_BY_HOP}
        path = target.path or "/"
        if target.query:
            path += "?" + target.query
        origin = http.client.HTTPConnection(target.hostname, target.port or 80, timeout=30)
        try:
            origin.request(self.command, path, body=body, headers=headers)
            answer = origin.getresponse()
            content = answer.read()
            relayed = [
                (k, v)
                for k, v in answer.getheaders()
                if k.lower() not in _HOP_BY_HOP and k.lower() != "content-length"
            ]
            self._reply(answer.status, content, relayed)
        finally:
            origin.close()

    def _reply(self, status: int, body: bytes, headers: list[tuple[str, str]] = ()) -> None:
        self.send_response(status)
        for name, value in headers:
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, expected: str) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.expected = expected
        self.seen: list[ProxiedRequest] = []


class AuthProxy:
    """``AuthProxy("user", "secret")``: ``url`` (no credentials) and
    ``url_with_credentials``; ``seen`` lists what it was asked for."""

    def __init__(self, user: str, password: str) -> None:
        token = base64.b64encode(f"{user}:{password}".encode()).decode()
        self.user = user
        self.password = password
        self._server = _Server(f"Basic {token}")
        self._running = contextlib.ExitStack()
        self._running.enter_context(serving(self._server))

    @property
    def port(self) -> int:
        return self._server.server_address[1]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def url_with_credentials(self) -> str:
        return f"http://{self.user}:{self.password}@127.0.0.1:{self.port}"

    @property
    def seen(self) -> list[ProxiedRequest]:
        return list(self._server.seen)

    def relayed(self, url: str) -> list[ProxiedRequest]:
        """The authorized requests for ``url`` (as Splash asked for it)."""
        return [r for r in self._server.seen if r.authorized and r.url == url]

    def stop(self) -> None:
        self._running.close()
