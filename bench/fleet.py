"""The shared fleet against one process, on the same mock nodes, same run.

    python bench/fleet.py [--pages 1200] [--repeats 3]

Contenders, alternating, medians of the repeats:

* one crawler with CONCURRENT_REQUESTS 32, no Redis;
* four crawlers with 8 each, sharing the nodes through a real redis-server
  (Debian's, started here on a free loopback port).

Three mock nodes with maxconn 3 and 0.1 s renders: the fleet's capacity is
90 pages/s either way, so the ratio shows what sharing the slots costs.
Pages/s runs from the first page done to the last (the processes' start is
shown apart, as pages_per_s_with_start).
Also read from Redis: script calls per request (INFO commandstats) and the
server's CPU seconds per 1,000 requests (INFO cpu). Prints one JSON line per
crawl and a summary line.
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import subprocess
import sys
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from scrapy_splash_cluster.testing import start_nodes, stop_nodes

from tests.crawl_helpers import Crawl
from tests.redis_server import RedisServer


def redis_info(redis: RedisServer) -> dict[str, float]:
    out = subprocess.run(
        ["redis-cli", "-p", str(redis.port), "INFO", "all"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    calls = sum(
        int(m.group(1))
        for m in re.finditer(r"^cmdstat_(?:evalsha|eval|publish|ping)[^:]*:calls=(\d+)", out, re.M)
    )
    cpu = sum(float(m.group(1)) for m in re.finditer(r"^used_cpu_(?:sys|user):([\d.]+)", out, re.M))
    return {"calls": calls, "cpu": cpu}


def settings(nodes, concurrency: int, redis: RedisServer | None, prefix: str) -> dict:
    out = {
        "SPLASH_URLS": [n.url for n in nodes],
        "SPLASH_CLUSTER_MAXCONN": 3,
        "CONCURRENT_REQUESTS": concurrency,
        "CONCURRENT_REQUESTS_PER_DOMAIN": concurrency,
        "LOG_LEVEL": "INFO",
    }
    if redis is not None:
        out["SPLASH_CLUSTER_REDIS_URL"] = redis.url
        out["SPLASH_CLUSTER_REDIS_KEY_PREFIX"] = prefix
    return out


def run(nodes, processes: int, concurrency: int, pages: int, redis) -> dict:
    share = pages // processes
    before = redis_info(redis) if redis else None
    prefix = f"bench-{uuid.uuid4().hex[:8]}"  # one fleet: every process of this run
    started = time.monotonic()
    crawls = [
        Crawl(
            settings(nodes, concurrency, redis, prefix),
            [{"url": f"http://site{p}.com/{i}"} for i in range(share)],
        )
        for p in range(processes)
    ]
    results = [c.result(timeout=600) for c in crawls]
    seconds = time.monotonic() - started
    done = sum(len(r.items) for r in results)
    # From the first page done to the last, every process counted: the
    # crawlers' start (four Scrapy processes starting on two cores) is not
    # what is compared. CLOCK_MONOTONIC is the machine's, across processes.
    at = [i["at"] for r in results for i in r.items if "at" in i]
    steady = (done - 1) / (max(at) - min(at)) if len(at) > 1 else 0.0
    lost = sum(1 for r in results for i in r.items if "error" in i) + (pages - done)
    out = {
        "contender": f"{processes}x{concurrency}" + (" redis" if redis else ""),
        "pages": done,
        "lost": lost,
        "seconds": round(seconds, 2),
        "pages_per_s": round(steady, 1),
        "pages_per_s_with_start": round(done / seconds, 1),
        "max_in_progress": max(n.stats()["max_in_progress"] for n in nodes),
    }
    if redis is not None and before is not None:
        after = redis_info(redis)
        out["redis_calls_per_request"] = round((after["calls"] - before["calls"]) / done, 2)
        out["redis_cpu_s_per_1000"] = round((after["cpu"] - before["cpu"]) * 1000 / done, 3)
    for node in nodes:
        node.reset_stats()
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--pages", type=int, default=1200)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    nodes = start_nodes(3, latency=0.1, slots=20)
    redis = RedisServer()
    rows: dict[str, list[dict]] = {"one": [], "fleet": []}
    try:
        for _ in range(args.repeats):
            for key, (processes, concurrency, r) in {
                "one": (1, 32, None),
                "fleet": (4, 8, redis),
            }.items():
                row = run(nodes, processes, concurrency, args.pages, r)
                rows[key].append(row)
                print(json.dumps(row), flush=True)
    finally:
        redis.stop()
        stop_nodes(nodes)
    one = statistics.median(r["pages_per_s"] for r in rows["one"])
    fleet = statistics.median(r["pages_per_s"] for r in rows["fleet"])
    summary = {
        "one_process_pages_per_s": one,
        "fleet_pages_per_s": fleet,
        "ratio": round(fleet / one, 3),
        "redis_calls_per_request": statistics.median(
            r["redis_calls_per_request"] for r in rows["fleet"]
        ),
        "redis_cpu_s_per_1000": statistics.median(r["redis_cpu_s_per_1000"] for r in rows["fleet"]),
        "lost": sum(r["lost"] for rs in rows.values() for r in rs),
        "max_in_progress": max(r["max_in_progress"] for rs in rows.values() for r in rs),
    }
    print(json.dumps(summary), flush=True)


if __name__ == "__main__":
    main()
