"""Request fingerprints that cover the page and the Splash arguments, and
never the node: the dupefilter and HTTPCACHE give the same key whichever
node rendered the page."""

from __future__ import annotations

import hashlib
import json
from typing import Any
from weakref import WeakKeyDictionary

from scrapy import Request
from scrapy.crawler import Crawler
from scrapy.utils.misc import build_from_crawler, load_object

from scrapy_splash_cluster._call import is_splash_request

__all__ = ["FALLBACK_FINGERPRINTER_SETTING", "SplashRequestFingerprinter"]

FALLBACK_FINGERPRINTER_SETTING = "SPLASH_CLUSTER_FALLBACK_REQUEST_FINGERPRINTER_CLASS"
_SCRAPY_DEFAULT = "scrapy.utils.request.RequestFingerprinter"


class SplashRequestFingerprinter:
    """The fallback fingerprinter's fingerprint (Scrapy's, or the one the user
    had), extended for Splash requests by the endpoint and the arguments."""

    def __init__(self, crawler: Crawler | None = None) -> None:
        path = _SCRAPY_DEFAULT
        if crawler is not None:
            path = crawler.settings.get(FALLBACK_FINGERPRINTER_SETTING) or _SCRAPY_DEFAULT
        fallback_cls = load_object(path)
        self._fallback = (
            build_from_crawler(fallback_cls, crawler) if crawler is not None else fallback_cls()
        )
        self._cache: WeakKeyDictionary[Request, bytes] = WeakKeyDictionary()

    @classmethod
    def from_crawler(cls, crawler: Crawler) -> SplashRequestFingerprinter:
        return cls(crawler)

    def fingerprint(self, request: Request) -> bytes:
        base: bytes = self._fallback.fingerprint(request)
        if not is_splash_request(request):
            return base
        cached = self._cache.get(request)
        if cached is None:
            options: dict[str, Any] = request.meta["splash"]
            splash_part = {
                "endpoint": str(options.get("endpoint") or "render.html").strip("/"),
                "args": options.get("args") or {},
            }
            digest = hashlib.sha1(base, usedforsecurity=False)
            digest.update(json.dumps(splash_part, sort_keys=True, default=repr).encode())
            cached = self._cache[request] = digest.digest()
        return cached
