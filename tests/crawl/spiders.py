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
            kind = page.get("kind", "splash")
            common = {
                "callback": self.parse_page,
                "errback": self.failed,
                "cb_kwargs": {"index": i},
                "dont_filter": page.get("dont_filter", True),
                "meta": page.get("meta", {}),
            }
            if kind == "plain":
                yield scrapy.Request(page["url"], **common)
            elif kind == "form":
                yield SplashFormRequest(
                    page["url"],
                    formdata=page["formdata"],
                    endpoint=page.get("endpoint", "render.html"),
                    **common,
                )
            elif kind == "script":
                # No page URL: a script that needs none, as scrapy-splash allowed.
                yield SplashRequest(endpoint="execute", args=page["args"], **common)
            elif kind == "meta":
                # A hand-made meta["splash"], as other code would make it.
                meta = {**common.pop("meta"), "splash": page["splash"]}
                yield scrapy.Request(page["url"], meta=meta, **common)
            else:
                yield SplashRequest(
                    page["url"],
                    endpoint=page.get("endpoint", "render.html"),
                    args=page.get("args"),
                    method=page.get("method", "GET"),
                    body=page.get("body"),
                    slot_policy=page.get("slot_policy", "per_domain"),
                    magic_response=page.get("magic_response", True),
                    dont_process_response=page.get("dont_process_response", False),
                    **common,
                )

    def parse_page(self, response: Response, index: int):
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

    def failed(self, failure):
        error = failure.value
        yield {
            "index": failure.request.cb_kwargs.get("index"),
            "error": type(error).__name__,
            "error_mro": [c.__name__ for c in type(error).__mro__],
            "message": str(error),
            "attempts": getattr(error, "attempts", None),
        }
