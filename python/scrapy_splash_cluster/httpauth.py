"""Spiders with ``http_user``/``http_pass``, migrated from scrapy-splash.

With scrapy-splash, those credentials (HttpAuthMiddleware's) went to the
Splash server and never to the page's site, and robots.txt was not fetched
for the spider's Splash requests, so that the credentials could not leak to
a site through it. This middleware keeps that for the Splash requests of
such a spider, and says once, at WARNING, that SPLASH_USER/SPLASH_PASS are
the way now:

- the spider's credentials go to the node as its ``Authorization``, unless
  the request's ``splash_headers`` name one or SPLASH_USER or a node URL give
  credentials (explicit beats configured beats the spider's, as in
  scrapy-splash); in every case they are not copied to the website;
- ``dont_obey_robotstxt`` is set on them, so it sits before Scrapy's
  RobotsTxtMiddleware (100).

The spider's other requests keep HttpAuthMiddleware's own behaviour.
"""

from __future__ import annotations

import logging
from typing import Any

from scrapy import Request, signals
from scrapy.crawler import Crawler
from w3lib.http import basic_auth_header

from scrapy_splash_cluster._call import NODE_AUTHORIZATION, is_splash_request
from scrapy_splash_cluster._runtime import ClusterRuntime

__all__ = ["SplashHttpAuthMiddleware"]

logger = logging.getLogger(__name__)


def _spider_credentials(spider: Any) -> tuple[str, str] | None:
    user = getattr(spider, "http_user", "") or ""
    password = getattr(spider, "http_pass", "") or ""
    return (str(user), str(password)) if user or password else None


class SplashHttpAuthMiddleware:
    """Sends a spider's http_user/http_pass to Splash, not to the sites."""

    def __init__(self, crawler: Crawler) -> None:
        self._crawler = crawler
        self._configured = ClusterRuntime.of(crawler).settings.nodes_have_credentials
        crawler.signals.connect(self._spider_opened, signal=signals.spider_opened)

    @classmethod
    def from_crawler(cls, crawler: Crawler) -> SplashHttpAuthMiddleware:
        return cls(crawler)

    def _spider_opened(self, spider: Any) -> None:
        if _spider_credentials(spider) is None:
            return
        where = (
            "not sent anywhere: SPLASH_USER or the node URLs give the nodes' credentials"
            if self._configured
            else "sent to the Splash nodes"
        )
        logger.warning(
            "Spider %r sets http_user/http_pass: for its Splash requests they are %s, never "
            "to the pages' sites, and robots.txt is not fetched, as scrapy-splash did. This is "
            "deprecated: set SPLASH_USER and SPLASH_PASS for the nodes' credentials, and "
            "HTTPAUTH_USER, HTTPAUTH_PASS and HTTPAUTH_DOMAIN for the sites'",
            spider.name,
            where,
        )

    def process_request(self, request: Request) -> None:
        if not is_splash_request(request):
            return
        credentials = _spider_credentials(self._crawler.spider)
        if credentials is None:
            return
        request.meta["dont_obey_robotstxt"] = True
        # Empty: the credentials stay off the site's request and go nowhere.
        NODE_AUTHORIZATION[request] = b"" if self._configured else basic_auth_header(*credentials)
