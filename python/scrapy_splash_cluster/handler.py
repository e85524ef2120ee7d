"""The transport: a download handler for http and https that sends the
requests carrying ``meta["splash"]`` to the cluster and hands every other
request to the handler that would have had it (Scrapy's own, or the user's).

It runs after the request's download slot, so CONCURRENT_REQUESTS_PER_DOMAIN,
DOWNLOAD_DELAY and AutoThrottle apply to Splash requests; a middleware that
returned the response from ``process_request`` would skip them.
"""

from __future__ import annotations

from typing import Any

from scrapy import Request
from scrapy.core.downloader.handlers.base import BaseDownloadHandler
from scrapy.crawler import Crawler
from scrapy.exceptions import NotSupported
from scrapy.http import Response
from scrapy.utils.misc import build_from_crawler, load_object

from scrapy_splash_cluster._call import is_splash_request
from scrapy_splash_cluster._runtime import ClusterRuntime

__all__ = ["FALLBACK_HANDLERS_SETTING", "SplashClusterDownloadHandler"]

FALLBACK_HANDLERS_SETTING = "SPLASH_CLUSTER_FALLBACK_HANDLERS"
# Splash's 498 ExpiredArguments.
EXPIRED_ARGUMENTS = 498

# Scrapy's own handlers, used when neither the user nor the add-on named one.
_SCRAPY_DEFAULT = "scrapy.core.downloader.handlers.http11.HTTP11DownloadHandler"


class SplashClusterDownloadHandler(BaseDownloadHandler):
    """Splash requests to the cluster, the rest to the fallback handler."""

    # Built when the crawler starts, so a bad setting stops the crawl before
    # its first request rather than at it.
    lazy = False

    def __init__(self, crawler: Crawler) -> None:
        super().__init__(crawler)
        self._runtime = ClusterRuntime.of(crawler)
        self._fallback_paths: dict[str, Any] = {
            "http": _SCRAPY_DEFAULT,
            "https": _SCRAPY_DEFAULT,
            **crawler.settings.getdict(FALLBACK_HANDLERS_SETTING),
        }
        self._fallbacks: dict[str, Any] = {}

    def _fallback(self, request: Request) -> Any:
        scheme = request.url.split(":", 1)[0].lower()
        handler = self._fallbacks.get(scheme)
        if handler is None:
            path = self._fallback_paths.get(scheme)
            if not path:
                raise NotSupported(
                    f"{request}: scrapy-splash-cluster handles {scheme}: URLs only for Splash "
                    f'requests (with meta["splash"]), and no other handler is set for {scheme}'
                )
            handler = self._fallbacks[scheme] = build_from_crawler(load_object(path), self.crawler)
        return handler

    async def download_request(self, request: Request) -> Response:
        if is_splash_request(request):
            async with self._runtime.slot_gate.hold(str(request.meta.get("download_slot", ""))):
                response = await self._runtime.send(request)
            if response.status == EXPIRED_ARGUMENTS:
                # The node lost the saved arguments: an answer about the
                # node's memory, not the page, that HTTPCACHE must not replay.
                request.meta["_dont_cache"] = True
            return response
        return await self._fallback(request).download_request(request)

    async def close(self) -> None:
        for handler in self._fallbacks.values():
            await handler.close()
        await self._runtime.close()
