"""Splash's error answers, as a balancer sees them on the wire.

Why one module: every part of the mock (argument checks, page loads, faults,
timeouts) fails with the same JSON shape, and a balancer classifies failures
by that shape (its ``type``) and by whether the body is this JSON at all (a
502 with an HTML body comes from a proxy in front, not from Splash). Keeping
the builders here keeps the shape in one place.

The format is Splash 3.5's (``splash/resources.py``, ``splash/exceptions.py``):
``{"error": STATUS, "type": NAME, "description": DOCSTRING, "info": ...}``;
the descriptions are the exception docstrings, the texts below those seen
against a real node.
"""

from __future__ import annotations

import json
from typing import Any, NoReturn

from ._http import Response

__all__ = [
    "HTML",
    "JSON",
    "NOT_FOUND_BODY",
    "TWISTED_NOT_BYTES",
    "BadOption",
    "ScriptError",
    "bad_option",
    "error",
    "global_timeout",
    "json_response",
    "method_not_allowed",
    "raise_bad_argument",
]

HTML = "text/html; charset=utf-8"
JSON = "application/json"

# Twisted's page for a path no resource serves (Splash's 404).
NOT_FOUND_BODY = (
    b"<html><head><title>404 - No Such Resource</title></head>"
    b"<body><h1>No Such Resource</h1><p>No such child resource.</p></body></html>"
)
# What Twisted appends after Splash's 415 JSON (seen against a real node).
TWISTED_NOT_BYTES = (
    b"\n<html>\n  <head><title>500 - Request did not return bytes</title></head>\n"
    b"  <body>\n    <h1>Request did not return bytes</h1>\n  </body>\n</html>\n"
)


class BadOption(Exception):
    """Splash's BadOption: its ``info`` goes into the 400 answer."""

    def __init__(self, info: Any) -> None:
        super().__init__(info)
        self.info = info


class ScriptError(Exception):
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

    def response(self) -> Response:
        return error(400, "ScriptError", "Error happened while executing Lua script", self.info)


def raise_bad_argument(
    argument: str, description: str, type_: str = "bad_argument", **extra: Any
) -> NoReturn:
    """Raise the BadOption Splash raises for one argument (``info`` names it)."""
    raise BadOption({"type": type_, "argument": argument, "description": description, **extra})


def error(status: int, type_: str, description: str, info: Any) -> Response:
    """Splash's JSON error answer."""
    body = {"error": status, "type": type_, "description": description, "info": info}
    return Response(status, json.dumps(body).encode(), JSON)


def bad_option(info: Any) -> Response:
    """400 BadOption: the request's arguments are wrong."""
    return error(400, "BadOption", "Incorrect HTTP API arguments", info)


def global_timeout(timeout: float) -> Response:
    """504 GlobalTimeoutError: the render's ``timeout`` expired (queue included)."""
    # A real node reports the time left too; it is past when this is said.
    return error(
        504,
        "GlobalTimeoutError",
        "Timeout exceeded rendering page",
        {"remaining": 0, "timeout": timeout},
    )


def method_not_allowed(allow: str) -> Response:
    """Twisted's plain-text 405, with the methods the resource serves."""
    return Response(405, b"Method Not Allowed\n", "text/plain", (("Allow", allow),))


def json_response(data: Any, status: int = 200) -> Response:
    """A JSON document (answers and the control port's replies)."""
    return Response(status, json.dumps(data).encode(), JSON)
