"""Small local websites the tests crawl through Splash."""

from __future__ import annotations

import http.server
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any


class LoginSite(http.server.BaseHTTPRequestHandler):
    """/login sets a session cookie; /account needs it."""

    def do_GET(self) -> None:
        if self.path.startswith("/login"):
            body = b"<html><body>logged in</body></html>"
            self.send_response(200)
            self.send_header("Set-Cookie", "sid=s3ss10n; Path=/")
        elif "sid=s3ss10n" in (self.headers.get("Cookie") or ""):
            body = b"<html><body><p id='who'>Welcome back</p></body></html>"
            self.send_response(200)
        else:
            body = b"<html><body><p id='who'>login required</p></body></html>"
            self.send_response(403)
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


@contextmanager
def serve_login_site() -> Iterator[str]:
    """Runs the login site on a free loopback port; yields its base URL."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), LoginSite)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
