"""Renders cut by Splash's --maxrss exits, with and without the limit given.

    python bench/maxrss.py [--pages 1500] [--repeats 3] [--check 10]

Three mock nodes that behave as Splash does at --maxrss: the peak RSS grows
with every render (100 MB at start, 2 MB per render, limit 300 MB: over the
limit after about 100 renders), is compared with the limit every ``--check``
seconds (Splash: 60 s; shorter here so that a short crawl sees many exits),
and a node over it exits at once, cutting every render on it, and is back 3 s
later (a supervisor's restart). Renders of about 0.55 s (latency 0.05 s plus
``wait`` 0.5), maxconn 5 (the nodes' slots), CONCURRENT_REQUESTS 15, probes
every 2 s (the default).

Contenders, alternating, medians of the repeats: the add-on told the nodes'
limit (``SPLASH_CLUSTER_NODE_MAXRSS = 300``) and the add-on not told. Renders
cut are the nodes' own count of renders dropped by an exit; pages lost are
the crawl's errors (retries redispatch the cut renders either way). Prints
one JSON line per crawl and a summary line; the section in
bench/sections/maxrss.md is written from it by hand.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from scrapy_splash_cluster.testing import start_nodes, stop_nodes

from tests.crawl_helpers import Crawl

MAXRSS_MB = 300


def run(check: float, pages: int, told: bool) -> dict:
    nodes = start_nodes(
        3,
        slots=5,
        latency=0.05,
        maxrss=MAXRSS_MB,
        base_rss=100,
        rss_per_render=2,
        maxrss_check=check,
        restart_after=3.0,
    )
    try:
        settings = {
            "SPLASH_URLS": [n.url for n in nodes],
            "SPLASH_CLUSTER_MAXCONN": 5,
            "CONCURRENT_REQUESTS": 15,
            "CONCURRENT_REQUESTS_PER_DOMAIN": 15,
            "HTTPERROR_ALLOW_ALL": True,
        }
        if told:
            settings["SPLASH_CLUSTER_NODE_MAXRSS"] = MAXRSS_MB
        started = time.monotonic()
        result = Crawl(
            settings,
            [{"url": f"http://example.com/{i}", "args": {"wait": 0.5}} for i in range(pages)],
        ).result(timeout=1800)
        elapsed = time.monotonic() - started
        stats = [n.stats() for n in nodes]
    finally:
        stop_nodes(nodes)
    errors = [i for i in result.items if "error" in i]
    return {
        "told": told,
        "pages": pages,
        "done": len(result.items) - len(errors),
        "lost": pages - (len(result.items) - len(errors)),
        "exits": sum(s["exits"] for s in stats),
        "renders_cut": sum(s["dropped"] for s in stats),
        "renders": sum(s["requests"] for s in stats),
        # What ended each lost page: the typed error, its attempts.
        "errors": [f"{i['error']}: {i.get('message')}" for i in errors],
        "pages_per_s": round(pages / elapsed, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--pages", type=int, default=1500)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--check", type=float, default=10.0)
    args = parser.parse_args()
    rows: dict[bool, list[dict]] = {False: [], True: []}
    for _ in range(args.repeats):
        for told in (False, True):
            row = run(args.check, args.pages, told)
            rows[told].append(row)
            print(json.dumps(row), flush=True)

    def median(told: bool, key: str) -> float:
        return statistics.median(r[key] for r in rows[told])

    summary = {
        key: {"not_told": median(False, key), "told": median(True, key)}
        for key in ("exits", "renders_cut", "lost", "pages_per_s")
    }
    cut = summary["renders_cut"]
    summary["cut_ratio"] = round(cut["told"] / cut["not_told"], 3) if cut["not_told"] else None
    print(json.dumps(summary), flush=True)


if __name__ == "__main__":
    main()
