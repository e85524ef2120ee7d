"""Renders cut by real Splash 3.5's --maxrss exits, with and without the limit given.

    python bench/maxrss_splash.py [--pages 4000] [--repeats 1] [--growth-mb 80]
                                  [--heavy-mb 4] [--heavy-every 600] [--wait 0.5]

The real-Splash half of bench/maxrss.py (issue 13). Two real Splash nodes
with ``--slots 5`` and ``--maxrss``; a supervisor starts a node again on its
port as soon as it exits (what Docker's ``restart: always`` or a Kubernetes
Deployment does). Pages are the e2e site's ``/heavy/<i>`` (``wait`` ``--wait``
s); one in ``--heavy-every`` holds ``--heavy-mb`` MB of strings while it
renders, which raises the node's peak RSS by about 25 times that (measured:
a fresh node's 214 MB, 250 after light pages, 307 after one 2 MB page, 403
after one 4 MB page), and peak RSS never comes down: the heavy pages of a
real site that push a node over its limit. The limit is measured, not
guessed: a fresh node's peak RSS after 10 light renders plus
``--growth-mb``, so one heavy page takes a node over it. Splash compares the
peak with the limit every 60 s after its start and exits at once when over
it, cutting every render in flight; a node told nothing keeps getting
renders until then.

Contenders, alternating, on fresh nodes each: the add-on told the limit
(``SPLASH_CLUSTER_NODE_MAXRSS``: its probes read ``maxrss`` from ``/_ping``
and drain a node past it) and the add-on not told. Renders cut are the
attempts that ended with the connection closed or reset mid-render (the
crawl's own record of every attempt); pages lost are the crawl's errors.
Prints one JSON line per crawl and a summary; the section in
bench/sections/maxrss.md is written from it by hand.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import threading
import time
import urllib.parse
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from scripts.splash import RealSplashNode, http_get, install, start_in_parallel  # noqa: E402
from tests.crawl_helpers import Crawl  # noqa: E402
from tests.e2e.site import JsSite  # noqa: E402

CUT = ("connection closed", "connection reset")


class Supervisor:
    """Starts each node again as soon as it has exited, counting the exits."""

    def __init__(self, nodes: list[RealSplashNode]) -> None:
        self.nodes = nodes
        self.exits = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(0.1):
            for node in self.nodes:
                if not node.running and not self._stop.is_set():
                    self.exits += 1
                    node.restart()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=90)


def peak_rss_mb(node: RealSplashNode) -> float:
    _, body = http_get(f"{node.url}/_ping", timeout=5)
    return json.loads(body)["maxrss"] / 2**20  # bytes in /_ping (KB in its log)


def page_url(site: JsSite, index: int, args: argparse.Namespace) -> str:
    heavy = index % args.heavy_every == args.heavy_every - 1
    return site.heavy(index, args.work, args.heavy_mb if heavy else 0)


def calibrate(site: JsSite, args: argparse.Namespace, logs: Path) -> dict[str, float]:
    """A fresh node's peak RSS after ten light renders, one after another."""
    node = RealSplashNode(
        slots=args.slots, log_dir=logs, name="calibrate", parent_pid=os.getpid()
    ).start()
    try:
        for i in range(10):
            query = urllib.parse.urlencode(
                {"url": site.heavy(i, args.work, 0), "wait": 0, "timeout": 60}
            )
            status, _ = http_get(f"{node.url}/render.html?{query}", timeout=90)
            if status != 200:
                raise RuntimeError(f"calibration render answered {status}")
        fresh = peak_rss_mb(node)
    finally:
        node.stop()
    return {"fresh_peak_mb": round(fresh, 1), "maxrss_mb": int(fresh + args.growth_mb)}


def run(site: JsSite, args: argparse.Namespace, maxrss: int, told: bool, logs: Path) -> dict:
    nodes = [
        RealSplashNode(
            slots=args.slots,
            maxrss_mb=maxrss,
            log_dir=logs,
            name=f"n{i}-{told}",
            parent_pid=os.getpid(),
        )
        for i in range(2)
    ]
    start_in_parallel(nodes)
    supervisor = Supervisor(nodes)
    try:
        settings: dict[str, Any] = {
            "SPLASH_URLS": [n.url for n in nodes],
            "SPLASH_CLUSTER_MAXCONN": args.slots,
            "CONCURRENT_REQUESTS": 2 * args.slots,
            "CONCURRENT_REQUESTS_PER_DOMAIN": 2 * args.slots,
            "HTTPERROR_ALLOW_ALL": True,
            # What the crawl's retries cannot save is a lost page here.
            "RETRY_ENABLED": False,
        }
        if told:
            settings["SPLASH_CLUSTER_NODE_MAXRSS"] = maxrss
        pages = [
            {"url": page_url(site, i, args), "args": {"wait": args.wait, "timeout": 60}}
            for i in range(args.pages)
        ]
        started = time.monotonic()
        result = Crawl(settings, pages).result(timeout=3600)
        elapsed = time.monotonic() - started
    finally:
        supervisor.stop()
        for node in nodes:
            node.stop()
    errors = [i for i in result.items if "error" in i]
    attempts = [a for i in result.items for a in i.get("attempts") or []]
    return {
        "told": told,
        "maxrss_mb": maxrss,
        "pages": args.pages,
        "lost": args.pages - (len(result.items) - len(errors)),
        "exits": supervisor.exits,
        "renders_cut": sum(1 for a in attempts if str(a[1]).startswith(CUT)),
        "attempts": len(attempts),
        "seconds": round(elapsed, 1),
        # What ended each lost page: the typed error, its attempts.
        "errors": [f"{i['error']}: {i.get('message')}" for i in errors],
        "pages_per_s": round(args.pages / elapsed, 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(prog="python bench/maxrss_splash.py", description=__doc__)
    parser.add_argument("--pages", type=int, default=4000)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--growth-mb", type=int, default=80, help="limit over the fresh peak")
    parser.add_argument("--heavy-mb", type=int, default=4, help="MB a heavy page holds")
    parser.add_argument("--heavy-every", type=int, default=600, help="one heavy page in N")
    parser.add_argument("--wait", type=float, default=0.5, help="Splash's wait, every page")
    parser.add_argument("--work", type=int, default=100_000, help="rounds of the page's script")
    parser.add_argument("--slots", type=int, default=5)
    args = parser.parse_args()
    install(quiet=True)
    logs = Path(tempfile.mkdtemp(prefix="bench-maxrss-"))
    site = JsSite()
    rows: dict[bool, list[dict]] = {False: [], True: []}
    try:
        limit = calibrate(site, args, logs)
        print(json.dumps(limit), flush=True)
        for _ in range(args.repeats):
            for told in (False, True):
                row = run(site, args, limit["maxrss_mb"], told, logs)
                rows[told].append(row)
                print(json.dumps(row), flush=True)
    finally:
        site.stop()
    summary = {
        key: {
            "not_told": statistics.median(r[key] for r in rows[False]),
            "told": statistics.median(r[key] for r in rows[True]),
        }
        for key in ("exits", "renders_cut", "lost", "pages_per_s")
    }
    print(json.dumps(summary), flush=True)


if __name__ == "__main__":
    main()
