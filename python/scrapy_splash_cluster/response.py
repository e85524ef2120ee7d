"""Responses of Splash requests, as scrapy-splash shaped them.

Every class has ``.url`` the page's URL (the ``url`` argument as the user
passed it, or, for a magic JSON answer, the URL Splash ended on),
``real_url`` the node endpoint that rendered it (password masked),
``splash_response_status`` and ``splash_response_headers`` the node's own
status and headers, and ``splash_node`` the node's URL.
"""

from __future__ import annotations

import base64
import json
import re
from typing import Any

from scrapy import Request
from scrapy.http import Headers, JsonResponse, Response, TextResponse
from scrapy.responsetypes import responsetypes

__all__ = ["SplashJsonResponse", "SplashResponse", "SplashTextResponse", "make_splash_response"]

_SPLASH_ATTRIBUTES = ("real_url", "splash_response_status", "splash_response_headers")

# A magic response's body is the decoded page: these headers of the page's
# original answer would describe bytes the response no longer has.
_STALE_HEADERS = {b"content-encoding", b"content-length", b"transfer-encoding"}


class _SplashResponseMixin:
    def __init__(
        self,
        *args: Any,
        real_url: str | None = None,
        splash_response_status: int | None = None,
        splash_response_headers: Headers | None = None,
        **kwargs: Any,
    ) -> None:
        self.real_url = real_url
        self.splash_response_status = splash_response_status
        self.splash_response_headers = splash_response_headers
        super().__init__(*args, **kwargs)


class SplashResponse(_SplashResponseMixin, Response):
    """A binary Splash answer (render.png, render.jpeg)."""

    attributes = (*Response.attributes, *_SPLASH_ATTRIBUTES)


class SplashTextResponse(_SplashResponseMixin, TextResponse):
    """A text Splash answer (render.html, execute returning a string)."""

    attributes = (*TextResponse.attributes, *_SPLASH_ATTRIBUTES)


class SplashJsonResponse(SplashTextResponse):
    """A JSON Splash answer (render.json, render.har, execute, errors), with
    the decoded JSON in ``.data``. With ``magic_response`` its url, status,
    headers and body come from the JSON's ``url``, ``http_status``,
    ``headers`` and ``html`` (or base64 ``body``) keys."""

    attributes = (*SplashTextResponse.attributes, "data")

    def __init__(self, *args: Any, data: Any = None, **kwargs: Any) -> None:
        self.data = data
        super().__init__(*args, **kwargs)


def _response_class(headers: Headers, body: bytes) -> type[Response]:
    # Splash labels its answers; sniffing the body would turn a small PNG
    # into text. Only an unlabelled answer is sniffed.
    if b"Content-Type" in headers:
        cls = responsetypes.from_headers(headers)
    else:
        cls = responsetypes.from_args(body=body)
    if issubclass(cls, JsonResponse):
        return SplashJsonResponse
    if issubclass(cls, TextResponse):
        return SplashTextResponse
    return SplashResponse


def _magic_headers(raw: Any) -> Headers:
    headers = Headers()
    items = raw.items() if isinstance(raw, dict) else raw
    for item in items or ():
        name, value = (item["name"], item["value"]) if isinstance(item, dict) else item
        if str(name).lower().encode() not in _STALE_HEADERS:
            headers.appendlist(name, value)
    return headers


def _status_from_error_code(data: Any) -> int | None:
    """Splash's ``info.error`` is ``http404`` when ``assert(splash:go(...))``
    met an HTTP error: that code is the page's status."""
    try:
        error = data["info"]["error"]
    except (KeyError, TypeError):
        return None
    match = re.match(r"http(\d{3})", str(error))
    return int(match.group(1)) if match else None


def make_splash_response(
    request: Request, node_answer: Response, real_url: str, options: dict[str, Any]
) -> Response:
    """Turns a node's raw answer into the Splash response the spider gets."""
    headers = node_answer.headers
    body = node_answer.body
    cls = _response_class(headers, body)
    args = options.get("args") or {}
    kwargs: dict[str, Any] = {
        "url": args.get("url") or request.url,
        "status": node_answer.status,
        "headers": headers,
        "body": body,
        "request": request,
        "flags": node_answer.flags,
        "real_url": real_url,
        "splash_response_status": node_answer.status,
        "splash_response_headers": headers,
        "ip_address": node_answer.ip_address,
    }
    if cls is SplashJsonResponse:
        try:
            data = json.loads(body)
        except ValueError:
            data = None
            cls = SplashTextResponse
        else:
            kwargs["data"] = data
            if isinstance(data, dict):
                if options.get("magic_response", True) and node_answer.status < 400:
                    kwargs.update(_magic(data, kwargs))
                if options.get("http_status_from_error_code", True):
                    kwargs["status"] = _status_from_error_code(data) or kwargs["status"]
    return cls(**kwargs)


def _magic(data: dict[str, Any], current: dict[str, Any]) -> dict[str, Any]:
    changes: dict[str, Any] = {}
    if "url" in data:
        changes["url"] = data["url"]
    if "http_status" in data:
        changes["status"] = int(data["http_status"])
    if "headers" in data:
        changes["headers"] = _magic_headers(data["headers"])
    if "html" in data:
        changes["body"] = str(data["html"]).encode("utf-8")
        if "headers" not in data:
            # The html key is text: say so, so that .text and selectors work.
            # Headers the script returned are kept as given (scrapy-splash).
            headers = Headers(current["headers"])
            headers[b"Content-Type"] = b"text/html; charset=utf-8"
            changes["headers"] = headers
        # The body is the html encoded here: decode it the same way, whatever
        # charset the script's Content-Type names.
        changes["encoding"] = "utf-8"
    elif "body" in data:
        changes["body"] = base64.b64decode(data["body"])
    return changes
