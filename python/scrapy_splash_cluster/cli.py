"""``splash-cluster``: a look at Splash nodes from a shell.

``splash-cluster status URL [URL ...]`` probes each node once (``/_ping``
for life and latency, ``/_debug`` for its own view of its load) and prints a
table, or JSON with ``--json``. The exit code is 1 when a node is down, so
scripts and health checks can use it.

``splash-cluster status --redis REDIS_URL [--prefix P]`` prints the shared
fleet as Redis holds it instead: per node its maxconn, the renders in flight
across every crawler and the fleet's verdict; the live crawlers and the one
that probes. It reads, never joins, the fleet.

``splash-cluster drain --stats STATS_URL NODE`` drains a node of a running
crawl (no new renders, those in flight finish; in a shared fleet, for every
crawler), ``splash-cluster ready --stats STATS_URL NODE`` makes it take renders
again. STATS_URL is the crawl's stats page, ``http://user:password@host:port``
or with the password in ``SPLASH_CLUSTER_STATS_PASSWORD``; NODE is the node's
URL or ``host:port``. The exit code is 0 when the page did it, 1 when it
refused (the page's message is printed), 2 when it could not be reached.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from typing import Any
from urllib.parse import quote, urlsplit

from scrapy_splash_cluster._node_url import basic_authorization, mask_password, split_credentials

__all__ = ["NodeStatus", "main", "probe"]


@dataclass
class NodeStatus:
    """One node's answer to the status probe."""

    url: str
    state: str
    ping_ms: float | None = None
    maxrss_mb: float | None = None
    active: int | None = None
    queue: int | None = None
    error: str | None = None


class _NoRedirects(urllib.request.HTTPRedirectHandler):
    # A node's credentials must never follow a redirect to another host.
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


# Nodes are probed directly: a proxy from http_proxy in the environment would
# see the node's Authorization header (and answer for the node).
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}), _NoRedirects)


def _split_credentials(url: str) -> tuple[str, str | None, str]:
    """The URL without credentials, its Authorization header, and the URL
    as shown (password masked)."""
    url = url.rstrip("/")
    userinfo, bare = split_credentials(url)
    auth = basic_authorization(userinfo) if userinfo is not None else None
    return bare, auth, mask_password(url)


def _get_json(url: str, auth: str | None, timeout: float) -> Any:
    request = urllib.request.Request(url, headers={"Authorization": auth} if auth else {})
    with _OPENER.open(request, timeout=timeout) as answer:
        return json.loads(answer.read())


def probe(url: str, timeout: float = 3.0) -> NodeStatus:
    """Probes one node: UP when /_ping answers 200."""
    bare, auth, shown = _split_credentials(url)
    started = time.monotonic()
    try:
        _get_json(f"{bare}/_ping", auth, timeout)
    except (OSError, ValueError, urllib.error.URLError) as error:
        reason = getattr(error, "reason", None) or error
        return NodeStatus(url=shown, state="DOWN", error=str(reason))
    status = NodeStatus(url=shown, state="UP", ping_ms=(time.monotonic() - started) * 1000)
    try:
        debug = _get_json(f"{bare}/_debug", auth, timeout)
    except (OSError, ValueError, urllib.error.URLError) as error:
        status.error = f"/_debug: {getattr(error, 'reason', None) or error}"
        return status
    if isinstance(debug.get("maxrss"), int | float):
        status.maxrss_mb = debug["maxrss"] / 1024  # Splash reports KB
    if isinstance(debug.get("active"), list):
        status.active = len(debug["active"])
    if isinstance(debug.get("qsize"), int):
        status.queue = debug["qsize"]
    return status


def _cell(value: float | int | None, fmt: str) -> str:
    return "-" if value is None else format(value, fmt)


def _table(statuses: list[NodeStatus]) -> str:
    rows = [("NODE", "STATE", "PING", "MAXRSS", "ACTIVE", "QUEUE", "NOTE")]
    for s in statuses:
        rows.append(
            (
                s.url,
                s.state,
                "-" if s.ping_ms is None else f"{s.ping_ms:.1f} ms",
                "-" if s.maxrss_mb is None else f"{s.maxrss_mb:.0f} MB",
                _cell(s.active, "d"),
                _cell(s.queue, "d"),
                s.error or "",
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join(
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        for row in rows
    )


def _fleet_table(fleet: dict[str, Any]) -> str:
    rows = [("NODE", "STATE", "IN FLIGHT", "NOTE")]
    for node in fleet["nodes"]:
        state = "DOWN" if node["down"] else "UP"
        rows.append(
            (node["url"], state, f"{node['in_flight']}/{node['maxconn']}", node["down"] or "")
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = [
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        for row in rows
    ]
    lines.append(f"crawlers: {len(fleet['processes'])} live; prober: {fleet['prober'] or 'none'}")
    lines += [f"  {process}" for process in fleet["processes"]]
    return "\n".join(lines)


def _fleet_status(url: str, prefix: str, as_json: bool) -> int:
    from scrapy_splash_cluster._core import _fleet_status as read_fleet

    try:
        fleet = read_fleet(url, prefix)
    except ConnectionError as error:
        print(f"splash-cluster: {error}", file=sys.stderr)
        return 2
    print(json.dumps(fleet, indent=2) if as_json else _fleet_table(fleet))
    return 1 if any(node["down"] for node in fleet["nodes"]) else 0


def _control(stats: str, node: str, action: str, user: str) -> int:
    """POSTs ``/nodes/{node}/{action}`` to a crawl's stats page."""
    userinfo, bare = split_credentials(stats.rstrip("/"))
    if userinfo is None:
        password = os.environ.get("SPLASH_CLUSTER_STATS_PASSWORD")
        if password is None:
            print(
                "splash-cluster: the stats page needs its password: give "
                "http://user:password@host:port or set SPLASH_CLUSTER_STATS_PASSWORD",
                file=sys.stderr,
            )
            return 2
        userinfo = f"{quote(user, safe='')}:{quote(password, safe='')}"
    parts = urlsplit(bare)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        print(
            f"splash-cluster: invalid stats URL {mask_password(stats)!r}; "
            "expected http://host:port of the crawl's stats page",
            file=sys.stderr,
        )
        return 2
    request = urllib.request.Request(
        f"{bare}/nodes/{quote(node, safe='')}/{action}",
        method="POST",
        data=b"",
        headers={"Authorization": basic_authorization(userinfo)},
    )
    try:
        with _OPENER.open(request, timeout=10) as answer:
            result = json.loads(answer.read())
    except urllib.error.HTTPError as error:
        message = error.read().decode("utf-8", "replace").strip()
        print(f"splash-cluster: {action} refused ({error.code}): {message}", file=sys.stderr)
        return 1
    except (OSError, ValueError) as error:
        reason = getattr(error, "reason", None) or error
        print(f"splash-cluster: cannot reach {mask_password(stats)}: {reason}", file=sys.stderr)
        return 2
    print(
        f"{result['node']} {result['state']}: {result['reason']} ({result['in_flight']} in flight)"
    )
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="splash-cluster", description="Look at a cluster of Splash nodes."
    )
    commands = parser.add_subparsers(dest="command", required=True)
    status = commands.add_parser("status", help="probe nodes once and print their state")
    status.add_argument("urls", nargs="*", metavar="URL", help="Splash node URL")
    status.add_argument(
        "--redis",
        metavar="REDIS_URL",
        help="print the shared fleet as this Redis holds it (SPLASH_CLUSTER_REDIS_URL)",
    )
    status.add_argument(
        "--prefix",
        default="splash_cluster",
        help="the fleet's key prefix (SPLASH_CLUSTER_REDIS_KEY_PREFIX; splash_cluster)",
    )
    status.add_argument("--json", action="store_true", help="print JSON instead of a table")
    status.add_argument("--timeout", type=float, default=3.0, help="seconds per probe (3)")
    for action, text in (
        ("drain", "drain a node of a running crawl: no new renders, those in flight finish"),
        ("ready", "make a drained node take renders again"),
    ):
        command = commands.add_parser(action, help=text)
        command.add_argument(
            "--stats",
            required=True,
            metavar="STATS_URL",
            help="the crawl's stats page, http://user:password@host:port "
            "(or the password in SPLASH_CLUSTER_STATS_PASSWORD)",
        )
        command.add_argument(
            "--user", default="scrapy", help="the stats page's user, if not in the URL (scrapy)"
        )
        command.add_argument("node", metavar="NODE", help="the node's URL or host:port")
    args = parser.parse_args(argv)
    if args.command in ("drain", "ready"):
        return _control(args.stats, args.node, args.command, args.user)
    if args.redis:
        return _fleet_status(args.redis, args.prefix, args.json)
    if not args.urls:
        parser.error("give node URLs, or --redis REDIS_URL for a shared fleet")
    for url in args.urls:
        parts = urlsplit(split_credentials(url)[1])
        if parts.scheme not in ("http", "https") or not parts.hostname:
            parser.error(f"invalid node URL {mask_password(url)!r}; expected http://host:port")
    with ThreadPoolExecutor(max_workers=min(16, len(args.urls))) as pool:
        statuses = list(pool.map(lambda u: probe(u, args.timeout), args.urls))
    if args.json:
        print(json.dumps([asdict(s) for s in statuses], indent=2))
    else:
        print(_table(statuses))
    return 1 if any(s.state != "UP" for s in statuses) else 0


if __name__ == "__main__":
    sys.exit(main())
