"""Are a fresh Splash node's first renders slower? (issue 13, slow start)

    python bench/slow_start_splash.py [--rounds 3] [--renders 60]

HAProxy's ``slowstart`` ramps a server's weight up after it comes UP, for
servers that are slow until warm (JIT, caches). Whether Splash needs it is a
measurement: per round, a real Splash 3.5 node is started (a new process, as
after ``--maxrss`` or a crash), and the same JavaScript page of the e2e site
is rendered ``--renders`` times one after another (``render.html``,
``wait=0``): the first renders against the last half, per round. Prints one
JSON line per round and a summary; the result is in bench/sections/maxrss.md.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
import urllib.parse
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from scripts.splash import RealSplashNode, http_get, install
from tests.e2e.site import JsSite


def render_seconds(node: RealSplashNode, page: str) -> float:
    query = urllib.parse.urlencode({"url": page, "wait": 0, "timeout": 30})
    started = time.monotonic()
    status, _ = http_get(f"{node.url}/render.html?{query}", timeout=60)
    if status != 200:
        raise RuntimeError(f"render.html answered {status}")
    return time.monotonic() - started


def one_round(site: JsSite, renders: int) -> dict:
    node = RealSplashNode(home=install(quiet=True).home).start()
    try:
        times = [render_seconds(node, site.page(i)) for i in range(renders)]
    finally:
        node.stop()
    warm = statistics.median(times[renders // 2 :])
    return {
        "first_ms": round(times[0] * 1000, 1),
        "first5_median_ms": round(statistics.median(times[:5]) * 1000, 1),
        "warm_median_ms": round(warm * 1000, 1),
        "first_vs_warm": round(times[0] / warm, 2),
        "first5_vs_warm": round(statistics.median(times[:5]) / warm, 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--renders", type=int, default=60)
    args = parser.parse_args()
    site = JsSite()
    try:
        rows = []
        for _ in range(args.rounds):
            rows.append(one_round(site, args.renders))
            print(json.dumps(rows[-1]), flush=True)
    finally:
        site.stop()
    keys = ("first_vs_warm", "first5_vs_warm", "warm_median_ms")
    print(json.dumps({k: statistics.median(r[k] for r in rows) for k in keys}), flush=True)


if __name__ == "__main__":
    main()
