"""Run Scrapy against many Splash nodes, balanced by a Rust core.

In a Scrapy project::

    ADDONS = {"scrapy_splash_cluster.SplashClusterAddon": 0}
    SPLASH_URLS = ["http://127.0.0.1:8050", "http://127.0.0.1:8051"]

and ``yield SplashRequest(url, self.parse, args={"wait": 0.5})`` in the spider.

The asyncio API, without Scrapy::

    async with SplashCluster(["http://127.0.0.1:8050", "http://127.0.0.1:8051"]) as cluster:
        response = await cluster.request("GET", "/render.html?url=https://example.com")
"""

from scrapy_splash_cluster._cluster import SplashCluster
from scrapy_splash_cluster._core import (
    AllAttemptsFailed,
    ClusterClosed,
    ClusterError,
    ClusterTimeout,
    NodeConfig,
    NodeSnapshot,
    NoNodeAvailable,
    PoisonedRequest,
    Response,
    ResponseTooLarge,
    __version__,
)

__all__ = [
    "AllAttemptsFailed",
    "ClusterClosed",
    "ClusterError",
    "ClusterTimeout",
    "NoNodeAvailable",
    "NodeConfig",
    "NodeSnapshot",
    "PoisonedRequest",
    "Response",
    "ResponseTooLarge",
    "SlotPolicy",
    "SplashCluster",
    "SplashClusterAddon",
    "SplashClusterDownloadHandler",
    "SplashClusterMiddleware",
    "SplashFormRequest",
    "SplashJsonResponse",
    "SplashRequest",
    "SplashRequestFingerprinter",
    "SplashResponse",
    "SplashTextResponse",
    "__version__",
]

_SCRAPY_NAMES = {
    "SlotPolicy": "scrapy_splash_cluster.request",
    "SplashRequest": "scrapy_splash_cluster.request",
    "SplashFormRequest": "scrapy_splash_cluster.request",
    "SplashResponse": "scrapy_splash_cluster.response",
    "SplashTextResponse": "scrapy_splash_cluster.response",
    "SplashJsonResponse": "scrapy_splash_cluster.response",
    "SplashClusterAddon": "scrapy_splash_cluster.addon",
    "SplashClusterMiddleware": "scrapy_splash_cluster.middleware",
    "SplashClusterDownloadHandler": "scrapy_splash_cluster.handler",
    "SplashRequestFingerprinter": "scrapy_splash_cluster.fingerprint",
}


def __getattr__(name: str) -> object:
    # The Scrapy components load on first use, so that the asyncio API and
    # the mock nodes work without importing Scrapy.
    module = _SCRAPY_NAMES.get(name)
    if module is None:
        raise AttributeError(f"module 'scrapy_splash_cluster' has no attribute {name!r}")
    import importlib

    try:
        return getattr(importlib.import_module(module), name)
    except ModuleNotFoundError as error:
        if error.name != "scrapy":
            raise
        raise ModuleNotFoundError(
            f"scrapy_splash_cluster.{name} needs Scrapy, which is not installed: "
            "pip install 'scrapy>=2.19' (the asyncio API, SplashCluster, works without it)",
            name="scrapy",
        ) from error
