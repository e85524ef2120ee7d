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
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass, field
from typing import Any

from scrapy import Request
from scrapy.crawler import Crawler

__all__ = ["ArgumentStore", "ArgumentsPlan", "SplashDeduplicateArgsMiddleware"]

LOCAL_PREFIX = "LOCAL+"
REPLACED_KEY = "_replaced_args"
SAVED_HEADER = "x-splash-saved-arguments"


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
        # node URL (as the core shows it) -> local fingerprint -> Splash's key
        self.saved: dict[str, dict[str, str]] = {}

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
                fingerprint = json_hash(value)
                self.values.setdefault(fingerprint, value)
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
    per queued request (scrapy-splash's spider middleware of the same name)."""

    def __init__(self, crawler: Crawler) -> None:
        from scrapy_splash_cluster._runtime import ClusterRuntime

        self._store = ClusterRuntime.of(crawler).arguments

    @classmethod
    def from_crawler(cls, crawler: Crawler) -> SplashDeduplicateArgsMiddleware:
        return cls(crawler)

    def _replace(self, item: Any) -> Any:
        return self._store.replace_values(item) if isinstance(item, Request) else item

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
