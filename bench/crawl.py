"""One benchmark crawl, in its own process, for any contender.

    python bench/crawl.py CONFIG.json RESULT.json

Runs under the contender's own interpreter: the project's bench venv
(Scrapy 2.19 + scrapy-splash-cluster) or the baseline venv (Scrapy 2.13.4 +
scrapy-splash 0.11.1). The spider is the same for every contender; only the
module ``SplashRequest`` comes from differs (``CONFIG["splash_package"]``),
and the settings that wire that package in.

What it measures, inside the crawler process:

* per page: when its request first reached the downloader
  (``request_reached_downloader``; for scrapy-splash that is the rewritten
  request to Splash, after its trip back through the scheduler), when the
  callback or errback ran, the node that rendered it;
* the process's CPU time (``getrusage``, every thread: the Rust core's tokio
  threads included) and RSS, sampled every ``sample_interval`` seconds and at
  the end; the peak RSS (``ru_maxrss``);
* Scrapy's final stats.

On stdout it prints exactly one line, ``BENCH-STARTED <unix time>``, when the
first request reaches the downloader, so that the runner can time its faults
from the start of the crawl rather than from the start of the process.
"""

from __future__ import annotations

import gc
import importlib
import itertools
import json
import logging
import os
import resource
import sys
import time
import warnings
from typing import Any

import scrapy
from scrapy import signals
from scrapy.crawler import CrawlerProcess

_PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * _PAGE_SIZE


def _thread_cpu_seconds() -> dict[str, float]:
    """CPU seconds per thread name (threads of one name summed): the Python
    thread's share against the Rust core's tokio threads'."""
    ticks = os.sysconf("SC_CLK_TCK")
    by_name: dict[str, float] = {}
    for task in os.listdir("/proc/self/task"):
        try:
            with open(f"/proc/self/task/{task}/stat") as f:
                stat = f.read()
        except OSError:  # the thread ended meanwhile
            continue
        name = stat[stat.index("(") + 1 : stat.rindex(")")]
        fields = stat[stat.rindex(")") + 2 :].split()
        cpu = (int(fields[11]) + int(fields[12])) / ticks  # utime + stime
        by_name[name] = by_name.get(name, 0.0) + cpu
    return by_name


def _scheduled(crawler: Any) -> int | None:
    """Requests waiting in the scheduler (what holds most of a crawl's memory)."""
    try:
        return len(crawler.engine._slot.scheduler)
    except (AttributeError, TypeError):  # no crawler yet, or another Scrapy's inside
        return None


class NodeEvents(logging.Handler):
    """Keeps the cluster's node transitions (``Splash node ... is DOWN`` / ``is UP again``)."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.events: list[list[Any]] = []

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        if not message.startswith("Splash node "):
            return
        for marker, state in ((" is DOWN", "DOWN"), (" is UP again", "UP")):
            if marker in message:
                node = message[len("Splash node ") :].split(" ", 1)[0]
                self.events.append([record.created, node, state, message])


class Recorder:
    """Everything the benchmark records, filled by the spider and the signals."""

    def __init__(self) -> None:
        self.started: float | None = None
        self.opened: float | None = None
        self.cpu_at_open = 0.0
        self.reached: dict[int, float] = {}
        self.reached_count = 0
        self.ok: list[list[Any]] = []  # [index, t, latency, download_latency, node, status]
        self.errors: list[list[Any]] = []  # [index, t, latency, error]
        # [t, cpu_s, rss_bytes, ok, errors, requests waiting in the scheduler]
        self.samples: list[list[Any]] = []

    def sample(self, crawler: Any = None) -> None:
        self.samples.append(
            [
                time.time(),
                _cpu_seconds(),
                _rss_bytes(),
                len(self.ok),
                len(self.errors),
                _scheduled(crawler),
            ]
        )

    def request_reached_downloader(self, request: scrapy.Request, spider: scrapy.Spider) -> None:
        index = request.meta.get("bench_index")
        if index is None:
            return
        now = time.time()
        self.reached_count += 1
        if self.started is None:
            self.started = now
            print(f"BENCH-STARTED {now:.6f}", flush=True)
        self.reached.setdefault(index, now)

    def latency(self, index: int, now: float) -> float | None:
        reached = self.reached.get(index)
        return None if reached is None else now - reached


# No Splash package: plain GETs of the nodes' render URLs, spread over the
# nodes in turn (the floor the add-on's own cost is measured against).
BARE = "bare"


def _bare_request(splash_urls: list[str]) -> Any:
    """A SplashRequest look-alike that builds a plain GET of a node's render URL."""
    from urllib.parse import urlencode

    turn = itertools.cycle(splash_urls)

    def request(url: str, callback: Any, *, endpoint: str, args: dict[str, Any], **kwargs: Any):
        query = urlencode({"url": url, **args})
        return scrapy.Request(f"{next(turn)}/{endpoint}?{query}", callback, **kwargs)

    return request


class BenchSpider(scrapy.Spider):
    """Requests ``pages`` pages, one SplashRequest each, with the same render args."""

    name = "bench"

    def __init__(self, config: dict[str, Any], recorder: Recorder, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if config["splash_package"] == BARE:
            self.splash_request = _bare_request(config["splash_urls"])
        else:
            self.splash_request = importlib.import_module(config["splash_package"]).SplashRequest
        self.config = config
        self.recorder = recorder

    async def start(self):
        # Lazy, as Scrapy's docs recommend for long start lists: left alone,
        # Scrapy 2.19 moves every start request into the scheduler as soon as
        # the downloader is full (20,000 requests: +50 MB, not the add-on's
        # doing). One check per CONCURRENT_REQUESTS requests keeps the
        # scheduler that short without a signal round trip per request.
        engine = self.crawler.engine
        batch = self.config["concurrency"] if self.config.get("lazy_start", True) else 0
        for index, request in enumerate(self.start_requests()):
            if batch and index % batch == 0 and engine.needs_backout():
                await self.crawler.signals.wait_for(signals.scheduler_empty)
            yield request

    def start_requests(self):
        # scrapy-splash's spider middleware still has process_start_requests()
        # only, so Scrapy 2.13 calls this instead of start(); 2.19 calls start().
        template = self.config["url_template"]
        for index in range(self.config["pages"]):
            yield self.splash_request(
                template.format(index=index),
                self.parse,
                errback=self.failed,
                endpoint=self.config["endpoint"],
                args=dict(self.config["render_args"]),
                meta={"bench_index": index},
            )

    def parse(self, response):
        now = time.time()
        index = response.meta["bench_index"]
        node = response.headers.get(b"X-Mock-Splash-Node")
        self.recorder.ok.append(
            [
                index,
                now,
                self.recorder.latency(index, now),
                response.meta.get("download_latency"),
                node.decode() if node else None,
                response.status,
            ]
        )

    def failed(self, failure):
        now = time.time()
        index = failure.request.meta.get("bench_index")
        error = type(failure.value).__name__
        response = getattr(failure.value, "response", None)
        if response is not None:
            error = f"{error} {response.status}"
        self.recorder.errors.append([index, now, self.recorder.latency(index, now), error])


def contender_settings(config: dict[str, Any]) -> dict[str, Any]:
    """Scrapy settings: the common ones, then what wires the contender's package in."""
    concurrency = config["concurrency"]
    settings: dict[str, Any] = {
        "LOG_LEVEL": config.get("log_level", "INFO"),
        "TELNETCONSOLE_ENABLED": False,
        "ROBOTSTXT_OBEY": False,
        "CONCURRENT_REQUESTS": concurrency,
        "CONCURRENT_REQUESTS_PER_DOMAIN": concurrency,
        "LOGSTATS_INTERVAL": 5,
    }
    if config["splash_package"] == "scrapy_splash_cluster":
        settings.update(
            {
                "ADDONS": {"scrapy_splash_cluster.SplashClusterAddon": 0},
                "SPLASH_URLS": config["splash_urls"],
                "SPLASH_CLUSTER_MAXCONN": config["maxconn"],
                # Off on Scrapy 2.19 (a job file in the user's profile otherwise).
                "REMOTE_CONTROL_ENABLED": False,
            }
        )
    elif config["splash_package"] == BARE:
        settings["REMOTE_CONTROL_ENABLED"] = False
    else:
        (splash_url,) = config["splash_urls"]
        settings.update(
            {
                "SPLASH_URL": splash_url,
                "DOWNLOADER_MIDDLEWARES": {
                    "scrapy_splash.SplashCookiesMiddleware": 723,
                    "scrapy_splash.SplashMiddleware": 725,
                    "scrapy.downloadermiddlewares.httpcompression.HttpCompressionMiddleware": 810,
                },
                "SPIDER_MIDDLEWARES": {"scrapy_splash.SplashDeduplicateArgsMiddleware": 100},
                "REQUEST_FINGERPRINTER_CLASS": "scrapy_splash.SplashRequestFingerprinter",
            }
        )
    settings.update(config.get("settings", {}))
    return settings


def main() -> None:
    config_path, result_path = sys.argv[1:3]
    with open(config_path) as f:
        config = json.load(f)
    recorder = Recorder()
    # scrapy-splash 0.11.1 on Scrapy 2.13.4 warns on every use of a private
    # method (about one request in three here); not what is measured.
    warnings.filterwarnings("ignore", message="Use of this protected method is deprecated")
    process = CrawlerProcess(contender_settings(config))
    node_events = NodeEvents()
    logging.getLogger().addHandler(node_events)
    crawler = process.create_crawler(BenchSpider)
    samplers: list[Any] = []

    def spider_opened(spider: scrapy.Spider) -> None:
        recorder.opened = time.time()
        recorder.cpu_at_open = _cpu_seconds()
        # Imported here, once Scrapy has installed the reactor it wants.
        from twisted.internet import task

        sampler = task.LoopingCall(recorder.sample, crawler)
        sampler.start(config.get("sample_interval", 1.0), now=True)
        samplers.append(sampler)

    def engine_stopped() -> None:
        # After spider_closed: the cluster writes its per-node stats then.
        for sampler in samplers:
            if sampler.running:
                sampler.stop()
        recorder.sample(crawler)

    crawler.signals.connect(spider_opened, signal=signals.spider_opened)
    crawler.signals.connect(
        recorder.request_reached_downloader, signal=signals.request_reached_downloader
    )
    crawler.signals.connect(engine_stopped, signal=signals.engine_stopped)
    process.crawl(crawler, config=config, recorder=recorder)
    process.start()

    usage = resource.getrusage(resource.RUSAGE_SELF)
    result = {
        "config": config,
        "opened": recorder.opened,
        "started": recorder.started,
        "reached_count": recorder.reached_count,
        "cpu_at_open": recorder.cpu_at_open,
        "cpu_total": usage.ru_utime + usage.ru_stime,
        "maxrss_bytes": usage.ru_maxrss * 1024,
        "thread_cpu": _thread_cpu_seconds(),
        "gc": gc.get_stats(),
        "ok": recorder.ok,
        "errors": recorder.errors,
        "samples": recorder.samples,
        "node_events": node_events.events,
        "stats": {k: v for k, v in (crawler.stats.get_stats() or {}).items()},
    }
    with open(result_path, "w") as f:
        json.dump(result, f, default=str)


if __name__ == "__main__":
    main()
