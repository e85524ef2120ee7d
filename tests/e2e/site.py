"""A small local website whose content exists only after JavaScript ran.

Why our own site: the e2e tier must prove that the real nodes *render* (a
mock, or a plain HTTP fetch, would return the page source), and the network
here is loopback only. Each ``/page/<i>`` carries its data inline and builds
``#app`` with a script; the marker ``rendered-by-js:<i>`` is assembled by the
script, so it never appears in the page source. ``/slow?delay=S`` answers
after S seconds, for renders that time out on every node. ``/heavy/<i>?work=N&mb=M``
is a page whose script computes for a while (N rounds of arithmetic) and
holds M MB of strings before it builds ``#app``: a render that is CPU-bound
in the node, so a node with less CPU takes longer over it (the adaptive
benchmark on real Splash), and that raises the node's peak RSS (the
``--maxrss`` benchmark).

The server is stdlib ``ThreadingHTTPServer`` on 127.0.0.1 in a daemon thread;
the scripts stay ES5, because QtWebKit 5.212 (the webkit engine) predates
much of ES2015.
"""

from __future__ import annotations

import contextlib
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

__all__ = ["JsSite", "marker"]

_WORDS = ("alpha", "bravo", "charlie", "delta", "echo", "foxtrot")

_PAGE = """<!DOCTYPE html>
<html><head><meta charset="utf-8"><title>loading</title></head>
<body><div id="app"></div>
<script>
var DATA = {data};
var items = [];
for (var i = 0; i < DATA.words.length; i++) {{ items.push("<li>" + DATA.words[i] + "</li>"); }}
document.getElementById("app").innerHTML =
  '<h1 id="marker">' + ["rendered", "by", "js"].join("-") + ":" + DATA.index + "</h1>" +
  '<ul id="words">' + items.join("") + "</ul>";
document.title = "Page " + DATA.index;
</script></body></html>
"""


# The script's work is a fixed count of arithmetic rounds, not a time: a node
# given less CPU then takes longer over the same page, as with a real heavy site.
_HEAVY_PAGE = """<!DOCTYPE html>
<html><head><meta charset="utf-8"><title>loading</title></head>
<body><div id="app"></div>
<script>
var x = 0;
for (var i = 1; i <= {work}; i++) {{ x = (x + Math.sqrt(i) * 1.000001) % 1000003; }}
var held = [];
for (var m = 0; m < {mb}; m++) {{
  held.push(new Array(1 << 20).join(String.fromCharCode(97 + m % 26)));
}}
document.getElementById("app").innerHTML =
  '<h1 id="marker">' + ["rendered", "by", "js"].join("-") + ":" + {index} + "</h1>" +
  '<p id="work">' + Math.floor(x) + "</p>";
document.title = "Heavy page " + {index};
</script></body></html>
"""


def marker(index: int) -> str:
    """The string that only a page whose script ran contains."""
    return f"rendered-by-js:{index}"


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        parts = urlsplit(self.path)
        if parts.path.startswith("/page/"):
            try:
                index = int(parts.path.rsplit("/", 1)[1])
            except ValueError:
                self._send(404, b"no such page", "text/plain")
                return
            words = [_WORDS[(index + k) % len(_WORDS)] for k in range(3)]
            data = json.dumps({"index": index, "words": words})
            self._send(200, _PAGE.format(data=data).encode(), "text/html; charset=utf-8")
        elif parts.path.startswith("/heavy/"):
            try:
                index = int(parts.path.rsplit("/", 1)[1])
                query = parse_qs(parts.query)
                work = int(query.get("work", ["1000000"])[0])
                mb = int(query.get("mb", ["0"])[0])
            except ValueError:
                self._send(404, b"no such page", "text/plain")
                return
            body = _HEAVY_PAGE.format(work=work, mb=mb, index=index).encode()
            self._send(200, body, "text/html; charset=utf-8")
        elif parts.path == "/slow":
            delay = float(parse_qs(parts.query).get("delay", ["5"])[0])
            # Interruptible, so that stopping the site does not wait out a delay.
            if self.server.stopping.wait(delay):
                return
            self._send(200, b"<html><body>slow</body></html>", "text/html")
        else:
            self._send(404, b"no such page", "text/plain")

    def _send(self, status: int, body: bytes, content_type: str) -> None:
        # The client (a Splash node) may have given up on a slow page.
        with contextlib.suppress(OSError):
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        """Quiet: pytest would show every request on stderr."""


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.stopping = threading.Event()

    def handle_error(self, request: object, client_address: object) -> None:
        """A node that hangs up mid-answer is normal here, not worth a traceback."""


class JsSite:
    """The site, served from a thread of the test process until :meth:`stop`."""

    def __init__(self) -> None:
        self._server = _Server()
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="e2e-site", daemon=True
        )
        self._thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def page(self, index: int) -> str:
        return f"{self.url}/page/{index}"

    def heavy(self, index: int, work: int, mb: int = 0) -> str:
        """A page whose script runs ``work`` rounds of arithmetic and holds
        ``mb`` MB of strings before it shows."""
        return f"{self.url}/heavy/{index}?work={work}&mb={mb}"

    def slow(self, delay: float) -> str:
        return f"{self.url}/slow?delay={delay}"

    def stop(self) -> None:
        self._server.stopping.set()
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)
