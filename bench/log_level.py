"""Pages/s at LOG_LEVEL DEBUG against INFO, with a CPU-heavy ``parse``.

    python bench/log_level.py [--python INTERPRETER] [--pages 1500] [--parse-ms 2]

Scrapy logs at DEBUG by default, and a crawl whose callbacks keep the GIL
busy is where any GIL the core's threads need costs the most: a tokio thread
that waits for the GIL to log or to hand back a result stalls its requests.
Three mock nodes answer at once; the spider burns ``--parse-ms`` of CPU per
page. ``--python`` runs the crawls under another interpreter (say a venv
with an older build) against the same nodes, for a before/after in one run.
Prints one JSON line per crawl: level, pages, seconds, pages/s.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time

from scrapy_splash_cluster.testing import start_nodes, stop_nodes

CRAWL = r"""
import json, sys, time
import scrapy
from scrapy.crawler import CrawlerProcess
from scrapy_splash_cluster import SplashRequest

urls, pages = json.loads(sys.argv[1]), int(sys.argv[2])
parse_ms, level = float(sys.argv[3]), sys.argv[4]
done = []

class Busy(scrapy.Spider):
    name = "busy"

    async def start(self):
        for i in range(pages):
            yield SplashRequest(f"http://example.com/{i}", self.parse, dont_filter=True)

    def parse(self, response):
        end = time.process_time() + parse_ms / 1000
        while time.process_time() < end:
            pass
        done.append(time.monotonic())

process = CrawlerProcess({
    "ADDONS": {"scrapy_splash_cluster.SplashClusterAddon": 0},
    "SPLASH_URLS": urls,
    "SPLASH_CLUSTER_MAXCONN": 16,
    "CONCURRENT_REQUESTS": 32,
    "CONCURRENT_REQUESTS_PER_DOMAIN": 32,
    "LOG_LEVEL": level,
    "LOG_FILE": "/dev/null",
    "TELNETCONSOLE_ENABLED": False,
})
process.crawl(Busy)
started = time.monotonic()
process.start()
first = min(done) if done else started
print(json.dumps({"pages": len(done), "seconds": max(done) - first if done else 0}))
"""


def crawl(python: str, urls: list[str], pages: int, parse_ms: float, level: str) -> dict:
    out = subprocess.run(
        [python, "-c", CRAWL, json.dumps(urls), str(pages), str(parse_ms), level],
        capture_output=True,
        text=True,
        timeout=600,
        check=True,
    )
    result = json.loads(out.stdout.strip().splitlines()[-1])
    result["level"] = level
    result["pages_per_s"] = round(result["pages"] / result["seconds"], 1)
    return result


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--python", default=sys.executable)
    parser.add_argument("--pages", type=int, default=1500)
    parser.add_argument("--parse-ms", type=float, default=2.0)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    nodes = start_nodes(3, latency=0.0, slots=16)
    try:
        urls = [n.url for n in nodes]
        for _ in range(args.repeats):
            for level in ("INFO", "DEBUG"):
                result = crawl(args.python, urls, args.pages, args.parse_ms, level)
                print(json.dumps({"python": args.python, **result}), flush=True)
                time.sleep(0.5)
    finally:
        stop_nodes(nodes)


if __name__ == "__main__":
    main()
