"""The add-on's own cost per page against bare Scrapy (issue 15).

    python bench/overhead.py                      # 5,000 pages, 5 repeats, INFO and DEBUG
    python bench/overhead.py --pages 2000 --repeats 1 --no-doc   # a quick look

Three mock nodes answering at once (latency 0) on 127.0.0.1, started once
for the whole run. Two contenders crawl the same pages with the same
concurrency, each in its own process (``crawl.py``) under this interpreter:

* ``bare``: plain ``scrapy.Request`` GETs of the nodes' render URLs, the
  nodes taken in turn: what Scrapy alone costs for these answers;
* ``cluster``: ``SplashRequest`` through the add-on.

The machine is shared, so only figures of one run are compared: the
contenders alternate (the order flips every repeat), and the ratios are
those of the medians. CPU is the crawler process's (every thread) from
``spider_opened`` to the end, by ``getrusage``; RSS is the peak
(``ru_maxrss``). Results: ``bench/results/overhead-<UTC time>.json``, and
a section of docs/benchmarks.md (between the ``overhead`` markers, kept as
is by ``bench/run.py``).
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
CRAWL_SCRIPT = HERE / "crawl.py"
DOC = HERE.parent / "docs" / "benchmarks.md"
RESULTS = HERE / "results"
BEGIN = "<!-- overhead:begin (bench/overhead.py) -->"
END = "<!-- overhead:end -->"

URL_TEMPLATE = "http://shop.bench.test/item/{index}"
RENDER_ARGS = {"wait": 0, "timeout": 30}
CONTENDERS = ("bare", "before", "cluster")
TITLES = {
    "bare": "bare Scrapy (`scrapy.Request` GETs)",
    "before": "add-on before, `SplashRequest` (`--before`)",
    "cluster": "add-on (`SplashRequest`)",
}
# Targets of issue 15, against bare Scrapy in the same run.
MIN_SPEED = 0.97
MAX_CPU = 1.10
MAX_EXTRA_RSS_MB = 10.0


def _start_nodes(count: int, slots: int) -> list[Any]:
    from scrapy_splash_cluster.testing import MockSplashNode

    nodes = [MockSplashNode(f"node-{i + 1}", slots=slots, latency=0.0) for i in range(count)]
    with ThreadPoolExecutor(max_workers=count) as pool:
        list(pool.map(lambda node: node.start(), nodes))
    return nodes


def _run_crawl(
    contender: str,
    urls: list[str],
    args: argparse.Namespace,
    log_level: str,
    pages: int,
    wrapper: list[str] = (),  # type: ignore[assignment]
) -> dict[str, Any]:
    """One crawl in its own process, under ``wrapper`` if given; its raw result."""
    env = dict(os.environ)
    if contender == "before":
        # Another build of the package, ahead of the installed one.
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [args.before, env.get("PYTHONPATH")]))
    config = {
        "splash_package": "bare" if contender == "bare" else "scrapy_splash_cluster",
        "splash_urls": urls,
        "pages": pages,
        "url_template": URL_TEMPLATE,
        "endpoint": "render.html",
        "render_args": RENDER_ARGS,
        "concurrency": args.concurrency,
        "maxconn": args.maxconn,
        "log_level": log_level,
        "sample_interval": 1.0,
        "settings": {"LOG_FILE": None},
    }
    with tempfile.TemporaryDirectory() as tmp:
        config_path, result_path = Path(tmp) / "config.json", Path(tmp) / "result.json"
        config_path.write_text(json.dumps(config))
        # The log goes nowhere but the process must still format it: at
        # DEBUG, writing the lines is part of the cost being measured.
        subprocess.run(
            [*wrapper, sys.executable, str(CRAWL_SCRIPT), str(config_path), str(result_path)],
            env=env,
            check=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            timeout=1800,
        )
        result = json.loads(result_path.read_text())
    if len(result["ok"]) != pages or result["errors"]:
        raise SystemExit(
            f"{contender} at {log_level}: {len(result['ok'])} pages of {pages}, "
            f"{len(result['errors'])} errors: the figures would not be comparable"
        )
    return result


def crawl(contender: str, urls: list[str], args: argparse.Namespace, log_level: str) -> dict:
    """One timed crawl; its figures (not comparable under --profile)."""
    wrapper: list[str] = []
    if args.profile:
        # py-spy's collapsed stacks (native frames: the extension's too),
        # for `py-spy`'s flame graph tools or a look at the hottest lines.
        RESULTS.mkdir(exist_ok=True)
        out = RESULTS / f"profile-{contender}-{log_level}.txt"
        wrapper = [
            *("py-spy", "record", "--native", "--threads", "--rate", "250"),
            *("--format", "raw", "--output", str(out), "--"),
        ]
    result = _run_crawl(contender, urls, args, log_level, args.pages, wrapper)
    end = max(row[1] for row in result["ok"])
    cpu = result["cpu_total"] - result["cpu_at_open"]
    return {
        "contender": contender,
        "log_level": log_level,
        "pages_per_s": args.pages / (end - result["started"]),
        "cpu_s_per_1000": 1000 * cpu / args.pages,
        "rss_mb": result["maxrss_bytes"] / 2**20,
        "thread_cpu": result["thread_cpu"],
        "gc_collections": [generation["collections"] for generation in result["gc"]],
    }


def instructions_per_page(
    contender: str, urls: list[str], args: argparse.Namespace, log_level: str
) -> float:
    """Instructions the crawler process (every thread) runs per page, by
    callgrind: the difference between a crawl of ``--callgrind-pages`` pages
    and one of a fifth as many, so that the start and the end of a crawl
    cancel out. Steady where CPU seconds on a shared machine are not."""
    counts = []
    large = args.callgrind_pages
    for pages in (large // 5, large):
        with tempfile.TemporaryDirectory() as tmp:
            out = Path(tmp) / "callgrind.out"
            wrapper = ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}.%p"]
            _run_crawl(contender, urls, args, log_level, pages, wrapper)
            total = 0
            for path in Path(tmp).glob("callgrind.out.*"):
                for line in path.read_text().splitlines():
                    if line.startswith(("summary:", "totals:")):
                        total += int(line.split()[1])
                        break
            counts.append(total)
    return (counts[1] - counts[0]) / (large - large // 5)


def summarize(runs: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Medians (and ranges) per log level and contender, and the ratios of
    each add-on contender to bare Scrapy."""
    summary: dict[str, dict[str, Any]] = {}
    present = [c for c in CONTENDERS if any(r["contender"] == c for r in runs)]
    for level in sorted({r["log_level"] for r in runs}, key=["INFO", "DEBUG"].index):
        by: dict[str, Any] = {}
        for contender in present:
            rows = [r for r in runs if r["log_level"] == level and r["contender"] == contender]
            by[contender] = {
                key: {
                    "median": statistics.median(r[key] for r in rows),
                    "min": min(r[key] for r in rows),
                    "max": max(r[key] for r in rows),
                }
                for key in ("pages_per_s", "cpu_s_per_1000", "rss_mb")
            }
        bare = by["bare"]
        by["ratios"] = {
            contender: {
                "speed": by[contender]["pages_per_s"]["median"] / bare["pages_per_s"]["median"],
                "cpu": by[contender]["cpu_s_per_1000"]["median"] / bare["cpu_s_per_1000"]["median"],
                "extra_rss_mb": by[contender]["rss_mb"]["median"] - bare["rss_mb"]["median"],
            }
            for contender in present
            if contender != "bare"
        }
        summary[level] = by
    return summary


def _cell(figure: dict[str, float], fmt: str) -> str:
    return f"{figure['median']:{fmt}} ({figure['min']:{fmt}}-{figure['max']:{fmt}})"


def _verdict(ok: bool) -> str:
    return "met" if ok else "**not met**"


def markdown(summary: dict[str, dict[str, Any]], meta: dict[str, Any]) -> str:
    lines = [
        BEGIN,
        "## The add-on's own cost per page (issue 15)",
        "",
        f"Written by `{' '.join(filter(None, ['python bench/overhead.py', meta.get('command')]))}`"
        f" on {meta['date']}, "
        f"commit {meta['commit']}: {meta['pages']:,} pages from {meta['nodes']} mock nodes "
        f"answering at once (latency 0, {meta['slots']} slots each), CONCURRENT_REQUESTS "
        f"{meta['concurrency']} (the add-on: SPLASH_CLUSTER_MAXCONN "
        f"{meta['slots']}), {meta['repeats']} repeats per contender "
        "and log level, the contenders alternating; medians, the range in brackets. CPU is "
        "the crawler process's, every thread, from `spider_opened` to the end; RSS the peak.",
        "",
        *(
            [f"'Add-on before' is {meta['before']}, crawled in the same run.", ""]
            if meta.get("before")
            else []
        ),
        "| log level | contender | pages/s | CPU s per 1,000 pages | peak RSS MB |",
        "|---|---|---|---|---|",
    ]
    for level, by in summary.items():
        for contender in (c for c in CONTENDERS if c in by):
            row = by[contender]
            lines.append(
                f"| {level} | {TITLES[contender]} | {_cell(row['pages_per_s'], '.0f')} | "
                f"{_cell(row['cpu_s_per_1000'], '.2f')} | {_cell(row['rss_mb'], '.0f')} |"
            )
    lines += [
        "",
        "Against bare Scrapy, same run:",
        "",
        "| log level | contender | pages/s (target >= 0.97x) | CPU per page (target <= 1.10x) "
        "| RSS (target <= bare + 10 MB) |",
        "|---|---|---|---|---|",
    ]
    for level, by in summary.items():
        for contender, r in by["ratios"].items():
            lines.append(
                f"| {level} | {TITLES[contender]} | {r['speed']:.3f}x, "
                f"{_verdict(r['speed'] >= MIN_SPEED)} | "
                f"{r['cpu']:.3f}x, {_verdict(r['cpu'] <= MAX_CPU)} | "
                f"{r['extra_rss_mb']:+.1f} MB, "
                f"{_verdict(r['extra_rss_mb'] <= MAX_EXTRA_RSS_MB)} |"
            )
    if any("instructions" in by for by in summary.values()):
        lines += [
            "",
            "Instructions per page, by callgrind (every thread of the crawler process; the "
            f"difference between crawls of {meta['callgrind_pages']:,} and "
            f"{meta['callgrind_pages'] // 5:,} pages; one crawl each, steadier than CPU "
            "seconds on a shared machine):",
            "",
            "| log level | contender | instructions per page | against bare |",
            "|---|---|---|---|",
        ]
        for level, by in summary.items():
            counts = by.get("instructions", {})
            for contender in (c for c in CONTENDERS if c in counts):
                lines.append(
                    f"| {level} | {TITLES[contender]} | {counts[contender]:,.0f} | "
                    f"{counts[contender] / counts['bare']:.3f}x |"
                )
    notes = HERE / "OVERHEAD.md"
    if notes.exists():
        lines += ["", notes.read_text().strip()]
    lines += [END, ""]
    return "\n".join(lines)


def write_doc(section: str, doc: Path = DOC) -> None:
    """Puts the section in the doc, in place of the previous one or at the end."""
    text = doc.read_text() if doc.exists() else ""
    if BEGIN in text and END in text:
        head, rest = text.split(BEGIN, 1)
        tail = rest.split(END, 1)[1].lstrip("\n")
        text = head + section + tail
    else:
        text = text.rstrip("\n") + "\n\n" + section
    doc.write_text(text)


def kept_section(doc: Path = DOC) -> str:
    """The doc's overhead section as it stands (for bench/run.py to keep)."""
    text = doc.read_text() if doc.exists() else ""
    if BEGIN not in text or END not in text:
        return ""
    return BEGIN + text.split(BEGIN, 1)[1].split(END, 1)[0] + END + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pages", type=int, default=5000)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--concurrency", type=int, default=30)
    parser.add_argument("--nodes", type=int, default=3)
    parser.add_argument(
        "--maxconn",
        type=int,
        help="SPLASH_CLUSTER_MAXCONN and each node's slots (default: concurrency / nodes, "
        "so that both contenders have as many renders under way)",
    )
    parser.add_argument("--levels", nargs="+", default=["INFO", "DEBUG"])
    parser.add_argument("--contenders", nargs="+", choices=CONTENDERS)
    parser.add_argument(
        "--before",
        metavar="DIR",
        help="a folder holding another build of the scrapy_splash_cluster package (e.g. "
        "site-packages of an older install): crawled too, as the 'before' contender",
    )
    parser.add_argument(
        "--callgrind",
        action="store_true",
        help="also count instructions per page under callgrind (slow: about 1.5 min per "
        "contender and log level)",
    )
    parser.add_argument("--callgrind-pages", type=int, default=1000)
    parser.add_argument("--before-label", default="", help="what --before is, for the doc")
    parser.add_argument("--no-doc", action="store_true", help="print only")
    parser.add_argument(
        "--profile",
        action="store_true",
        help="run each crawl under py-spy (bench/results/profile-*.txt); implies --no-doc",
    )
    parser.add_argument(
        "--report-only",
        metavar="JSON",
        help="rewrite the doc's section from a results file (after editing bench/OVERHEAD.md)",
    )
    args = parser.parse_args()
    if args.report_only:
        saved = json.loads(Path(args.report_only).read_text())
        write_doc(markdown(saved["summary"], saved["meta"]))
        return
    if args.contenders is None:
        args.contenders = [c for c in CONTENDERS if c != "before" or args.before]
    if "before" in args.contenders and not args.before:
        parser.error("the 'before' contender needs --before DIR")
    args.maxconn = args.maxconn or args.concurrency // args.nodes
    slots = args.maxconn
    nodes = _start_nodes(args.nodes, slots)
    runs: list[dict[str, Any]] = []
    try:
        urls = [node.url for node in nodes]
        for repeat in range(args.repeats):
            for level in args.levels:
                order = args.contenders if repeat % 2 == 0 else args.contenders[::-1]
                for contender in order:
                    run = crawl(contender, urls, args, level)
                    run["repeat"] = repeat
                    runs.append(run)
                    print(
                        f"[{repeat}] {level:5} {contender:7} {run['pages_per_s']:6.1f} pages/s "
                        f"{run['cpu_s_per_1000']:5.2f} CPU s/1000 {run['rss_mb']:5.1f} MB "
                        f"gc {run['gc_collections']} threads "
                        + ", ".join(f"{k} {v:.2f}" for k, v in run["thread_cpu"].items()),
                        flush=True,
                    )
    finally:
        for node in nodes:
            node.stop()
    if not {"bare", "cluster"} <= set(args.contenders):
        return
    summary = summarize(runs)
    if args.callgrind:
        nodes = _start_nodes(args.nodes, slots)
        try:
            urls = [node.url for node in nodes]
            for level in args.levels:
                counts = {}
                for contender in args.contenders:
                    counts[contender] = instructions_per_page(contender, urls, args, level)
                    print(f"{level:5} {contender:7} {counts[contender]:,.0f} instructions/page")
                summary[level]["instructions"] = counts
        finally:
            for node in nodes:
                node.stop()
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=HERE
    ).stdout.strip()
    meta = {
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "commit": commit or "unknown",
        "pages": args.pages,
        "nodes": args.nodes,
        "slots": slots,
        "concurrency": args.concurrency,
        "repeats": args.repeats,
        "before": args.before_label,
        "callgrind_pages": args.callgrind_pages,
        "command": shlex.join(sys.argv[1:]),
    }
    section = markdown(summary, meta)
    print(section)
    RESULTS.mkdir(exist_ok=True)
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    (RESULTS / f"overhead-{stamp}.json").write_text(
        json.dumps({"meta": meta, "runs": runs, "summary": summary}, indent=1)
    )
    if not (args.no_doc or args.profile):
        write_doc(section)


if __name__ == "__main__":
    main()
