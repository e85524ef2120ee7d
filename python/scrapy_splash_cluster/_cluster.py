"""The asyncio face of the cluster: the core's class with ``request`` as a
coroutine function, as aiohttp's and httpx's are, so that
``asyncio.create_task(cluster.request(...))`` and ``TaskGroup.create_task``
take it (they refuse the bare future the core returns).

Nothing is sent before the coroutine runs. Cancelling the task cancels the
core's future, which drops the Rust work (the exchange with the node is
aborted, Splash cancels the render) and frees the node's slot at once.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from scrapy_splash_cluster import _core

__all__ = ["SplashCluster"]


class SplashCluster(_core.SplashCluster):
    __doc__ = _core.SplashCluster.__doc__
    __slots__ = ()

    async def request(
        self,
        method: str,
        path: str,
        headers: Mapping[str, str | bytes] | Iterable[tuple[str, str | bytes]] | None = None,
        body: bytes | None = None,
        timeout: float = 60.0,
        max_size: int | None = None,
        affinity: list[str] | None = None,
        affinity_body: bytes | None = None,
    ) -> _core.Response:
        """Sends a request to the cluster: waits for a node, retries node
        failures and 504s elsewhere, all within ``timeout``. ``max_size`` cuts
        the answer short (ResponseTooLarge). ``affinity`` names nodes (as shown
        in ``nodes()``) that hold the request's saved Splash arguments; those
        get ``affinity_body`` (with ``load_args``) instead of ``body``, and a
        498 there is answered at once with ``body`` on the same node."""
        return await super().request(
            method,
            path,
            headers,
            body,
            timeout,
            max_size,
            affinity,
            affinity_body,
        )

    async def close(self, abort: bool = False) -> None:
        """Stops the probes and refuses new requests; with ``abort=True``,
        fails the requests under way with ClusterClosed. Idempotent."""
        await super().close(abort)
