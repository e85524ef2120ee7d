"""The ``catalogue`` spider: every product of the demo shop, rendered by Splash.

Each page of the shop builds its content with JavaScript, so every request is
a SplashRequest: without rendering, a page has no product list and no links
to follow. The spider walks the listing pages through their "Next page" links,
follows each product link, and yields one item per product page.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Iterator
from typing import Any

import scrapy
from scrapy.http import Response
from scrapy.spidermiddlewares.httperror import HttpError
from scrapy_splash_cluster import SplashRequest
from twisted.python.failure import Failure

# Splash arguments of every page: wait 0.1 s after the page loaded, so that
# its script has run (a real Splash returns the DOM at that moment).
RENDER_ARGS: dict[str, Any] = {"wait": 0.1}


def rendered_by(response: Response) -> str | None:
    """The Splash node that rendered the page, as the mock node tags it.

    A real Splash adds no such tag; ``response.meta["splash_cluster"]["node"]``
    (the node's URL) works with both.
    """
    return response.css('meta[name="rendered-by"]::attr(content)').get()


class CatalogueSpider(scrapy.Spider):
    """Crawls the demo shop: listings, then each product, all through Splash."""

    name = "catalogue"

    def __init__(self, start_url: str | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.start_url = start_url or os.environ.get("DEMO_START_URL")
        if not self.start_url:
            raise ValueError(
                "no start page: run with -a start_url=http://127.0.0.1:PORT/catalogue/page-1.html "
                "(examples/run_demo.py does)"
            )

    async def start(self) -> AsyncIterator[SplashRequest]:
        yield self.render(self.start_url, self.parse_listing)

    def render(self, url: str, callback: Any) -> SplashRequest:
        """A SplashRequest for a shop page, with an errback that counts losses."""
        return SplashRequest(url, callback, args=RENDER_ARGS, errback=self.failed)

    def parse_listing(self, response: Response) -> Iterator[SplashRequest]:
        assert self.crawler.stats is not None
        self.crawler.stats.inc_value("demo/pages/listing")
        links = response.css("ul.products li.product a::attr(href)").getall()
        self.logger.info(
            "%s rendered by %s: %d products", response.url, rendered_by(response), len(links)
        )
        for href in links:
            yield self.render(response.urljoin(href), self.parse_product)
        next_page = response.css("a.next::attr(href)").get()
        if next_page:
            yield self.render(response.urljoin(next_page), self.parse_listing)

    def parse_product(self, response: Response) -> Iterator[dict[str, Any]]:
        assert self.crawler.stats is not None
        self.crawler.stats.inc_value("demo/pages/product")
        names = response.css("dl.fields dt::text").getall()
        values = response.css("dl.fields dd::text").getall()
        fields = dict(zip(names, values, strict=False))
        attempts = response.meta.get("splash_cluster", {}).get("attempts") or []
        yield {
            "url": response.url,
            "name": response.css("h1::text").get(),
            "price": fields.get("Price"),
            "sku": fields.get("SKU"),
            "rendered_by": rendered_by(response),
            "node": response.meta.get("splash_cluster", {}).get("node"),
            # More than one: a node failed the render and another one did it.
            "attempts": len(attempts),
        }

    def failed(self, failure: Failure) -> None:
        """A page given up on (after the cluster's and Scrapy's retries): lost."""
        assert self.crawler.stats is not None
        self.crawler.stats.inc_value("demo/pages/failed")
        request = failure.request  # type: ignore[attr-defined]
        if failure.check(HttpError):
            self.logger.error("%s answered %s", request.url, failure.value.response.status)
        else:
            self.logger.error("%s failed: %s", request.url, failure.value)
