"""The crawler's settings for the cluster, read and checked in one place.

Every value is checked when the crawler starts: a bad one stops the crawl
before its first request, with a message that names the setting, the value
and what is expected. Defaults sit next to the reads.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote, urlsplit, urlunsplit

from scrapy.settings import BaseSettings

from scrapy_splash_cluster._core import NodeConfig
from scrapy_splash_cluster._node_url import mask_password, split_credentials
from scrapy_splash_cluster.request import SlotPolicy

__all__ = ["ClusterSettings", "SplashSettingsError"]


class SplashSettingsError(ValueError):
    """A setting of scrapy-splash-cluster has a value that cannot work."""


def _fail(setting: str, value: Any, expected: str) -> SplashSettingsError:
    return SplashSettingsError(f"invalid {setting}: {value!r}; expected {expected}")


def _int(settings: BaseSettings, name: str, default: int, minimum: int) -> int:
    raw = settings.get(name, default)
    try:
        value = int(raw)
        if str(value) != str(raw).strip() and not isinstance(raw, int):
            raise ValueError
    except (TypeError, ValueError):
        raise _fail(name, raw, f"an integer >= {minimum}") from None
    if value < minimum:
        raise _fail(name, raw, f"an integer >= {minimum}")
    return value


def _seconds(settings: BaseSettings, name: str, default: float) -> float:
    raw = settings.get(name, default)
    try:
        value = float(raw)
    except (TypeError, ValueError):
        raise _fail(name, raw, "a number of seconds greater than 0") from None
    if not value > 0 or value == float("inf"):
        raise _fail(name, raw, "a number of seconds greater than 0")
    return value


def _with_credentials(url: str, user: str | None, password: str | None) -> str:
    """Puts SPLASH_USER / SPLASH_PASS into a node URL that has none of its own.
    The core turns them into that node's Authorization header and nothing else."""
    if user is None:
        return url
    parts = urlsplit(url)
    if split_credentials(url)[0] is not None or not parts.hostname:
        return url
    userinfo = quote(user, safe="") + (":" + quote(password, safe="") if password else "")
    return urlunsplit(parts._replace(netloc=f"{userinfo}@{parts.netloc}"))


@dataclass(frozen=True)
class ClusterSettings:
    """The validated settings of one crawler's cluster."""

    nodes: list[str | NodeConfig]
    maxconn: int
    retries: int
    queue_timeout: float
    health_interval: float
    health_timeout: float
    health_path: str
    fall: int
    rise: int
    error_limit: int
    connect_timeout: float
    slot_policy: str
    extra_timeout: float
    retry_budget: float = 0.2
    poison_limit: int = 2
    adaptive: bool = False
    health_fast_interval: float | None = None
    stats_port: int | None = None
    stats_host: str = "127.0.0.1"
    stats_user: str = "scrapy"
    stats_password: str | None = field(default=None, repr=False)
    node_labels: list[str] = field(default_factory=list)
    redis_url: str | None = field(default=None, repr=False)
    redis_key_prefix: str = "splash_cluster"
    redis_lease_ttl: float = 15.0
    node_maxrss: int | None = None
    dns_interval: float = 10.0

    @property
    def nodes_have_credentials(self) -> bool:
        """Whether SPLASH_USER or a node URL gives some node credentials."""
        return any(
            urlsplit(n.url if isinstance(n, NodeConfig) else n).username is not None
            for n in self.nodes
        )

    def cluster_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for SplashCluster besides the nodes."""
        return {
            "maxconn": self.maxconn,
            "retries": self.retries,
            "queue_timeout": self.queue_timeout,
            "health_interval": self.health_interval,
            "health_timeout": self.health_timeout,
            "health_path": self.health_path,
            "fall": self.fall,
            "rise": self.rise,
            "error_limit": self.error_limit,
            "connect_timeout": self.connect_timeout,
            "retry_budget": self.retry_budget,
            "poison_limit": self.poison_limit,
            "adaptive": self.adaptive,
            "health_fast_interval": self.health_fast_interval,
            "stats_port": self.stats_port,
            "stats_host": self.stats_host,
            "stats_user": self.stats_user,
            "stats_password": self.stats_password,
            "redis_url": self.redis_url,
            "redis_key_prefix": self.redis_key_prefix,
            "redis_lease_ttl": self.redis_lease_ttl,
            "node_maxrss": self.node_maxrss,
            "dns_interval": self.dns_interval,
        }

    @classmethod
    def from_settings(cls, settings: BaseSettings) -> ClusterSettings:
        user = settings.get("SPLASH_USER")
        password = settings.get("SPLASH_PASS")
        if password is not None and user is None:
            raise SplashSettingsError(
                "invalid SPLASH_PASS: set without SPLASH_USER; expected both or neither"
            )
        nodes = [_node(entry, i, user, password) for i, entry in enumerate(_node_entries(settings))]
        maxconn = _int(settings, "SPLASH_CLUSTER_MAXCONN", 5, 1)
        health_path = str(settings.get("SPLASH_CLUSTER_HEALTH_PATH", "/_ping"))
        if not health_path.startswith("/"):
            raise _fail("SPLASH_CLUSTER_HEALTH_PATH", health_path, "a path such as /_ping")
        slot_policy = settings.get("SPLASH_SLOT_POLICY", SlotPolicy.PER_DOMAIN)
        if slot_policy not in SlotPolicy.ALL:
            raise _fail("SPLASH_SLOT_POLICY", slot_policy, f"one of {', '.join(SlotPolicy.ALL)}")
        labels = [_label(n.url if isinstance(n, NodeConfig) else n) for n in nodes]
        adaptive = _bool(settings, "SPLASH_CLUSTER_ADAPTIVE", ADAPTIVE_DEFAULT)
        redis_url = _redis_url(settings)
        return cls(
            nodes=nodes,
            maxconn=maxconn,
            retries=_int(settings, "SPLASH_CLUSTER_RETRIES", 3, 0),
            queue_timeout=_seconds(settings, "SPLASH_CLUSTER_QUEUE_TIMEOUT", 60.0),
            health_interval=_seconds(settings, "SPLASH_CLUSTER_HEALTH_INTERVAL", 2.0),
            health_timeout=_seconds(settings, "SPLASH_CLUSTER_HEALTH_TIMEOUT", 1.0),
            health_path=health_path,
            fall=_int(settings, "SPLASH_CLUSTER_FALL", 3, 1),
            rise=_int(settings, "SPLASH_CLUSTER_RISE", 2, 1),
            error_limit=_int(settings, "SPLASH_CLUSTER_ERROR_LIMIT", 3, 1),
            connect_timeout=_seconds(settings, "SPLASH_CLUSTER_CONNECT_TIMEOUT", 5.0),
            slot_policy=slot_policy,
            extra_timeout=_seconds(settings, "SPLASH_CLUSTER_EXTRA_TIMEOUT", 5.0),
            retry_budget=_share(settings, "SPLASH_CLUSTER_RETRY_BUDGET", 0.2),
            poison_limit=_int(settings, "SPLASH_CLUSTER_POISON_LIMIT", 2, 1),
            adaptive=adaptive,
            health_fast_interval=(
                _seconds(settings, "SPLASH_CLUSTER_HEALTH_FAST_INTERVAL", 0.5)
                if settings.get("SPLASH_CLUSTER_HEALTH_FAST_INTERVAL") is not None
                else None
            ),
            stats_port=_port(settings, "SPLASH_CLUSTER_STATS_PORT"),
            stats_host=_ip(settings, "SPLASH_CLUSTER_STATS_HOST", "127.0.0.1"),
            stats_user=str(settings.get("SPLASH_CLUSTER_STATS_USER") or "scrapy"),
            stats_password=settings.get("SPLASH_CLUSTER_STATS_PASSWORD") or None,
            node_labels=labels,
            redis_url=redis_url,
            redis_key_prefix=str(
                settings.get("SPLASH_CLUSTER_REDIS_KEY_PREFIX") or "splash_cluster"
            ),
            redis_lease_ttl=_seconds(settings, "SPLASH_CLUSTER_REDIS_LEASE_TTL", 15.0),
            dns_interval=_dns_interval(settings),
            node_maxrss=(
                _int(settings, "SPLASH_CLUSTER_NODE_MAXRSS", 0, 1)
                if settings.get("SPLASH_CLUSTER_NODE_MAXRSS") is not None
                else None
            ),
        )


def _dns_interval(settings: BaseSettings) -> float:
    """Seconds between two resolutions of the nodes' names; 0: at start only."""
    name = "SPLASH_CLUSTER_DNS_INTERVAL"
    raw = settings.get(name, 10.0)
    try:
        value = float(raw)
    except (TypeError, ValueError):
        value = -1.0
    if not (value == 0 or 0 < value < float("inf")):
        raise _fail(
            name, raw, "a number of seconds such as 10, or 0 to resolve names at start only"
        )
    return value


# Whether node limits adapt unless SPLASH_CLUSTER_ADAPTIVE says otherwise
# (docs/benchmarks.md has the numbers behind the choice).
ADAPTIVE_DEFAULT = False

_TRUE = ("1", "true", "yes", "on")
_FALSE = ("0", "false", "no", "off")


def _bool(settings: BaseSettings, name: str, default: bool) -> bool:
    """A yes/no setting: a bool, 0/1, or true/false, yes/no, on/off."""
    raw = settings.get(name, default)
    if isinstance(raw, bool):
        return raw
    text = str(raw).strip().lower()
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise _fail(name, raw, "True or False (or 1/0, on/off, yes/no)")


def _share(settings: BaseSettings, name: str, default: float) -> float:
    """A share of requests >= 0; infinite (no budget) when the setting says "off"."""
    raw = settings.get(name, default)
    if raw is None or str(raw).strip().lower() in ("none", "off", ""):
        return float("inf")
    try:
        value = float(raw)
    except (TypeError, ValueError):
        raise _fail(name, raw, "a share of requests such as 0.2, or None for no budget") from None
    if not 0 <= value <= 100:
        expected = "a share of requests from 0 to 100 such as 0.2, or None for no budget"
        raise _fail(name, raw, expected)
    return value


def _redis_url(settings: BaseSettings) -> str | None:
    """The shared fleet's Redis, or None (one process, nothing to install)."""
    raw = settings.get("SPLASH_CLUSTER_REDIS_URL")
    if raw is None or str(raw).strip() == "":
        return None
    url = str(raw).strip()
    parts = urlsplit(split_credentials(url)[1])
    if parts.scheme not in ("redis", "rediss") or not parts.hostname:
        raise _fail(
            "SPLASH_CLUSTER_REDIS_URL",
            mask_password(url),
            "a redis:// or rediss:// URL such as redis://:password@127.0.0.1:6379/0",
        )
    return url


def _ip(settings: BaseSettings, name: str, default: str) -> str:
    raw = str(settings.get(name) or default)
    try:
        ipaddress.ip_address("127.0.0.1" if raw == "localhost" else raw)
    except ValueError:
        raise _fail(name, raw, "an IP address to listen on, such as 127.0.0.1") from None
    return raw


def _port(settings: BaseSettings, name: str) -> int | None:
    raw = settings.get(name)
    if raw is None or raw == "":
        return None
    try:
        port = int(raw)
    except (TypeError, ValueError):
        raise _fail(name, raw, "a TCP port from 0 (any free port) to 65535") from None
    if not 0 <= port <= 65535:
        raise _fail(name, raw, "a TCP port from 0 (any free port) to 65535")
    return port


def _label(url: str) -> str:
    """A node's name in stats: host:port, never credentials; a node found by
    DNS (shown as ``url (address)``) is ``host:port (address)``."""
    base, space, address = url.partition(" (")
    if space:
        return f"{_label(base)} ({address}"
    parts = urlsplit(split_credentials(url)[1])
    host = parts.hostname or url
    return f"{host}:{parts.port}" if parts.port else host


def _node_entries(settings: BaseSettings) -> list[Any]:
    urls = settings.get("SPLASH_URLS")
    if urls is None or urls == "" or urls == []:
        single = settings.get("SPLASH_URL")
        if not single:
            raise SplashSettingsError(
                "no Splash nodes: set SPLASH_URLS to a list of node URLs, such as "
                '["http://127.0.0.1:8050", "http://127.0.0.1:8051"] (or SPLASH_URL for one node)'
            )
        return [single]
    if isinstance(urls, str):
        entries = [u.strip() for u in urls.split(",")]
        if not all(entries):
            raise _fail("SPLASH_URLS", mask_password(urls), "comma-separated node URLs, none empty")
        return entries
    if not isinstance(urls, list | tuple):
        raise _fail("SPLASH_URLS", urls, "a list of node URLs or a comma-separated string")
    return list(urls)


def _node(entry: Any, index: int, user: str | None, password: str | None) -> str | NodeConfig:
    setting = f"SPLASH_URLS[{index}]"
    if isinstance(entry, str):
        url = entry.strip()
        _check_url(setting, url)
        return _with_credentials(url, user, password)
    if isinstance(entry, dict):
        unknown = set(entry) - {"url", "maxconn", "weight", "maxrss"}
        if unknown or "url" not in entry:
            raise _fail(
                setting,
                {k: (mask_password(v) if k == "url" else v) for k, v in entry.items()},
                'a URL or a dict with "url" and optional "maxconn", "weight" and "maxrss"',
            )
        url = str(entry["url"]).strip()
        _check_url(f"{setting}.url", url)
        for key in ("maxconn", "weight"):
            if key in entry and (not _is_int(entry[key]) or entry[key] < 1):
                raise _fail(f"{setting}.{key}", entry[key], "an integer >= 1")
        if "maxrss" in entry and (not _is_int(entry["maxrss"]) or entry["maxrss"] < 1):
            raise _fail(f"{setting}.maxrss", entry["maxrss"], _MAXRSS_EXPECTED)
        return NodeConfig(
            _with_credentials(url, user, password),
            maxconn=entry.get("maxconn"),
            weight=entry.get("weight"),
            maxrss=entry.get("maxrss"),
        )
    raise _fail(setting, entry, 'a URL or a dict with "url", "maxconn", "weight", "maxrss"')


_MAXRSS_EXPECTED = "megabytes as Splash's --maxrss takes them, an integer >= 1 such as 3000"


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _check_url(setting: str, url: str) -> None:
    parts = urlsplit(split_credentials(url)[1])
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise _fail(
            setting, mask_password(url), "an http:// or https:// URL such as http://127.0.0.1:8050"
        )
