"""The faults a mock node can be told to have, and the answers they give.

Why: a balancer is only as good as its handling of each way a node (or the
proxy in front of it) fails, and each way fails differently on the wire: a
JSON error after the render's time, an HTML 502, a connection closed with no
answer or in the middle of a body, garbage instead of HTTP, silence, a port
that refuses. This module holds what each fault is (:data:`FAULT_MODES`),
the fault the node currently has (:class:`FaultState`, counted down per
render request when given a count) and the answer of each render fault
(:func:`fault_answer`). What a fault does to the node's ports and renders in
flight (refuse, restart, crash) is the server's part (``_node``).
"""

from __future__ import annotations

from typing import Any

from ._errors import HTML, error, global_timeout
from ._http import Response
from ._pages import fixed_page

__all__ = [
    "CONNECTION_FAULTS",
    "FAULT_MODES",
    "RENDER_FAULTS",
    "FaultState",
    "fault_answer",
    "garbage",
]

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

#: Faults applied when a render request arrives, before its arguments are read.
CONNECTION_FAULTS = frozenset({"die", "hang", "invalid-http"})
#: Faults applied to a valid render request: it takes a slot and its render
#: time, then fails this way (so they respect slots and the queue).
RENDER_FAULTS = frozenset(
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

_DEFAULT_GARBAGE = b"HTTP/1.1 abc garbage\r\n\r\n"
_TRUNCATED_LENGTH = 10000
_PROXY_502_BODY = (
    b"<html><body><h1>502 Bad Gateway</h1>\n"
    b"The server returned an invalid or incomplete response.\n</body></html>\n"
)


class FaultState:
    """The node's current fault: its mode, parameters and renders left."""

    def __init__(self) -> None:
        self.mode = "none"
        self.params: dict[str, Any] = {}
        #: Render requests the fault still applies to; None: until changed.
        self.left: int | None = None

    def set(self, spec: dict[str, Any]) -> str:
        """Take the fault given as the JSON of ``POST /fault``; returns its mode
        (``clear`` becomes ``none``). ValueError naming the problem if invalid."""
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
        self.mode, self.params, self.left = mode, spec, count
        if mode == "none":
            self.clear()
        return mode

    def clear(self) -> None:
        """Back to normal service."""
        self.mode, self.params, self.left = "none", {}, None

    def take(
        self, kinds: frozenset[str], url: str | None = None
    ) -> tuple[str, dict[str, Any]] | None:
        """The fault for this render request if it is of ``kinds``; counts it down.
        A ``crash`` is only for the pages it names."""
        mode = self.mode
        if mode not in kinds:
            return None
        params = self.params
        if mode == "crash" and str(params.get("url", "")) not in (url or ""):
            return None
        if self.left is not None:
            self.left -= 1
            if self.left <= 0:
                self.clear()
        return mode, params

    def info(self) -> dict[str, Any]:
        """The current fault: mode, renders left (None: until changed), params."""
        return {"mode": self.mode, "count_left": self.left, "params": dict(self.params)}


def fault_answer(
    mode: str, params: dict[str, Any], node: str, url: str, timeout: float, endpoint: str
) -> Response:
    """What a render (or a ping told ``ping=True``) answers under a fault."""
    if mode == "504":
        return global_timeout(timeout)
    if mode == "render-error":
        info = {"type": "HTTP", "code": 500, "text": "Internal Server Error", "url": url}
        return error(502, "RenderError", "Error rendering page", info)
    if mode == "internal-error":
        return error(500, "InternalError", "Unhandled internal error", "mock fault: internal-error")
    if mode == "internal-error-502":
        return error(
            502, "InternalError", "Unhandled internal error", "mock fault: internal-error-502"
        )
    if mode == "proxy-502":
        return Response(502, _PROXY_502_BODY, "text/html")
    if mode == "die":
        return Response(raw=b"")
    if mode == "invalid-http":
        return garbage(params)
    if mode == "truncate":
        body = fixed_page(url or endpoint, node).encode()[:100]
        head = (
            f"HTTP/1.1 200 OK\r\nContent-Type: {HTML}\r\n"
            f"Content-Length: {_TRUNCATED_LENGTH}\r\n"
            f"X-Mock-Splash-Node: {node}\r\n\r\n"
        )
        return Response(raw=head.encode("latin-1") + body)
    raise AssertionError(f"no answer for fault {mode}")


def garbage(params: dict[str, Any]) -> Response:
    """The ``invalid-http`` fault's bytes (param ``garbage``, or a broken status line)."""
    return Response(raw=str(params.get("garbage", "")).encode() or _DEFAULT_GARBAGE)
