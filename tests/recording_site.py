"""A local site that answers every GET with a small page and records what
it was asked (path and headers), for tests about what reaches a website."""

from __future__ import annotations

import contextlib
import http.server
from dataclasses import dataclass
from typing import Any

from tests.local_server import base_url, serving

__all__ = ["RecordingSite"]


@dataclass
class SeenRequest:
    path: str
    headers: dict[str, str]


class _Handler(http.server.BaseHTTPRequestHandler):
    server: _Server

    def do_GET(self) -> None:
        self.server.seen.append(
            SeenRequest(self.path, {k.lower(): v for k, v in self.headers.items()})
        )
        body = b"<html><body><p id='page'>plain page</p></body></html>"
        self.send_response(200)
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True
    seen: list[SeenRequest]


class RecordingSite:
    """``with RecordingSite() as site``: ``site.url``, ``site.seen``."""

    def __init__(self) -> None:
        self._server = _Server(("127.0.0.1", 0), _Handler)
        self._server.seen = []
        self._running = contextlib.ExitStack()

    def __enter__(self) -> RecordingSite:
        self._running.enter_context(serving(self._server))
        return self

    def __exit__(self, *exc: object) -> None:
        self._running.close()

    @property
    def url(self) -> str:
        return base_url(self._server)

    @property
    def seen(self) -> list[SeenRequest]:
        return list(self._server.seen)

    def paths(self) -> list[str]:
        return [r.path for r in self._server.seen]
