"""From a Scrapy request carrying ``meta["splash"]`` to the HTTP call a Splash
node takes: the endpoint, the JSON arguments, the node's own headers.

Pure functions, no I/O: the middleware validates with them before the
download slot, the handler sends what they build.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any
from weakref import WeakKeyDictionary

from scrapy import Request
from scrapy.http.headers import Headers

from scrapy_splash_cluster._proxy import SITE_EXCLUDED_HEADERS, ProxyError, splash_proxy
from scrapy_splash_cluster.request import ENDPOINTS, SlotPolicy

__all__ = [
    "NODE_AUTHORIZATION",
    "SESSION_COOKIES_KEY",
    "SplashCall",
    "build_call",
    "encode_args",
    "is_splash_request",
    "splash_options",
]

# Where the session middleware puts a session's cookies for this request.
SESSION_COOKIES_KEY = "_splash_session_cookies"

# An Authorization for the node, by request, for the credentials of a spider's
# http_user/http_pass (see httpauth.py). Beside the request, not in its meta:
# meta reaches the spider with the response, credentials must not.
NODE_AUTHORIZATION: WeakKeyDictionary[Request, bytes] = WeakKeyDictionary()


class SplashRequestError(ValueError):
    """A request's ``meta["splash"]`` cannot be sent; the message says why."""


@dataclass(frozen=True)
class SplashCall:
    """What goes to a node for one Scrapy request."""

    endpoint: str
    args: dict[str, Any]
    headers: dict[str, str]

    @property
    def path(self) -> str:
        return "/" + self.endpoint

    @property
    def body(self) -> bytes:
        return encode_args(self.args)


def encode_args(args: dict[str, Any]) -> bytes:
    """Splash arguments as the JSON body of a POST."""
    return json.dumps(args, ensure_ascii=False, sort_keys=True).encode()


def is_splash_request(request: Request) -> bool:
    """Whether the request is for Splash."""
    return bool(request.meta.get("splash"))


def splash_options(request: Request) -> dict[str, Any]:
    """``meta["splash"]``, checked for shape."""
    options = request.meta.get("splash")
    if not isinstance(options, dict):
        raise SplashRequestError(
            f'{request}: meta["splash"] must be a dict like '
            f'{{"endpoint": "render.html", "args": {{...}}}}, not {type(options).__name__}'
        )
    return options


def _site_headers(headers: Headers) -> dict[str, str]:
    """The request's headers that are the page's, for Splash's ``headers``
    argument: none of those that describe the crawler's own connection."""
    excluded = SITE_EXCLUDED_HEADERS
    # A Connection header names more hop-by-hop headers (RFC 9110 7.6.1).
    connection = headers.getlist(b"Connection")
    if connection:
        excluded = set(excluded)
        for value in connection:
            excluded.update(t.strip().lower() for t in value.decode("latin-1").split(","))
    site: dict[str, str] = {}
    for name, values in headers.items():
        if values:
            text = name.decode("latin-1")
            if text.lower() not in excluded:
                site[text] = b",".join(values).decode("latin-1")
    return site


def _body_text(request: Request) -> str:
    """Splash's ``body`` argument is a string in a JSON document: a body that
    is not UTF-8 cannot travel in it unchanged."""
    try:
        return request.body.decode("utf-8")
    except UnicodeDecodeError as error:
        raise SplashRequestError(
            f"{request}: the request body is not UTF-8 (byte {error.start}); Splash's body "
            "argument is text, so these bytes would reach the site changed. Encode the body "
            "as UTF-8 (FormRequest(..., formdata=..., encoding='utf-8')), or send it "
            "from a Lua script"
        ) from None


def build_call(
    request: Request, *, with_proxy: bool = True, with_site_headers: bool = True
) -> SplashCall:
    """The node call for a Splash request, as scrapy-splash built it: the
    Splash arguments from ``meta["splash"]["args"]``, with the page's URL,
    method, body, headers and proxy filled in from the request where not
    given. ``with_proxy=False`` leaves the proxy out: before
    HttpProxyMiddleware has run, the request's proxy is not known yet.
    ``with_site_headers=False`` leaves the page's headers out, for a check
    of the request that sends nothing: converting them cannot fail, and is
    most of the work."""
    options = splash_options(request)
    endpoint = str(options.get("endpoint") or "render.html").strip("/")
    if endpoint not in ENDPOINTS:
        raise SplashRequestError(
            f"{request}: unknown Splash endpoint {endpoint!r}; "
            f"expected one of {', '.join(ENDPOINTS)}"
        )
    slot_policy = options.get("slot_policy", SlotPolicy.PER_DOMAIN)
    if slot_policy not in SlotPolicy.ALL:
        raise SplashRequestError(
            f"{request}: unknown slot_policy {slot_policy!r}; expected one of "
            f"{', '.join(SlotPolicy.ALL)}"
        )
    args = options.get("args") or {}
    if not isinstance(args, dict):
        raise SplashRequestError(
            f'{request}: meta["splash"]["args"] must be a dict of Splash arguments'
        )
    args = dict(args)
    if not request.url.startswith("about:"):
        args.setdefault("url", request.url)
    if request.method != "GET":
        args.setdefault("http_method", request.method)
    if request.body and "body" not in args:
        args["body"] = _body_text(request)
    in_session = SESSION_COOKIES_KEY in request.meta
    if in_session:
        args.setdefault("cookies", request.meta[SESSION_COOKIES_KEY])
    # Splash 3.5's chromium engine answers 400 "headers is not implemented"
    # to any headers argument: the request's own are not sent to it.
    chromium = args.get("engine") == "chromium"
    if with_proxy and "proxy" not in args:
        try:
            proxy = splash_proxy(request, args.get("engine"))
        except ProxyError as error:
            raise SplashRequestError(str(error)) from None
        if proxy is not None:
            args["proxy"] = proxy
    if with_site_headers and not options.get("dont_send_headers") and not chromium:
        headers = _site_headers(request.headers)
        if in_session:
            # The session jar is the one source of cookies of a session
            # request; a Cookie header from Scrapy's CookiesMiddleware would
            # send the page cookies the script deleted.
            headers = {k: v for k, v in headers.items() if k.lower() != "cookie"}
        if request in NODE_AUTHORIZATION:
            # HttpAuthMiddleware's header from the spider's http_user: for
            # Splash, never for the site (httpauth.py).
            headers = {k: v for k, v in headers.items() if k.lower() != "authorization"}
        if headers:
            args.setdefault("headers", headers)
    node_headers = {"Content-Type": "application/json"}
    spider_authorization = NODE_AUTHORIZATION.get(request)
    if spider_authorization:
        node_headers["Authorization"] = spider_authorization.decode("latin-1")
    for name, value in (options.get("splash_headers") or {}).items():
        node_headers[str(name)] = value.decode() if isinstance(value, bytes) else str(value)
    return SplashCall(endpoint=endpoint, args=args, headers=node_headers)


def render_timeout(request: Request) -> float | None:
    """The Splash ``timeout`` argument, if the request sets one."""
    args = request.meta.get("splash", {}).get("args") or {}
    if "timeout" not in args:
        return None
    try:
        return float(args["timeout"])
    except (TypeError, ValueError):
        raise SplashRequestError(
            f"{request}: the Splash timeout argument must be a number of seconds, "
            f"not {args['timeout']!r}"
        ) from None
