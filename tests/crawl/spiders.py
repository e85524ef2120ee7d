"""Spiders for the crawl tests. Each takes its pages from the ``pages``
argument, a JSON list of request descriptions, so that one spider serves
every test: {"url", "endpoint", "args", "method", "body", "meta", "form"}."""

from __future__ import annotations

import json
import time
from typing import Any

import scrapy
from scrapy.http import Response
from scrapy_splash_cluster import SplashFormRequest, SplashRequest
from scrapy_splash_cluster.response import SplashJsonResponse, SplashResponse, SplashTextResponse


class PagesSpider(scrapy.Spider):
    """Requests each described page and yields one item per answer or error."""

    name = "pages"

    def __init__(self, pages: str = "[]", **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.pages: list[dict[str, Any]] = json.loads(pages)

    async def start(self):
        for i, page in enumerate(self.pages):
            yield self.request_for(i, page)

    def request_for(self, index: int, page: dict[str, Any]) -> scrapy.Request:
        """The request a page description asks for."""
        kind = page.get("kind", "splash")
        common: dict[str, Any] = {
            "callback": self.parse_page,
            "errback": self.failed,
            "cb_kwargs": {"index": index, "then": page.get("then")},
            "dont_filter": page.get("dont_filter", True),
            "priority": page.get("priority", 0),
            "meta": page.get("meta", {}),
        }
        if kind == "plain":
            return scrapy.Request(page["url"], headers=page.get("headers"), **common)
        if kind == "form":
            return SplashFormRequest(
                page["url"],
                formdata=page["formdata"],
                endpoint=page.get("endpoint", "render.html"),
                **common,
            )
        if kind == "script":
            # No page URL: a script that needs none, as scrapy-splash allowed.
            return SplashRequest(endpoint="execute", args=page["args"], **common)
        if kind == "meta":
            # A hand-made meta["splash"], as other code would make it.
            meta = {**common.pop("meta"), "splash": page["splash"]}
            return scrapy.Request(page["url"], meta=meta, **common)
        return SplashRequest(
            page["url"],
            endpoint=page.get("endpoint", "render.html"),
            args=page.get("args"),
            method=page.get("method", "GET"),
            body=self._body(page),
            slot_policy=page.get("slot_policy", "per_domain"),
            magic_response=page.get("magic_response", True),
            dont_process_response=page.get("dont_process_response", False),
            cache_args=page.get("cache_args"),
            splash_headers=page.get("splash_headers"),
            session_id=page.get("session_id", "default"),
            cookies=page.get("cookies"),
            headers=page.get("headers"),
            **common,
        )

    @staticmethod
    def _body(page: dict[str, Any]) -> str | bytes | None:
        """The body as given, or encoded as ``body_encoding`` says."""
        body = page.get("body")
        if body is not None and page.get("body_encoding"):
            return body.encode(page["body_encoding"])
        return body

    def parse_page(self, response: Response, index: int, then: dict[str, Any] | None = None):
        item: dict[str, Any] = {
            "index": index,
            "at": time.monotonic(),
            "url": response.url,
            "status": response.status,
            "class": type(response).__name__,
            "headers": {
                k.decode().lower(): v[0].decode("latin-1") for k, v in response.headers.items() if v
            },
            "node": response.meta.get("splash_cluster", {}).get("node"),
            "attempts": response.meta.get("splash_cluster", {}).get("attempts"),
            "body_size": len(response.body),
            # Everything the spider can see of the request, for the tests
            # that no credential reaches it.
            "meta_repr": repr(response.meta),
        }
        if isinstance(response, SplashTextResponse | SplashResponse):
            item["real_url"] = response.real_url
            item["splash_response_status"] = response.splash_response_status
        if isinstance(response, SplashJsonResponse):
            item["data"] = response.data
        if hasattr(response, "text"):
            item["text"] = response.text
            if response.text.lstrip().startswith("<"):
                item["node_div"] = response.css("#node::text").get()
        yield item
        if then is not None:
            # A follow-up from the callback, as a login flow makes one.
            yield self.request_for(index + 1000, then)

    def failed(self, failure):
        error = failure.value
        yield {
            "index": failure.request.cb_kwargs.get("index"),
            "error": type(error).__name__,
            "error_mro": [c.__name__ for c in type(error).__mro__],
            "message": str(error),
            "attempts": getattr(error, "attempts", None),
            "meta_repr": repr(failure.request.meta),
        }
