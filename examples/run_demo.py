"""The demo: a real Scrapy crawl through a Splash cluster that loses a node mid-crawl.

    python examples/run_demo.py            (what `make demo` runs)
    python examples/run_demo.py --help     (sizes, latency, when to kill, a JSON report)

What it does, all on 127.0.0.1 and in 10-30 seconds:

1. serves a small shop (examples/demo_site.py) whose pages build their
   content with JavaScript: without rendering there is nothing to scrape;
2. starts three mock Splash nodes in fetch mode: they load each page from the
   shop and run (emulate) its script, with a render time like a real node's;
3. runs ``scrapy crawl catalogue`` in examples/demo_project (an ordinary
   Scrapy project with the add-on), streaming its log;
4. kills one node with SIGKILL when about 30 % of the pages are done, with
   renders in flight on it, and starts it again on the same port at about
   60 %: the log shows the cluster mark it DOWN, retry its renders on the
   other nodes, and mark it UP again;
5. reports from the crawl's own results (items and stats files): pages
   scraped of expected, requests per node, retries, redispatches, DOWN/UP
   transitions and lost pages, which must be 0 (the exit status is 1 if not).

Everything it started (site, nodes, crawl) is stopped on the way out, after
Ctrl-C or a failure too.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any, TextIO

HERE = Path(__file__).resolve().parent
PROJECT_DIR = HERE / "demo_project"
sys.path.insert(0, str(HERE))

from demo_site import Catalogue, DemoSite  # noqa: E402
from scrapy_splash_cluster.testing import MockSplashNode, start_nodes, stop_nodes  # noqa: E402

# Scrapy's start-up log lists its components over dozens of lines; the demo
# shows the first line of each such block only (--full-log shows all).
_BLOCK_HEADERS = re.compile(
    r"(Enabled (addons|extensions|downloader middlewares|spider middlewares|item pipelines)"
    r"|Versions|Overridden settings|Dumping Scrapy stats):"
)
_LOG_LINE = re.compile(r"^\d\d:\d\d:\d\d \[")
_CRAWL_STOP_GRACE = 3.0


class Terminal:
    """Prints the crawl's log and the demo's own lines without interleaving them,
    in colour when the output is a terminal that wants colour."""

    def __init__(self, stream: TextIO | None = None) -> None:
        self.stream = stream if stream is not None else sys.stdout
        self.colour = self.stream.isatty() and not os.environ.get("NO_COLOR")
        self._lock = threading.Lock()

    def _paint(self, text: str, code: str) -> str:
        return f"\033[{code}m{text}\033[0m" if self.colour else text

    def line(self, text: str = "", code: str = "") -> None:
        """One line, painted with the SGR ``code`` if given."""
        with self._lock:
            print(self._paint(text, code) if code else text, file=self.stream, flush=True)

    def banner(self, text: str) -> None:
        """A fault being injected: the line to notice in the log."""
        self.line(f">>> {text}", "1;33")

    def title(self, text: str) -> None:
        """A section of the demo's own output."""
        self.line(f"== {text}", "1;36")

    def crawl_log(self, text: str) -> None:
        """A line of the crawl's log; the cluster's node transitions stand out."""
        if " is DOWN" in text:
            self.line(text, "31")
        elif " is UP again" in text:
            self.line(text, "32")
        elif "ERROR" in text or "Traceback" in text:
            self.line(text, "1;31")
        else:
            self.line(text)


@dataclass
class FaultPlan:
    """When to kill the victim node and when to start it again, as fractions of
    the pages the crawl has loaded; what happened, for the report."""

    victim: MockSplashNode
    kill_at: float
    restart_at: float
    events: list[dict[str, Any]] = field(default_factory=list)
    killed: bool = False
    restarted: bool = False

    def step(self, progress: float, started: float, term: Terminal) -> None:
        """Inject whatever fault is due at this much progress."""
        if not self.killed and progress >= self.kill_at:
            self.killed = True
            in_flight = self._wait_for_renders_in_flight()
            pid = self.victim.pid
            term.banner(
                f"killing {self.victim.name} (pid {pid}) mid-crawl with SIGKILL: "
                f"{in_flight} render(s) in flight on it, {progress:.0%} of the pages done"
            )
            self.victim.kill()
            self.events.append(
                {
                    "event": "kill",
                    "node": self.victim.name,
                    "pid": pid,
                    "in_flight": in_flight,
                    "progress": round(progress, 3),
                    "at_s": round(time.monotonic() - started, 2),
                }
            )
        elif self._restart_due(progress):
            self.restarted = True
            self.victim.restart()
            term.banner(
                f"restarting {self.victim.name} on port {self.victim.port} "
                f"(new pid {self.victim.pid}), {progress:.0%} of the pages done"
            )
            self.events.append(
                {
                    "event": "restart",
                    "node": self.victim.name,
                    "pid": self.victim.pid,
                    "progress": round(progress, 3),
                    "at_s": round(time.monotonic() - started, 2),
                }
            )

    def _restart_due(self, progress: float) -> bool:
        """Whether to restart the victim now; a restart_at of 1 or more means never."""
        if not self.killed or self.restarted or self.restart_at >= 1:
            return False
        return progress >= self.restart_at

    def _wait_for_renders_in_flight(self, patience: float = 3.0) -> int:
        """Renders the victim is working on, waiting a moment for one if it is idle:
        the point of the kill is to lose renders in flight."""
        deadline = time.monotonic() + patience
        while True:
            try:
                in_flight = int(self.victim.stats()["in_progress"])
            except Exception:  # a control call that failed: kill anyway
                return 0
            if in_flight or time.monotonic() >= deadline:
                return in_flight
            time.sleep(0.02)


class Crawl:
    """``scrapy crawl catalogue`` in a child process, its log streamed to the terminal.

    The child runs in its own session so that Ctrl-C reaches the demo only:
    the demo then asks the crawl to stop once (SIGINT, Scrapy's graceful
    shutdown), where a second signal would make Scrapy stop uncleanly.
    """

    def __init__(self, command: list[str], term: Terminal, full_log: bool) -> None:
        self.command = command
        self.term = term
        self.full_log = full_log
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        self.proc = subprocess.Popen(
            command,
            cwd=PROJECT_DIR,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            encoding="utf-8",
            errors="replace",
            env=env,
            start_new_session=True,
        )
        self._reader = threading.Thread(target=self._stream, name="crawl-log", daemon=True)
        self._reader.start()

    def _stream(self) -> None:
        assert self.proc.stdout is not None
        hiding = False
        for raw in self.proc.stdout:
            line = raw.rstrip("\n")
            if not self.full_log:
                if _LOG_LINE.match(line):
                    hiding = bool(_BLOCK_HEADERS.search(line))
                    if hiding:
                        line += " (hidden: run with --full-log to see)"
                elif hiding:
                    continue
            self.term.crawl_log(line)

    def running(self) -> bool:
        """True until the crawl process exits."""
        return self.proc.poll() is None

    def wait(self) -> int:
        """Wait for the crawl to end and its log to be printed; its exit status."""
        status = self.proc.wait()
        self._reader.join(timeout=5)
        return status

    def stop(self) -> None:
        """Stop the crawl: SIGINT (Scrapy's graceful shutdown), a second SIGINT
        (its unclean one) if renders stay pending, SIGKILL as the last resort.

        Graceful shutdown waits for the requests in flight, which can take
        the cluster's queue timeout when the nodes are gone already (a
        terminal's Ctrl-C reaches them too).
        """
        for stop in (self._interrupt, self._interrupt, self.proc.kill):
            if self.proc.poll() is not None:
                break
            stop()
            try:
                self.proc.wait(timeout=_CRAWL_STOP_GRACE)
            except subprocess.TimeoutExpired:
                continue
        self._reader.join(timeout=5)

    def _interrupt(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            self.proc.send_signal(signal.SIGINT)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description="Crawl a JavaScript shop through three Splash nodes while one is killed "
        "and restarted; report what was scraped and lost.",
    )
    parser.add_argument("--pages", type=int, default=12, help="listing pages (default 12)")
    parser.add_argument(
        "--products", type=int, default=10, help="products per listing page (default 10)"
    )
    parser.add_argument("--nodes", type=int, default=3, help="Splash nodes (default 3)")
    parser.add_argument(
        "--latency",
        type=float,
        default=0.3,
        help="seconds a node takes per render, besides the 0.1 s wait (default 0.3)",
    )
    parser.add_argument(
        "--concurrency", type=int, default=5, help="Scrapy's CONCURRENT_REQUESTS (default 5)"
    )
    parser.add_argument(
        "--kill-at",
        type=float,
        default=0.3,
        help="kill a node when this fraction of the pages is loaded (default 0.3)",
    )
    parser.add_argument(
        "--restart-at",
        type=float,
        default=0.6,
        help="restart it at this fraction (default 0.6); 1 or more: never",
    )
    parser.add_argument(
        "--victim", type=int, default=2, help="number of the node to kill (default 2: node-2)"
    )
    parser.add_argument(
        "--timeout",
        type=float,
        default=120.0,
        help="give up on a crawl that runs longer than this many seconds (default 120)",
    )
    parser.add_argument(
        "--json-report", type=Path, default=None, help="also write the report to this JSON file"
    )
    parser.add_argument(
        "--keep-output",
        type=Path,
        default=None,
        help="directory to keep the crawl's items.json and stats.json in (default: a "
        "temporary directory, removed at the end)",
    )
    parser.add_argument(
        "--full-log", action="store_true", help="stream the crawl's log without shortening it"
    )
    return parser


def _check_args(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    if args.pages < 1 or args.products < 1:
        parser.error("--pages and --products must be at least 1")
    if args.nodes < 2:
        parser.error("--nodes must be at least 2: one is killed, another must take over")
    if not 1 <= args.victim <= args.nodes:
        parser.error(f"--victim must be between 1 and {args.nodes}")
    if args.latency < 0 or args.concurrency < 1:
        parser.error("--latency must be >= 0 and --concurrency >= 1")
    if not 0 <= args.kill_at < args.restart_at:
        parser.error("expected 0 <= --kill-at < --restart-at")
    if args.timeout <= 0:
        parser.error("--timeout must be > 0")


def _raw_look(site: DemoSite, term: Terminal) -> None:
    """Show that the raw HTML has nothing to scrape: the reason Splash is needed."""
    url = site.url + Catalogue.listing_path(1)
    with urllib.request.urlopen(url, timeout=5) as answer:
        raw = answer.read().decode("utf-8")
    products = raw.count('<li class="product"')
    term.line(
        f"   raw HTML of {Catalogue.listing_path(1)}: {len(raw)} bytes, {products} products, "
        f'an empty <div id="app"></div> and a script that fills it'
    )


def _label(node: MockSplashNode) -> str:
    """The node's name in the cluster's stats: host:port."""
    return f"{node.host}:{node.port}"


def build_report(
    catalogue: Catalogue,
    nodes: list[MockSplashNode],
    items: list[dict[str, Any]],
    stats: dict[str, Any],
    *,
    crawl_status: int,
    duration: float,
    events: list[dict[str, Any]],
    page_loads: int,
) -> dict[str, Any]:
    """The demo's verdict, from the crawl's own files (items and stats), not from
    what the demo believes it did."""
    expected_products = {p.path for p in catalogue.all_products()}
    scraped_products = {
        path
        for item in items
        if isinstance(item.get("url"), str) and (path := _path(item["url"])) in expected_products
    }
    listings = int(stats.get("demo/pages/listing", 0))
    scraped = min(listings, catalogue.pages) + len(scraped_products)
    per_node = []
    rendered = Counter(item.get("rendered_by") for item in items)
    for node in nodes:
        prefix = f"splash_cluster/nodes/{_label(node)}/"
        answered = sum(int(v) for k, v in stats.items() if k.startswith(prefix + "responses/"))
        per_node.append(
            {
                "name": node.name,
                "url": node.url,
                "requests": int(stats.get(prefix + "requests", 0)),
                "answered": answered,
                "products_rendered": rendered.get(node.name, 0),
                "failures": int(stats.get(prefix + "failures", 0)),
                "downs": int(stats.get(prefix + "downs", 0)),
                "ups": int(stats.get(prefix + "ups", 0)),
            }
        )
    lost = catalogue.total_pages - scraped
    return {
        "ok": lost == 0 and crawl_status == 0 and bool(stats),
        "expected_pages": catalogue.total_pages,
        "expected_listings": catalogue.pages,
        "expected_products": len(expected_products),
        "scraped_pages": scraped,
        "scraped_listings": listings,
        "scraped_products": len(scraped_products),
        "lost": lost,
        "missing_products": sorted(expected_products - scraped_products),
        "nodes": per_node,
        "requests": int(stats.get("splash_cluster/requests", 0)),
        "attempts": int(stats.get("splash_cluster/attempts", 0)),
        "retries": int(stats.get("splash_cluster/retries", 0)),
        "redispatches": int(stats.get("splash_cluster/redispatches", 0)),
        "scrapy_retries": int(stats.get("retry/count", 0)),
        "failed_pages": int(stats.get("demo/pages/failed", 0)),
        "errors_logged": int(stats.get("log_count/ERROR", 0)),
        "finish_reason": stats.get("finish_reason"),
        "crawl_exit_status": crawl_status,
        "duration_s": round(duration, 2),
        "site_page_loads": page_loads,
        "events": events,
        "items": items,
    }


def _path(url: str) -> str:
    return "/" + url.split("://", 1)[-1].split("/", 1)[-1] if "://" in url else url


def print_report(report: dict[str, Any], term: Terminal) -> None:
    """The report, short enough to read at a glance."""
    term.line()
    term.title("Report (from the crawl's items and stats)")
    term.line(
        f"   pages scraped   {report['scraped_pages']} of {report['expected_pages']} expected "
        f"({report['scraped_listings']} listings + {report['scraped_products']} products)"
    )
    term.line(
        f"   lost pages      {report['lost']}",
        "1;32" if report["lost"] == 0 else "1;31",
    )
    term.line(
        f"   crawl time      {report['duration_s']:.1f} s "
        f"(finish reason: {report['finish_reason']}, exit status {report['crawl_exit_status']})"
    )
    term.line()
    term.line("   node     requests  answered  products  DOWN  UP")
    killed = {e["node"]: e for e in report["events"] if e["event"] == "kill"}
    restarted = {e["node"]: e for e in report["events"] if e["event"] == "restart"}
    for node in report["nodes"]:
        note = ""
        if node["name"] in killed:
            note = f"   <- killed at {killed[node['name']]['progress']:.0%}"
            if node["name"] in restarted:
                note += f", restarted at {restarted[node['name']]['progress']:.0%}"
        term.line(
            f"   {node['name']:<8} {node['requests']:>8}  {node['answered']:>8}  "
            f"{node['products_rendered']:>8}  {node['downs']:>4}  {node['ups']:>2}{note}"
        )
    term.line(
        "   (requests: renders sent to the node, failed ones included; answered: "
        "renders it completed)"
    )
    term.line()
    term.line(f"   retries         {report['retries']}  (renders sent again after a node failed)")
    term.line(f"   redispatches    {report['redispatches']}  (retries that went to another node)")
    term.line(
        f"   Scrapy retries  {report['scrapy_retries']}  "
        "(requests the cluster gave up on and Scrapy sent again)"
    )
    term.line(
        f"   page loads      {report['site_page_loads']}  "
        "(pages the nodes loaded from the shop, renders killed mid-way included)"
    )
    term.line()
    if report["ok"]:
        term.line("RESULT: OK: " + _verdict(report), "1;32")
    else:
        reasons = []
        if report["lost"]:
            missing = ", ".join(report["missing_products"][:5])
            reasons.append(f"{report['lost']} page(s) lost (products missing: {missing} ...)")
        if report["crawl_exit_status"]:
            reasons.append(f"the crawl exited with status {report['crawl_exit_status']}")
        if not reasons:
            reasons.append("the crawl wrote no stats")
        term.line("RESULT: FAILED: " + "; ".join(reasons), "1;31")


def _verdict(report: dict[str, Any]) -> str:
    """One sentence on what the kill cost, for a report whose crawl lost nothing."""
    kill = next((e for e in report["events"] if e["event"] == "kill"), None)
    if kill is None:
        return "every page was scraped (the crawl ended before the planned kill)."
    how = (
        f"with {kill['in_flight']} render(s) in flight on it" if kill["in_flight"] else "mid-crawl"
    )
    return (
        f"{kill['node']} was killed {how}, and no page was lost: "
        f"{report['retries']} render(s) retried, {report['redispatches']} of them "
        "on another node."
    )


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def crawl_command(
    site: DemoSite, nodes: list[MockSplashNode], concurrency: int, items: Path, stats: Path
) -> list[str]:
    """``scrapy crawl catalogue``, as one would type it in examples/demo_project."""
    return [
        sys.executable,
        "-m",
        "scrapy",
        "crawl",
        "catalogue",
        "-a",
        f"start_url={site.url}{Catalogue.listing_path(1)}",
        "-s",
        "SPLASH_URLS=" + ",".join(node.url for node in nodes),
        "-s",
        f"CONCURRENT_REQUESTS={concurrency}",
        "-s",
        f"CONCURRENT_REQUESTS_PER_DOMAIN={concurrency}",
        "-s",
        f"DEMO_STATS_FILE={stats}",
        "-O",
        str(items),
    ]


def run(args: argparse.Namespace, term: Terminal) -> int:
    """The demo; returns the exit status (0: nothing lost, 1: a loss or a failed
    crawl, 130: interrupted)."""
    catalogue = Catalogue(pages=args.pages, products=args.products)
    site: DemoSite | None = None
    nodes: list[MockSplashNode] = []
    crawl: Crawl | None = None
    with tempfile.TemporaryDirectory(prefix="splash-demo-") as tmp:
        out = args.keep_output or Path(tmp)
        out.mkdir(parents=True, exist_ok=True)
        items_path, stats_path = out / "items.json", out / "stats.json"
        for stale in (items_path, stats_path):
            stale.unlink(missing_ok=True)
        try:
            term.title(f"1. A shop of {catalogue.total_pages} pages, built by JavaScript")
            site = DemoSite(catalogue).start()
            term.line(
                f"   {site.url}  ({catalogue.pages} listing pages x {catalogue.products} products)"
            )
            _raw_look(site, term)

            term.title(f"2. {args.nodes} mock Splash nodes that load and render those pages")
            nodes = start_nodes(args.nodes, slots=5, latency=args.latency, render_mode="fetch")
            for node in nodes:
                term.line(f"   {node.name}  {node.url}  (pid {node.pid})")
            plan = FaultPlan(nodes[args.victim - 1], args.kill_at, args.restart_at)
            restart = f", restart it at {args.restart_at:.0%}" if args.restart_at < 1 else ""
            term.line(
                f"   plan: SIGKILL {plan.victim.name} at {args.kill_at:.0%} of the pages{restart}"
            )

            command = crawl_command(site, nodes, args.concurrency, items_path, stats_path)
            term.title("3. The crawl, in examples/demo_project:")
            term.line("   " + " ".join(["scrapy", *command[3:9]]) + " ...")
            started = time.monotonic()
            crawl = Crawl(command, term, args.full_log)
            while crawl.running():
                if time.monotonic() - started > args.timeout:
                    term.banner(f"the crawl still runs after {args.timeout:.0f} s: stopping it")
                    crawl.stop()
                    break
                plan.step(site.page_loads / catalogue.total_pages, started, term)
                time.sleep(0.02)
            status = crawl.wait()

            report = build_report(
                catalogue,
                nodes,
                _read_json(items_path) or [],
                _read_json(stats_path) or {},
                crawl_status=status,
                duration=time.monotonic() - started,
                events=plan.events,
                page_loads=site.page_loads,
            )
            print_report(report, term)
            if args.json_report is not None:
                args.json_report.write_text(json.dumps(report, indent=2, ensure_ascii=False))
            return 0 if report["ok"] else 1
        except KeyboardInterrupt:
            term.line()
            term.banner("interrupted: stopping the crawl, the nodes and the shop")
            return 130
        finally:
            if crawl is not None:
                crawl.stop()
            stop_nodes(nodes)
            if site is not None:
                site.stop()


def _interrupt(signum: int, frame: FrameType | None) -> None:
    """SIGINT and SIGTERM as Ctrl-C: unwind through the clean-up."""
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    """Parse the options, run the demo, return its exit status."""
    parser = _parser()
    args = parser.parse_args(argv)
    _check_args(parser, args)
    # Ctrl-C and SIGTERM unwind through the clean-up, even when the demo was
    # started with SIGINT ignored (as a shell's background job is): the crawl
    # inherits the default disposition and so gets Scrapy's graceful handler.
    signal.signal(signal.SIGINT, _interrupt)
    signal.signal(signal.SIGTERM, _interrupt)
    return run(args, Terminal())


if __name__ == "__main__":
    sys.exit(main())
