"""Adaptive node limits on real Splash: one node with a small CPU share (issue 14).

    python bench/adaptive_splash.py [--pages 240] [--repeats 3] [--cpu 0.25]
                                    [--work N] [--timeout 3] [--slots 8]

Two real Splash 3.5 nodes with ``--slots 8`` (maxconn 8 for every balancer),
one of them held to ``--cpu`` of one core by a cgroup CPU quota (cgroup v2's
``cpu.max`` or v1's ``cpu.cfs_quota_us``; needs root), the other free. Every
page is the e2e site's ``/heavy/<i>``, whose script computes before it shows
(``--work`` rounds; by default calibrated so that one render alone on the free
node takes about 150 ms), rendered with Splash's ``timeout`` ``--timeout``.
The slow node's ``--slots`` overstate what it can finish in time: eight
renders at once there take eight times as long each.

Contenders, in turn within each repeat, each on two freshly started nodes:
the add-on with its static limit, the add-on with ``SPLASH_CLUSTER_ADAPTIVE``,
and scrapy-splash 0.11.1 behind HAProxy with the classic setup (leastconn,
maxconn 8, retries 3, redispatch), the same spider (bench/crawl.py) and
venvs as ``make bench``. Figures per crawl: pages/s and its share of the
fleet's capacity (the sum over nodes of 1 / the render time alone, measured
before the crawls), the 504s the nodes answered (counted from each Splash's
own log, so the same for every contender), p95 latency, pages lost. Prints
one JSON line per crawl and the medians as a markdown table; the section in
bench/sections/adaptive.md is written from it by hand.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import statistics
import sys
import tempfile
import time
import urllib.parse
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))

import envs  # noqa: E402

CONTENDERS = ("cluster", "adaptive", "haproxy")
# A render's own share of a node's log: Splash logs one JSON line per request.
_STATUS_504 = re.compile(rb'"status_code": 504\b')


class CpuLimit:
    """A cgroup that holds its processes to a share of one core (root only)."""

    def __init__(self, share: float) -> None:
        if not 0 < share <= 1:
            raise SystemExit(f"--cpu must be in (0, 1], got {share}")
        period = 100_000
        quota = int(share * period)
        name = f"ssc-bench-{os.getpid()}"
        v2 = Path("/sys/fs/cgroup")
        v1 = Path("/sys/fs/cgroup/cpu")
        try:
            if (v2 / "cgroup.controllers").exists():
                self.path = v2 / name
                self.path.mkdir()
                (self.path / "cpu.max").write_text(f"{quota} {period}")
            elif (v1 / "cpu.cfs_quota_us").exists():
                self.path = v1 / name
                self.path.mkdir()
                (self.path / "cpu.cfs_period_us").write_text(str(period))
                (self.path / "cpu.cfs_quota_us").write_text(str(quota))
            else:
                raise SystemExit("bench: no cgroup CPU controller under /sys/fs/cgroup")
        except PermissionError:
            raise SystemExit("bench: limiting a node's CPU needs root (a cgroup is made)") from None

    def add(self, pid: int) -> None:
        """Moves the process (every thread of it) into the cgroup."""
        (self.path / "cgroup.procs").write_text(str(pid))

    def remove(self) -> None:
        for pid in (self.path / "cgroup.procs").read_text().split():
            with contextlib.suppress(OSError):  # the process ended meanwhile
                (self.path.parent / "cgroup.procs").write_text(pid)
        self.path.rmdir()


def render_seconds(http_get: Any, node_url: str, page: str, timeout: float) -> float:
    query = urllib.parse.urlencode({"url": page, "wait": 0, "timeout": timeout})
    started = time.monotonic()
    status, body = http_get(f"{node_url}/render.html?{query}", timeout=timeout + 30)
    if status != 200:
        raise RuntimeError(f"render.html answered {status}: {body[:200]!r}")
    return time.monotonic() - started


def alone_seconds(http_get: Any, node_url: str, page: str, timeout: float) -> float:
    """The median of five renders one after another (after one to warm up)."""
    render_seconds(http_get, node_url, page, timeout)
    return statistics.median(render_seconds(http_get, node_url, page, timeout) for _ in range(5))


def count_504s(log: Path, offset: int) -> int:
    with log.open("rb") as f:
        f.seek(offset)
        return len(_STATUS_504.findall(f.read()))


class Fleet:
    """Two fresh real Splash nodes, the second under the CPU limit."""

    def __init__(self, splash: Any, limit: CpuLimit, slots: int, log_dir: Path) -> None:
        self.nodes = [
            splash.RealSplashNode(
                slots=slots,
                name=f"{name}-{int(time.time() * 1000)}",
                log_dir=log_dir,
                parent_pid=os.getpid(),
            )
            for name in ("free", "limited")
        ]
        splash.start_in_parallel(self.nodes)
        limit.add(self.nodes[1].pid)
        self.offsets = [n.log_path.stat().st_size for n in self.nodes]

    def answered_504(self) -> list[int]:
        return [count_504s(n.log_path, o) for n, o in zip(self.nodes, self.offsets, strict=True)]

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()


def crawl_once(
    contender: str,
    fleet: Fleet,
    pythons: dict[str, Path],
    args: argparse.Namespace,
    site_url: str,
    out: Path,
    run_id: str,
) -> dict[str, Any]:
    from haproxy import HAProxy
    from runner import CrawlProcess

    ours = contender != "haproxy"
    haproxy = None
    if ours:
        urls = [n.url for n in fleet.nodes]
    else:
        servers = [(f"node-{i + 1}", n.port) for i, n in enumerate(fleet.nodes)]
        haproxy = HAProxy(servers, args.slots)
        urls = [haproxy.start().url]
    config = {
        "splash_package": "scrapy_splash_cluster" if ours else "scrapy_splash",
        "splash_urls": urls,
        "pages": args.pages,
        "url_template": f"{site_url}/heavy/{{index}}?work={args.work}",
        "endpoint": "render.html",
        "render_args": {"wait": 0, "timeout": args.timeout},
        "concurrency": args.concurrency,
        "maxconn": args.slots,
        "sample_interval": 1.0,
        "settings": {"SPLASH_CLUSTER_ADAPTIVE": contender == "adaptive"} if ours else {},
    }
    config_path = out / f"{run_id}.config.json"
    result_path = out / f"{run_id}.result.json"
    config_path.write_text(json.dumps(config, indent=2))
    try:
        crawl = CrawlProcess(
            pythons["cluster" if ours else "baseline"],
            config_path,
            result_path,
            out / f"{run_id}.log",
        )
        finished = crawl.wait(timeout=120 + 20 * args.pages / args.capacity)
    finally:
        if haproxy is not None:
            haproxy.stop()
    return {
        "run_id": run_id,
        "contender": contender,
        "pages": args.pages,
        "capacity": args.capacity,
        "finished": finished,
        "result": json.loads(result_path.read_text()) if result_path.exists() else None,
    }


def figures(record: dict[str, Any], answered_504: list[int]) -> dict[str, Any]:
    from metrics import summarize

    summary = summarize(record)
    return {
        "contender": record["contender"],
        "run_id": record["run_id"],
        "pages_per_s": round(summary.get("throughput", 0.0), 2),
        "share_of_capacity": round(summary.get("share", 0.0), 3),
        "answered_504": sum(answered_504),
        "answered_504_per_node": answered_504,
        "p95_ms": summary.get("p95_ms"),
        "lost": summary["lost"],
        "finished": record["finished"],
    }


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python bench/adaptive_splash.py", description=__doc__)
    parser.add_argument("--pages", type=int, default=240)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--cpu", type=float, default=0.25, help="the limited node's CPU share")
    parser.add_argument("--work", type=int, default=None, help="rounds of the page's script")
    parser.add_argument("--target-ms", type=float, default=150.0, help="calibration target")
    parser.add_argument("--timeout", type=float, default=3.0, help="Splash's timeout argument")
    parser.add_argument("--slots", type=int, default=8, help="--slots of each node, maxconn")
    parser.add_argument("--concurrency", type=int, default=24, help="CONCURRENT_REQUESTS")
    parser.add_argument("--contenders", nargs="+", choices=CONTENDERS, default=list(CONTENDERS))
    parser.add_argument("--results", type=Path, default=None)
    parser.add_argument("--no-build", action="store_true")
    return parser


def calibrate(splash: Any, site: Any, limit: CpuLimit, args: argparse.Namespace, logs: Path):
    """The page's work (if not given) and the render time alone on each node."""
    fleet = Fleet(splash, limit, args.slots, logs)
    try:
        free, limited = (n.url for n in fleet.nodes)
        if args.work is None:
            work = 200_000
            for _ in range(8):
                took = alone_seconds(splash.http_get, free, site.heavy(0, work), args.timeout)
                if abs(took * 1000 - args.target_ms) < 0.1 * args.target_ms:
                    break
                # The render's fixed part (about 10 ms) does not scale with work.
                work = max(1000, int(work * (args.target_ms - 10) / max(took * 1000 - 10, 1)))
            args.work = work
        page = site.heavy(0, args.work)
        return [alone_seconds(splash.http_get, url, page, args.timeout) for url in (free, limited)]
    finally:
        fleet.stop()


def main() -> int:
    parser = _parser()
    args = parser.parse_args()
    if not envs.in_cluster_venv():
        python = envs.ensure_cluster_venv(build=not args.no_build)
        argv = [str(python), str(Path(__file__).resolve()), *sys.argv[1:], "--no-build"]
        os.execv(str(python), argv)
    pythons = {"cluster": Path(sys.executable), "baseline": envs.ensure_baseline_venv()}
    if "haproxy" in args.contenders:
        from haproxy import HAProxyMissing, haproxy_binary

        try:
            haproxy_binary()
        except HAProxyMissing as exc:
            sys.exit(f"bench: {exc}")

    from scripts import splash
    from tests.e2e.site import JsSite

    splash.install(quiet=True)
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    out = args.results or HERE / "results" / f"adaptive-splash-{stamp}"
    out.mkdir(parents=True, exist_ok=True)
    logs = Path(tempfile.mkdtemp(prefix="bench-splash-"))
    limit = CpuLimit(args.cpu)
    site = JsSite()
    rows: list[dict[str, Any]] = []
    try:
        alone = calibrate(splash, site, limit, args, logs)
        args.capacity = sum(1 / t for t in alone)
        print(
            json.dumps(
                {
                    "work": args.work,
                    "alone_ms": [round(t * 1000, 1) for t in alone],
                    "capacity_pages_per_s": round(args.capacity, 2),
                }
            ),
            flush=True,
        )
        for repeat in range(1, args.repeats + 1):
            for contender in args.contenders:
                fleet = Fleet(splash, limit, args.slots, logs)
                try:
                    record = crawl_once(
                        contender, fleet, pythons, args, site.url, out, f"{contender}-{repeat}"
                    )
                    answered = fleet.answered_504()
                finally:
                    fleet.stop()
                rows.append(figures(record, answered))
                print(json.dumps(rows[-1]), flush=True)
    finally:
        site.stop()
        limit.remove()
    print(table(rows, args))
    return 0


def table(rows: list[dict[str, Any]], args: argparse.Namespace) -> str:
    lines = [
        f"Capacity {args.capacity:.2f} pages/s; median of {args.repeats} crawls of "
        f"{args.pages} pages each.",
        "",
        "| contender | pages/s | share of capacity | 504s answered by nodes | p95 (ms) | lost |",
        "|---|--:|--:|--:|--:|--:|",
    ]
    for contender in args.contenders:
        mine = [r for r in rows if r["contender"] == contender]

        def median(key: str, mine: list[dict[str, Any]] = mine) -> float:
            return statistics.median(r[key] for r in mine if r[key] is not None)

        lines.append(
            f"| {contender} | {median('pages_per_s'):.1f} | {median('share_of_capacity'):.1%} "
            f"| {median('answered_504'):.0f} | {median('p95_ms'):.0f} | {median('lost'):.0f} |"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
