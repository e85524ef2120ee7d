"""Errors a Splash request can end in, as Scrapy download errors.

Each is both the core's exception (so ``except ClusterError`` works) and the
matching Scrapy download error, so that RETRY_EXCEPTIONS keeps its meaning:
the cluster already tried ``SPLASH_CLUSTER_RETRIES`` more nodes; Scrapy's
RetryMiddleware may then schedule the request again (RETRY_TIMES), which
sends it through the cluster once more, by then perhaps with nodes back UP.
``.attempts`` lists (node, outcome, seconds) and ``.nodes`` the nodes' state.
"""

from __future__ import annotations

from typing import Any

from scrapy.exceptions import DownloadCancelledError, DownloadFailedError, DownloadTimeoutError

from scrapy_splash_cluster._core import (
    AllAttemptsFailed,
    ClusterClosed,
    ClusterError,
    ClusterTimeout,
    NoNodeAvailable,
    PoisonedRequest,
    ResponseTooLarge,
)

__all__ = [
    "SplashAllAttemptsFailed",
    "SplashClusterClosed",
    "SplashClusterTimeout",
    "SplashNoNodeAvailable",
    "SplashPoisonedRequest",
    "SplashResponseTooLarge",
    "to_scrapy_error",
]


class SplashNoNodeAvailable(NoNodeAvailable, DownloadTimeoutError):
    """No node had a free slot within SPLASH_CLUSTER_QUEUE_TIMEOUT."""


class SplashAllAttemptsFailed(AllAttemptsFailed, DownloadFailedError):
    """Every node tried failed (refused, reset, closed mid-render, ...)."""


class SplashClusterTimeout(ClusterTimeout, DownloadTimeoutError):
    """The request's download_timeout ran out, waiting or rendering."""


class SplashResponseTooLarge(ResponseTooLarge, DownloadCancelledError):
    """The node's answer was larger than DOWNLOAD_MAXSIZE."""


class SplashClusterClosed(ClusterClosed, DownloadFailedError):
    """The crawler was closing."""


class SplashPoisonedRequest(PoisonedRequest):
    """Nodes died under this request's renders SPLASH_CLUSTER_POISON_LIMIT
    times: the page likely crashes Splash. On purpose not a Scrapy download
    error, so that RetryMiddleware does not send it round to kill more nodes."""


_BY_CORE: dict[type[ClusterError], type[ClusterError]] = {
    NoNodeAvailable: SplashNoNodeAvailable,
    AllAttemptsFailed: SplashAllAttemptsFailed,
    ClusterTimeout: SplashClusterTimeout,
    ResponseTooLarge: SplashResponseTooLarge,
    ClusterClosed: SplashClusterClosed,
    PoisonedRequest: SplashPoisonedRequest,
}


def to_scrapy_error(error: ClusterError, request: Any) -> ClusterError:
    """The Scrapy-typed twin of a core error, naming the request."""
    cls = _BY_CORE.get(type(error), SplashAllAttemptsFailed)
    twin = cls(f"{request}: {error}")
    twin.attempts = getattr(error, "attempts", [])
    twin.nodes = getattr(error, "nodes", [])
    return twin
