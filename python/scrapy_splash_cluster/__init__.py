"""Run Scrapy against many Splash nodes, balanced by a Rust core.

The asyncio API::

    async with SplashCluster(["http://127.0.0.1:8050", "http://127.0.0.1:8051"]) as cluster:
        response = await cluster.request("GET", "/render.html?url=https://example.com")
"""

from scrapy_splash_cluster._core import (
    AllAttemptsFailed,
    ClusterClosed,
    ClusterError,
    ClusterTimeout,
    NodeConfig,
    NodeSnapshot,
    NoNodeAvailable,
    Response,
    ResponseTooLarge,
    SplashCluster,
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
    "Response",
    "ResponseTooLarge",
    "SplashCluster",
    "__version__",
]
