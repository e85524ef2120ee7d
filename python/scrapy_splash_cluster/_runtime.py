"""One cluster per crawler, shared by the middleware and every handler
instance (Scrapy builds one handler per URL scheme: a cluster each would
multiply every node's maxconn), with the crawl's stats and end-of-crawl log.
"""

from __future__ import annotations

import itertools
import logging
import weakref
from typing import Any

from scrapy import Request, signals
from scrapy.crawler import Crawler
from scrapy.http import Headers, Response
from scrapy.utils.asyncio import is_asyncio_available

from scrapy_splash_cluster._call import build_call, encode_args
from scrapy_splash_cluster._core import ClusterError, PoisonedRequest, SplashCluster
from scrapy_splash_cluster._settings import ClusterSettings, SplashSettingsError, _label
from scrapy_splash_cluster._slot_gate import SlotGate
from scrapy_splash_cluster.argcache import SAVED_HEADER, ArgumentStore
from scrapy_splash_cluster.exceptions import to_scrapy_error

__all__ = ["STATS_PREFIX", "ClusterRuntime"]

logger = logging.getLogger(__name__)

STATS_PREFIX = "splash_cluster"

_RUNTIMES: weakref.WeakKeyDictionary[Crawler, ClusterRuntime] = weakref.WeakKeyDictionary()


class ClusterRuntime:
    """The crawler's cluster and what it reports to Scrapy."""

    def __init__(self, crawler: Crawler) -> None:
        if not is_asyncio_available():
            raise RuntimeError(
                "scrapy-splash-cluster needs Scrapy's asyncio reactor: set TWISTED_REACTOR = "
                '"twisted.internet.asyncioreactor.AsyncioSelectorReactor" (the default since '
                "Scrapy 2.13)"
            )
        self.crawler = crawler
        self.settings = ClusterSettings.from_settings(crawler.settings)
        try:
            self.cluster = SplashCluster(self.settings.nodes, **self.settings.cluster_kwargs())
        except ConnectionError as error:
            # The shared fleet's Redis: the message names the setting and
            # never the password.
            raise SplashSettingsError(str(error)) from None
        except OSError as error:
            raise SplashSettingsError(
                f"invalid SPLASH_CLUSTER_STATS_PORT: {self.settings.stats_port}; expected a "
                f"free port on {self.settings.stats_host} ({error})"
            ) from None
        self._labels = self.settings.node_labels
        self._default_timeout = crawler.settings.getfloat("DOWNLOAD_TIMEOUT", 180.0)
        self._maxsize = crawler.settings.getint("DOWNLOAD_MAXSIZE", 0)
        self._warnsize = crawler.settings.getint("DOWNLOAD_WARNSIZE", 0)
        self._closed = False
        self._inc_value: Any = None
        # A node's name in stats, by the node URL an answer names (parsed once).
        self._stats_labels: dict[str, str] = {}
        # Shared by every handler instance, as the download slots are.
        self.slot_gate = SlotGate(crawler)
        self.arguments = ArgumentStore()
        crawler.signals.connect(self._spider_closed, signal=signals.spider_closed)
        logger.info(
            "Splash cluster of %d node(s): %s (maxconn %d, retries %d, probes every %.1fs)",
            len(nodes := self.cluster.nodes()),
            ", ".join(n.url for n in nodes),
            self.settings.maxconn,
            self.settings.retries,
            self.settings.health_interval,
        )
        if self.settings.redis_url is not None:
            logger.info(
                "Splash slots shared with every crawler of the fleet %r through Redis",
                self.settings.redis_key_prefix,
            )

    @classmethod
    def of(cls, crawler: Crawler) -> ClusterRuntime:
        """The crawler's runtime, made on first use."""
        runtime = _RUNTIMES.get(crawler)
        if runtime is None:
            runtime = _RUNTIMES[crawler] = cls(crawler)
        return runtime

    def _inc(self, key: str, count: int = 1) -> None:
        inc_value = self._inc_value
        if inc_value is None:
            # Looked up once: Scrapy 2.19's StatsCollector runs Python code
            # on every attribute read, and a page counts up to 6 stats.
            stats = self.crawler.stats
            if stats is None:
                return
            inc_value = self._inc_value = stats.inc_value
        inc_value(f"{STATS_PREFIX}/{key}", count)

    async def send(self, request: Request) -> Response:
        """Sends a Splash request through the cluster; the node's raw answer
        comes back as a Response for the page's URL."""
        call = build_call(request)
        plan = self.arguments.plan(request.meta["splash"], call.args)
        timeout = float(request.meta.get("download_timeout") or self._default_timeout)
        maxsize = int(request.meta.get("download_maxsize", self._maxsize) or 0)
        self._inc("requests")
        try:
            answer = await self.cluster.request(
                "POST",
                call.path,
                headers=call.headers,
                body=call.body if plan is None else encode_args(plan.full_args),
                timeout=timeout,
                max_size=maxsize or None,
                affinity=plan.holders if plan and plan.keyed_args else None,
                affinity_body=encode_args(plan.keyed_args) if plan and plan.keyed_args else None,
            )
        except ClusterError as error:
            self._inc(f"errors/{type(error).__name__}")
            self._count_attempts(error.attempts)
            if isinstance(error, PoisonedRequest):
                self._inc("poisoned")
                logger.error(
                    "Splash request for %s not sent to another node: %s", request.url, error
                )
            raise to_scrapy_error(error, request) from None
        # Made anew (a list of tuples) at each access: read once.
        attempts = answer.attempts
        self._count_attempts(attempts)
        if plan is not None:
            self._learn_saved_arguments(plan, answer, attempts)
        node = self._stats_labels.get(answer.node)
        if node is None:
            node = self._stats_labels[answer.node] = _label(answer.node)
        self._inc(f"responses/{answer.status}")
        self._inc(f"nodes/{node}/responses/{answer.status}")
        body = answer.body
        warnsize = int(request.meta.get("download_warnsize", self._warnsize) or 0)
        if warnsize and len(body) > warnsize:
            logger.warning(
                "Received %d bytes from Splash node %s for %s, larger than the download warn "
                "size (%d)",
                len(body),
                answer.node,
                request,
                warnsize,
            )
        request.meta["splash_cluster"] = {
            "node": answer.node,
            "real_url": f"{answer.node}{call.path}",
            "attempts": attempts,
        }
        if len(attempts) > 1:
            logger.debug("%s took %d attempts: %s", request, len(attempts), attempts)
        return Response(
            url=request.url,
            status=answer.status,
            headers=Headers(answer.headers),
            body=body,
            request=request,
        )

    def _learn_saved_arguments(
        self, plan: Any, answer: Any, attempts: list[tuple[str, str, float]]
    ) -> None:
        saved = next((v for k, v in answer.headers if k == SAVED_HEADER), None)
        expired = self.arguments.learn(plan, answer.node, saved, attempts)
        if expired:
            self._inc("args/expired", expired)
        by_key = answer.node in plan.holders and not expired
        self._inc("args/sent_by_key" if by_key else "args/sent_in_full")

    def _count_attempts(self, attempts: list[tuple[str, str, float]]) -> None:
        self._inc("attempts", len(attempts))
        # An attempt after a 498 is the same request resent in full to the
        # same node at once: not a retry.
        pairs = itertools.pairwise(attempts)
        retries = sum(1 for previous, _ in pairs if not previous[1].startswith("498"))
        if retries:
            self._inc("retries", retries)
        if len(attempts) > 1:
            redispatches = sum(1 for a, b in itertools.pairwise(attempts) if a[0] != b[0])
            if redispatches:
                self._inc("redispatches", redispatches)

    def _spider_closed(self, spider: Any, reason: str) -> None:
        stats = self.crawler.stats
        queue = self.cluster.queue()
        for node in self.cluster.nodes():
            label = _label(node.url)
            if stats is not None:
                for key in (
                    "requests",
                    "failures",
                    "render_timeouts",
                    "expired_args",
                    "retries",
                    "redispatches",
                    "abandoned",
                    "downs",
                    "ups",
                ):
                    stats.set_value(f"{STATS_PREFIX}/nodes/{label}/{key}", getattr(node, key))
            logger.info(
                "Splash node %s: %s, %d requests, %d node failures, %d 504s, %d retries here "
                "(%d redispatched from other nodes), %d times DOWN",
                node.url,
                node.state,
                node.requests,
                node.failures,
                node.render_timeouts,
                node.retries,
                node.redispatches,
                node.downs,
            )
        if stats is not None:
            stats.set_value(f"{STATS_PREFIX}/queue/waits", queue["waits"])
            stats.set_value(f"{STATS_PREFIX}/queue/timeouts", queue["timeouts"])

    async def close(self) -> None:
        """Stops the probes; idempotent, as every handler instance calls it."""
        if not self._closed:
            self._closed = True
            await self.cluster.close()
