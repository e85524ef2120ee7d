"""The downloader middleware: prepares Splash requests before their download
slot and turns the node's answer into the Splash response the spider gets.

Sending is the download handler's job (see ``handler.py``): this middleware
never returns a response from ``process_request``, which would skip the slots.
"""

from __future__ import annotations

import logging

from scrapy import Request
from scrapy.crawler import Crawler
from scrapy.http import Response

from scrapy_splash_cluster._call import (
    build_call,
    is_splash_request,
    render_timeout,
    splash_options,
)
from scrapy_splash_cluster._runtime import ClusterRuntime
from scrapy_splash_cluster.request import SlotPolicy
from scrapy_splash_cluster.response import (
    SplashJsonResponse,
    SplashResponse,
    SplashTextResponse,
    make_splash_response,
)

__all__ = ["SplashClusterMiddleware"]

logger = logging.getLogger(__name__)

SINGLE_SLOT = "splash"


class SplashClusterMiddleware:
    """Balances every Splash request of the crawl across the cluster.

    ``process_request`` checks ``meta["splash"]``, puts the request in the
    download slot its slot policy names, and raises ``download_timeout`` to
    the Splash ``timeout`` argument plus SPLASH_CLUSTER_EXTRA_TIMEOUT, as
    scrapy-splash did. ``process_response`` unwraps the answer into
    SplashResponse, SplashTextResponse or SplashJsonResponse.
    """

    def __init__(self, crawler: Crawler) -> None:
        self._runtime = ClusterRuntime.of(crawler)
        self._default_timeout = crawler.settings.getfloat("DOWNLOAD_TIMEOUT", 180.0)
        self._warned_splash_url = False

    @classmethod
    def from_crawler(cls, crawler: Crawler) -> SplashClusterMiddleware:
        return cls(crawler)

    def process_request(self, request: Request) -> None:
        if not is_splash_request(request):
            return None
        # A malformed meta["splash"] fails here, by name; the proxy is checked
        # when the request is sent, once HttpProxyMiddleware (750) resolved it.
        build_call(request, with_proxy=False, with_site_headers=False)
        options = splash_options(request)
        if options.get("splash_url") and not self._warned_splash_url:
            self._warned_splash_url = True
            logger.warning(
                "splash_url is ignored by scrapy-splash-cluster: the cluster picks the node "
                "among SPLASH_URLS (first seen on %s)",
                request,
            )
        policy = options.get("slot_policy", self._runtime.settings.slot_policy)
        if policy == SlotPolicy.SINGLE_SLOT:
            request.meta["download_slot"] = SINGLE_SLOT
        timeout = render_timeout(request)
        if timeout is not None:
            expected = timeout + self._runtime.settings.extra_timeout
            current = float(request.meta.get("download_timeout") or self._default_timeout)
            if current < expected:
                request.meta["download_timeout"] = expected
        return None

    def process_response(self, request: Request, response: Response) -> Response:
        if not is_splash_request(request):
            return response
        if isinstance(response, SplashResponse | SplashTextResponse | SplashJsonResponse):
            return response
        options = splash_options(request)
        if options.get("dont_process_response"):
            return response
        real_url = request.meta.get("splash_cluster", {}).get("real_url")
        return make_splash_response(request, response, real_url, options)
