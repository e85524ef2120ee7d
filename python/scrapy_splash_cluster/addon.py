"""The Scrapy add-on: one line in ADDONS puts the middleware, the download
handler and the fingerprinter in place, without clobbering what the user set.
"""

from __future__ import annotations

from scrapy.settings import BaseSettings
from scrapy.utils.misc import load_object

from scrapy_splash_cluster.fingerprint import FALLBACK_FINGERPRINTER_SETTING
from scrapy_splash_cluster.handler import FALLBACK_HANDLERS_SETTING

__all__ = ["SplashClusterAddon"]

HANDLER = "scrapy_splash_cluster.handler.SplashClusterDownloadHandler"
MIDDLEWARE = "scrapy_splash_cluster.middleware.SplashClusterMiddleware"
COOKIES_MIDDLEWARE = "scrapy_splash_cluster.cookies.SplashCookiesMiddleware"
HTTPAUTH_MIDDLEWARE = "scrapy_splash_cluster.httpauth.SplashHttpAuthMiddleware"
ARGS_RELEASE_MIDDLEWARE = "scrapy_splash_cluster.argcache.SplashArgsReleaseMiddleware"
DEDUPLICATE_ARGS_MIDDLEWARE = "scrapy_splash_cluster.argcache.SplashDeduplicateArgsMiddleware"
FINGERPRINTER = "scrapy_splash_cluster.fingerprint.SplashRequestFingerprinter"
# Where scrapy-splash's middlewares sat: sessions before the Splash
# middleware on the way out and after it on the way back.
MIDDLEWARE_ORDER = 725
COOKIES_MIDDLEWARE_ORDER = 723
# Before RobotsTxtMiddleware (100): it turns robots.txt off for the Splash
# requests of spiders with http_user/http_pass.
HTTPAUTH_MIDDLEWARE_ORDER = 99
# Outermost: it must see every download of a request end.
ARGS_RELEASE_MIDDLEWARE_ORDER = 50
DEDUPLICATE_ARGS_MIDDLEWARE_ORDER = 100

# Schemes whose requests may be Splash requests: the web, and about:blank
# for scripts that fetch no page.
SCHEMES = ("http", "https", "about")


def _listed(components: dict, path: str) -> bool:
    target = load_object(path)
    return any((load_object(c) if isinstance(c, str) else c) is target for c in components or {})


class SplashClusterAddon:
    """``ADDONS = {"scrapy_splash_cluster.SplashClusterAddon": 0}``."""

    def update_settings(self, settings: BaseSettings) -> None:
        handlers = settings.getwithbase("DOWNLOAD_HANDLERS")
        fallbacks = dict(settings.getdict(FALLBACK_HANDLERS_SETTING))
        for scheme in SCHEMES:
            current = handlers.get(scheme)
            if current and current != HANDLER and scheme not in fallbacks:
                # The user's own http(s) handler keeps the non-Splash requests.
                fallbacks[scheme] = current
        settings.set(FALLBACK_HANDLERS_SETTING, fallbacks, "addon")
        settings["DOWNLOAD_HANDLERS"].update(dict.fromkeys(SCHEMES, HANDLER))

        middlewares = settings.getwithbase("DOWNLOADER_MIDDLEWARES")
        for path, order in (
            (MIDDLEWARE, MIDDLEWARE_ORDER),
            (COOKIES_MIDDLEWARE, COOKIES_MIDDLEWARE_ORDER),
            (HTTPAUTH_MIDDLEWARE, HTTPAUTH_MIDDLEWARE_ORDER),
            (ARGS_RELEASE_MIDDLEWARE, ARGS_RELEASE_MIDDLEWARE_ORDER),
        ):
            if not _listed(middlewares, path):
                settings["DOWNLOADER_MIDDLEWARES"][path] = order
        if not _listed(settings.getwithbase("SPIDER_MIDDLEWARES"), DEDUPLICATE_ARGS_MIDDLEWARE):
            settings["SPIDER_MIDDLEWARES"][DEDUPLICATE_ARGS_MIDDLEWARE] = (
                DEDUPLICATE_ARGS_MIDDLEWARE_ORDER
            )

        current = settings.get("REQUEST_FINGERPRINTER_CLASS")
        if current and load_object(current) is not load_object(FINGERPRINTER):
            if not settings.get(FALLBACK_FINGERPRINTER_SETTING):
                settings.set(FALLBACK_FINGERPRINTER_SETTING, current, "addon")
            settings.set(
                "REQUEST_FINGERPRINTER_CLASS",
                FINGERPRINTER,
                max(settings.getpriority("REQUEST_FINGERPRINTER_CLASS") or 0, 15),
            )
