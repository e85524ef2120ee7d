"""Splash's argument cache (``cache_args``) on a cluster.

``SplashRequest(..., cache_args=["lua_source"])`` sends a large argument to a
node once, with ``save_args``; the node answers with the key it saved it
under (``X-Splash-Saved-Arguments: lua_source=<key>``), and later requests
send only ``load_args={"lua_source": <key>}``.

Splash keeps saved arguments per process, in an LRU of 500, so on a cluster
most nodes do not hold a given value, and a node that restarted holds none.
The layer therefore learns which node holds what, sends a request the short
body only where it is held (the core prefers those nodes while they are UP
and below maxconn: affinity, never at the price of an overloaded node) and
the full body elsewhere; a 498 ExpiredArguments is answered by the core at
once with the full arguments on the same node, and the layer forgets what
that node had lost.

``SplashDeduplicateArgsMiddleware`` (a spider middleware, as in
scrapy-splash) keeps one copy of each value in memory instead of one per
queued request; without it, cache_args still works.

The values it keeps live in ``spider.state``, as in scrapy-splash, so that
with ``JOBDIR`` a resumed crawl finds the values its queued requests refer
to. Each value counts the requests on their way that refer to it: one more
when the scheduler takes a request (``request_scheduled``), one less when it
refuses it (``request_dropped``) or when its download ends in a response or
an error (``SplashArgsReleaseMiddleware``, the outermost downloader
middleware). A retry or redirect is the same request going on (the release
middleware marks requests it has seen), so it counts once. At zero the
value is freed. A count the crawl cannot see end (a request some other
component dropped) keeps its value: memory, never a lost page.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from collections.abc import AsyncIterator, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from scrapy import Request, signals
from scrapy.crawler import Crawler
from scrapy.http import Response

__all__ = [
    "ArgumentStore",
    "ArgumentsPlan",
    "SplashArgsReleaseMiddleware",
    "SplashDeduplicateArgsMiddleware",
]

LOCAL_PREFIX = "LOCAL+"
REPLACED_KEY = "_replaced_args"
SAVED_HEADER = "x-splash-saved-arguments"
# In spider.state: scrapy-splash's key for the values, and the counts.
VALUES_STATE_KEY = "_splash_argument_values"
REFS_STATE_KEY = "_splash_argument_refs"
# Set on a request once its download started: scheduled again, it is a
# retry or a redirect of a request already counted.
IN_DOWNLOAD_KEY = "_splash_args_counted"


def json_hash(value: Any) -> str:
    """A value's fingerprint, stable across processes."""
    encoded = json.dumps(value, sort_keys=True, ensure_ascii=False).encode()
    return hashlib.sha1(encoded, usedforsecurity=False).hexdigest()


@dataclass
class ArgumentsPlan:
    """The two bodies of a request with cached arguments."""

    full_args: dict[str, Any]
    fingerprints: dict[str, str] = field(default_factory=dict)
    holders: list[str] = field(default_factory=list)
    keyed_args: dict[str, Any] | None = None


class ArgumentStore:
    """The crawler's memory of argument values and of which node saved which."""

    def __init__(self) -> None:
        self.values: dict[str, Any] = {}
        # local fingerprint -> requests on their way that refer to it
        self.refs: dict[str, int] = {}
        # node URL (as the core shows it) -> local fingerprint -> Splash's key
        self.saved: dict[str, dict[str, str]] = {}

    def bind_state(self, state: dict[str, Any]) -> None:
        """Keeps the values and their counts in ``spider.state`` (loaded from
        JOBDIR by Scrapy's SpiderState, pickled there at the end)."""
        values = state.setdefault(VALUES_STATE_KEY, {})
        values.update(self.values)
        self.values = values
        refs = state.setdefault(REFS_STATE_KEY, {})
        for fingerprint, count in self.refs.items():
            refs[fingerprint] = refs.get(fingerprint, 0) + count
        self.refs = refs

    @staticmethod
    def _referred(request: Request) -> Iterator[str]:
        options = request.meta.get("splash")
        if not isinstance(options, dict):
            return
        args = options.get("args") or {}
        for name in options.get(REPLACED_KEY) or ():
            value = args.get(name)
            if isinstance(value, str) and value.startswith(LOCAL_PREFIX):
                yield value[len(LOCAL_PREFIX) :]

    def hold(self, request: Request) -> None:
        """One more request on its way refers to the values it names."""
        for fingerprint in self._referred(request):
            self.refs[fingerprint] = self.refs.get(fingerprint, 0) + 1

    def release(self, request: Request) -> None:
        """One request less; values no request refers to any more are freed,
        with what the nodes were known to hold of them."""
        for fingerprint in self._referred(request):
            left = self.refs.get(fingerprint, 0) - 1
            if left > 0:
                self.refs[fingerprint] = left
                continue
            self.refs.pop(fingerprint, None)
            self.values.pop(fingerprint, None)
            for node_saved in self.saved.values():
                node_saved.pop(fingerprint, None)

    def replace_values(self, request: Request) -> Request:
        """Swaps cache_args values in ``meta["splash"]["args"]`` for their
        fingerprints, keeping one copy of each value here."""
        options = request.meta.get("splash")
        if not isinstance(options, dict) or not options.get("cache_args"):
            return request
        args = options.get("args") or {}
        replaced = options.setdefault(REPLACED_KEY, [])
        for name in options["cache_args"]:
            value = args.get(name)
            if value is None or name in replaced:
                continue
            fingerprint = json_hash(value)
            self.values[fingerprint] = value
            args[name] = LOCAL_PREFIX + fingerprint
            replaced.append(name)
        return request

    def plan(self, options: dict[str, Any], args: dict[str, Any]) -> ArgumentsPlan | None:
        """The full and the keyed body of a request, and the nodes that can
        take the keyed one; None when the request caches nothing."""
        names = [n for n in options.get("cache_args") or [] if n in args]
        if not names:
            return None
        full = dict(args)
        fingerprints: dict[str, str] = {}
        for name in names:
            value = full[name]
            if isinstance(value, str) and value.startswith(LOCAL_PREFIX):
                fingerprint = value[len(LOCAL_PREFIX) :]
                if fingerprint not in self.values:
                    raise ValueError(
                        f"Splash argument {name!r} refers to a value this crawler does not hold "
                        f"({value}); was the request made by another crawler?"
                    )
                full[name] = self.values[fingerprint]
            else:
                # The request carries the value itself: nothing to keep here.
                fingerprint = json_hash(value)
            fingerprints[name] = fingerprint
        full["save_args"] = names
        keys_by_node = {
            node: tuple(saved.get(fingerprints[n]) for n in names)
            for node, saved in self.saved.items()
        }
        complete = Counter(keys for keys in keys_by_node.values() if None not in keys)
        if not complete:
            return ArgumentsPlan(full_args=full, fingerprints=fingerprints)
        # Splash's key is a hash of the value, the same on every node; group
        # anyway, so that one keyed body serves every node it names.
        keys, _ = complete.most_common(1)[0]
        holders = [node for node, node_keys in keys_by_node.items() if node_keys == keys]
        keyed = {k: v for k, v in full.items() if k not in names and k != "save_args"}
        keyed["load_args"] = dict(zip(names, keys, strict=True))
        return ArgumentsPlan(full, fingerprints, holders, keyed)

    def learn(
        self,
        plan: ArgumentsPlan,
        node: str,
        saved_header: bytes | None,
        attempts: Iterable[tuple[str, str, float]],
    ) -> int:
        """Updates what each node holds from an answer; returns how many 498s
        the request met."""
        expired = 0
        for attempt_node, outcome, _ in attempts:
            if outcome.startswith("498"):
                expired += 1
                lost = self.saved.get(attempt_node, {})
                for fingerprint in plan.fingerprints.values():
                    lost.pop(fingerprint, None)
        if saved_header:
            by_name = dict(
                part.split("=", 1)
                for part in saved_header.decode("latin-1").split(";")
                if "=" in part
            )
            node_saved = self.saved.setdefault(node, {})
            for name, key in by_name.items():
                fingerprint = plan.fingerprints.get(name.strip())
                if fingerprint is not None:
                    node_saved[fingerprint] = key.strip()
        return expired


class SplashDeduplicateArgsMiddleware:
    """Keeps one copy of each cached Splash argument value in memory, not one
    per queued request (scrapy-splash's spider middleware of the same name),
    in ``spider.state``, and counts the requests that refer to each."""

    def __init__(self, crawler: Crawler) -> None:
        from scrapy_splash_cluster._runtime import ClusterRuntime

        self._store = ClusterRuntime.of(crawler).arguments
        crawler.signals.connect(self._spider_opened, signal=signals.spider_opened)
        crawler.signals.connect(self._scheduled, signal=signals.request_scheduled)
        crawler.signals.connect(self._dropped, signal=signals.request_dropped)

    @classmethod
    def from_crawler(cls, crawler: Crawler) -> SplashDeduplicateArgsMiddleware:
        return cls(crawler)

    def _spider_opened(self, spider: Any) -> None:
        # Scrapy's SpiderState (with JOBDIR) has loaded spider.state by now:
        # its receiver was connected first.
        if not hasattr(spider, "state"):
            spider.state = {}
        self._store.bind_state(spider.state)

    def _scheduled(self, request: Request, spider: Any = None) -> None:
        if not request.meta.get(IN_DOWNLOAD_KEY):
            self._store.hold(request)

    def _dropped(self, request: Request, spider: Any = None) -> None:
        self._store.release(request)

    def _replace(self, item: Any) -> Any:
        if not isinstance(item, Request):
            return item
        # A new request, even one made with meta=response.meta.
        item.meta.pop(IN_DOWNLOAD_KEY, None)
        return self._store.replace_values(item)

    async def process_start(self, start: AsyncIterator[Any]) -> AsyncIterator[Any]:
        async for item in start:
            yield self._replace(item)

    def process_spider_output(self, response: Any, result: Iterable[Any]) -> Iterable[Any]:
        for item in result:
            yield self._replace(item)

    async def process_spider_output_async(
        self, response: Any, result: AsyncIterator[Any]
    ) -> AsyncIterator[Any]:
        async for item in result:
            yield self._replace(item)


class SplashArgsReleaseMiddleware:
    """The outermost downloader middleware: sees every download of a request
    start, and end in a response or an error (a retry or a redirect ends no
    request: it goes on), and releases the argument values it referred to."""

    def __init__(self, crawler: Crawler) -> None:
        from scrapy_splash_cluster._runtime import ClusterRuntime

        self._store = ClusterRuntime.of(crawler).arguments

    @classmethod
    def from_crawler(cls, crawler: Crawler) -> SplashArgsReleaseMiddleware:
        return cls(crawler)

    def process_request(self, request: Request) -> None:
        if request.meta.get("splash"):
            request.meta[IN_DOWNLOAD_KEY] = True

    def process_response(self, request: Request, response: Response) -> Response:
        self._end(request)
        return response

    def process_exception(self, request: Request, exception: Exception) -> None:
        self._end(request)

    def _end(self, request: Request) -> None:
        if request.meta.pop(IN_DOWNLOAD_KEY, False):
            self._store.release(request)
