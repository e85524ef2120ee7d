"""Runs a stdlib HTTP server of a test on loopback in a daemon thread."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import HTTPServer
from typing import TypeVar

__all__ = ["serving"]

ServerT = TypeVar("ServerT", bound=HTTPServer)


@contextmanager
def serving(server: ServerT) -> Iterator[ServerT]:
    """Serves ``server`` while the block runs; closes it after."""
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def base_url(server: HTTPServer) -> str:
    return f"http://127.0.0.1:{server.server_address[1]}"
