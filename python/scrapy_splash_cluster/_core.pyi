"""The Rust balancer core (the `_core` extension module)."""

import asyncio
from collections.abc import Iterable, Mapping
from types import TracebackType
from typing import Any, final

from typing_extensions import Self, disjoint_base

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
    "SplashCluster",
    "__version__",
    "_fleet_status",
]

__version__: str

_Attempt = tuple[str, str, float]
"""(node URL with the password masked, outcome, seconds) of one attempt."""

class ClusterError(Exception):
    """Base of every error of a cluster request."""

    attempts: list[_Attempt]
    nodes: list[NodeSnapshot]

class NoNodeAvailable(ClusterError):
    """No node had a free slot within `queue_timeout`; `.nodes` tells why."""

class AllAttemptsFailed(ClusterError):
    """Every attempt failed by a node's fault and no retry was left."""

class ClusterTimeout(ClusterError):
    """The request's own `timeout` ran out, waiting or during an attempt."""

class ResponseTooLarge(ClusterError):
    """The answer was larger than the request's `max_size`; the transfer was cut short."""

class ClusterClosed(ClusterError):
    """The cluster was closed before or while the request ran."""

class PoisonedRequest(ClusterError):
    """Nodes died under the request's renders `poison_limit` times: the page
    likely crashes Splash, so it goes to no more nodes."""

@final
class NodeConfig:
    """One node with its own limits; unset values take the cluster's defaults."""

    url: str
    maxconn: int | None
    weight: int | None
    maxrss: int | None
    def __new__(
        cls,
        url: str,
        maxconn: int | None = None,
        weight: int | None = None,
        maxrss: int | None = None,
    ) -> Self: ...

@final
class NodeSnapshot:
    """One node's state at one instant."""

    url: str
    state: str
    """"UP", "GOING DOWN", "DOWN", "COMING UP" or "DRAIN"."""
    reason: str
    since: float
    in_flight: int
    maxconn: int
    weight: int
    requests: int
    responses: dict[str, int]
    failures: int
    render_timeouts: int
    expired_args: int
    retries: int
    redispatches: int
    abandoned: int
    downs: int
    ups: int
    last_probe_ok: bool | None
    last_probe_detail: str | None
    last_probe_latency: float | None
    last_probe_age: float | None
    drain: list[str]
    """Why the node starts no new render: "operator", "maxrss", "dns"; empty if it takes renders."""
    peak_rss: int | None
    """The peak RSS (bytes) the node's last /_ping reported."""
    maxrss: int | None
    """The node's --maxrss in bytes, when given."""

@final
class Response:
    """A node's answer to a cluster request."""

    @property
    def status(self) -> int: ...
    @property
    def headers(self) -> list[tuple[str, bytes]]: ...
    @property
    def body(self) -> bytes: ...
    @property
    def node(self) -> str: ...
    @property
    def attempts(self) -> list[_Attempt]: ...

@disjoint_base
class SplashCluster:
    """A cluster of Splash nodes behind one least-conn balancer with health
    probes, an admission queue and retries with redispatch."""

    def __new__(
        cls,
        nodes: Iterable[str | NodeConfig],
        *,
        maxconn: int = 5,
        weight: int = 1,
        node_maxrss: int | None = None,
        retries: int = 3,
        queue_timeout: float = 60.0,
        health_interval: float = 2.0,
        health_timeout: float = 1.0,
        health_fast_interval: float | None = None,
        health_path: str = "/_ping",
        fall: int = 3,
        rise: int = 2,
        error_limit: int = 3,
        connect_timeout: float = 5.0,
        retry_budget: float = 0.2,
        poison_limit: int = 2,
        dns_interval: float = 10.0,
        stats_port: int | None = None,
        stats_host: str = "127.0.0.1",
        stats_user: str = "scrapy",
        stats_password: str | None = None,
        redis_url: str | None = None,
        redis_key_prefix: str = "splash_cluster",
        redis_lease_ttl: float = 15.0,
    ) -> Self: ...
    @property
    def stats_url(self) -> str | None:
        """The stats page (`http://host:port/`), or None when `stats_port` is None."""
    def report_json(self) -> str:
        """What the stats page's `/stats.json` shows, as a JSON string."""
    def request(
        self,
        method: str,
        path: str,
        headers: Mapping[str, str | bytes] | Iterable[tuple[str, str | bytes]] | None = None,
        body: bytes | None = None,
        timeout: float = 60.0,
        max_size: int | None = None,
        affinity: list[str] | None = None,
        affinity_body: bytes | None = None,
    ) -> asyncio.Future[Response]:
        """Sends a request to the cluster: waits for a node, retries node
        failures and 504s elsewhere, all within `timeout`. `max_size` cuts the
        answer short (ResponseTooLarge). `affinity` names nodes (as shown in
        `nodes()`) that hold the request's saved Splash arguments; those get
        `affinity_body` (with `load_args`) instead of `body`, and a 498 there
        is answered at once with `body` on the same node. Returns a future of
        the running loop, already under way; the package's `SplashCluster`
        wraps it in a coroutine function."""
    def nodes(self) -> list[NodeSnapshot]: ...
    def queue(self) -> dict[str, Any]: ...
    def close(self, abort: bool = False) -> asyncio.Future[None]: ...
    def __aenter__(self) -> asyncio.Future[Self]: ...
    def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> asyncio.Future[None]: ...

def _fleet_status(url: str, prefix: str) -> dict[str, Any]:
    """The shared fleet under `prefix` as the Redis at `url` holds it, read
    without joining it: nodes (url, maxconn, weight, in_flight, down),
    processes, prober. ConnectionError when Redis cannot be read."""
