"""Splash requests, shaped like scrapy-splash's so that users migrate by
changing an import.

A SplashRequest is an ordinary Scrapy request for the *page*: its URL stays
the page's URL all the way through Scrapy (slots, politeness, fingerprints,
the dupefilter and HTTPCACHE see the page, never a node), and everything
Splash needs travels in ``meta["splash"]``, in scrapy-splash's shape. A
request whose ``meta["splash"]`` was made by other code is handled the same.
"""

from __future__ import annotations

import copy
from typing import Any

from scrapy import FormRequest, Request

__all__ = ["SlotPolicy", "SplashFormRequest", "SplashRequest"]


class SlotPolicy:
    """Which download slot a Splash request waits in.

    - ``PER_DOMAIN`` (default): the page's domain, so CONCURRENT_REQUESTS_PER_DOMAIN,
      DOWNLOAD_DELAY and AutoThrottle apply to the site Splash fetches.
    - ``SINGLE_SLOT``: one slot, ``"splash"``, for every Splash request.
    - ``SCRAPY_DEFAULT``: whatever Scrapy picks; since the request keeps the
      page's URL, that is also the page's domain here (with scrapy-splash it
      was the Splash server's).
    """

    PER_DOMAIN = "per_domain"
    SINGLE_SLOT = "single_slot"
    SCRAPY_DEFAULT = "scrapy_default"

    ALL = (PER_DOMAIN, SINGLE_SLOT, SCRAPY_DEFAULT)


# Splash's endpoints; any other is refused by the middleware with this list.
ENDPOINTS = (
    "render.html",
    "render.png",
    "render.jpeg",
    "render.json",
    "render.har",
    "execute",
    "run",
)


def splash_meta(
    *,
    url: str | None,
    endpoint: str,
    args: dict[str, Any] | None,
    splash_url: str | None,
    slot_policy: str,
    splash_headers: dict[str, Any] | None,
    dont_process_response: bool,
    dont_send_headers: bool,
    magic_response: bool,
    session_id: str | None,
    http_status_from_error_code: bool,
    cache_args: list[str] | None,
) -> dict[str, Any]:
    """The ``meta["splash"]`` dict, in scrapy-splash's shape."""
    args = copy.deepcopy(args) if args else {}
    if url is not None:
        args.setdefault("url", url)
    meta: dict[str, Any] = {
        "endpoint": endpoint,
        "args": args,
        "slot_policy": slot_policy,
        "dont_process_response": dont_process_response,
        "dont_send_headers": dont_send_headers,
        "magic_response": magic_response,
        "http_status_from_error_code": http_status_from_error_code,
    }
    # Sessions are for scripts, as in scrapy-splash: only execute keeps a jar.
    if session_id is not None and endpoint.strip("/") == "execute":
        meta["session_id"] = session_id
    if splash_url is not None:
        meta["splash_url"] = splash_url
    if splash_headers:
        meta["splash_headers"] = splash_headers
    if cache_args:
        meta["cache_args"] = list(cache_args)
    return meta


class SplashRequest(Request):
    """A request rendered by Splash on one of the cluster's nodes.

    Takes scrapy-splash's arguments: ``endpoint`` (default ``render.html``),
    ``args`` (Splash arguments; ``url`` defaults to the request's URL),
    ``slot_policy``, ``splash_headers`` (HTTP headers for the node itself),
    ``dont_process_response``, ``dont_send_headers``, ``magic_response``,
    ``http_status_from_error_code``, ``session_id`` and ``cache_args`` (kept in
    ``meta["splash"]`` for the session and argument-cache layers), and
    ``splash_url`` (accepted for compatibility; the cluster picks the node).
    """

    def __init__(
        self,
        url: str | None = None,
        callback: Any = None,
        method: str = "GET",
        endpoint: str = "render.html",
        args: dict[str, Any] | None = None,
        splash_url: str | None = None,
        slot_policy: str = SlotPolicy.PER_DOMAIN,
        splash_headers: dict[str, Any] | None = None,
        dont_process_response: bool = False,
        dont_send_headers: bool = False,
        magic_response: bool = True,
        session_id: str | None = "default",
        http_status_from_error_code: bool = True,
        cache_args: list[str] | None = None,
        meta: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        if url is None:
            # scrapy-splash allows a URL-less request (an execute script that
            # fetches nothing); Scrapy needs a URL, so use a harmless one.
            url = "about:blank"
        meta = dict(meta or {})
        meta.setdefault(
            "splash",
            splash_meta(
                url=None if url == "about:blank" else url,
                endpoint=endpoint,
                args=args,
                splash_url=splash_url,
                slot_policy=slot_policy,
                splash_headers=splash_headers,
                dont_process_response=dont_process_response,
                dont_send_headers=dont_send_headers,
                magic_response=magic_response,
                session_id=session_id,
                http_status_from_error_code=http_status_from_error_code,
                cache_args=cache_args,
            ),
        )
        # As scrapy-splash: AjaxCrawlMiddleware leaves rendered requests alone.
        meta.setdefault("ajax_crawlable", True)
        super().__init__(url, callback, method=method, meta=meta, **kwargs)

    @property
    def _splash_args(self) -> dict[str, Any]:
        return self.meta.get("splash", {}).get("args", {})

    def __repr__(self) -> str:
        endpoint = self.meta.get("splash", {}).get("endpoint", "render.html")
        return f"<{self.method} {self.url} via Splash {endpoint}>"

    __str__ = __repr__


class SplashFormRequest(SplashRequest, FormRequest):
    """A form submitted through Splash: the form body and method become the
    Splash ``body`` and ``http_method`` arguments, as with scrapy-splash."""

    def __init__(
        self,
        url: str | None = None,
        callback: Any = None,
        method: str | None = None,
        formdata: Any = None,
        body: bytes | str | None = None,
        **kwargs: Any,
    ) -> None:
        # FormRequest encodes formdata into the body (POST) or the query
        # (GET); build that first, then hand the result to SplashRequest.
        form = FormRequest(url or "about:blank", method=method, formdata=formdata, body=body)
        super().__init__(
            form.url,
            callback,
            method=form.method,
            body=form.body,
            headers=kwargs.pop("headers", None) or form.headers,
            **kwargs,
        )
