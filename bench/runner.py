"""One benchmark run: fresh mock nodes (and HAProxy), one crawl, its faults, its numbers."""

from __future__ import annotations

import contextlib
import json
import signal
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from haproxy import HAProxy, process_cpu_seconds
from scenarios import CONTENDER_SETTINGS, HAPROXY, OURS, SINGLE, VICTIM, FaultEvent, Scenario
from scrapy_splash_cluster.testing import MockSplashNode, MockSplashNodeError

CRAWL_SCRIPT = Path(__file__).resolve().parent / "crawl.py"
URL_TEMPLATE = "http://shop.bench.test/item/{index}"
RENDER_ARGS = {"wait": 0}
ENDPOINT = "render.html"
_STOP_GRACE = 10.0


@dataclass(frozen=True)
class RunSpec:
    scenario: Scenario
    contender: str
    repeat: int
    pages: int
    phase: float = 0.0  # seconds added to every fault time (scenarios.fault_phase)
    cluster_settings: tuple[tuple[str, Any], ...] = ()  # extra settings, the add-on only

    @property
    def run_id(self) -> str:
        return f"{self.scenario.name}-{self.contender}-{self.repeat}"


def _start_nodes(scenario: Scenario) -> list[MockSplashNode]:
    capacities = scenario.capacities or (None,) * len(scenario.latencies)
    nodes = [
        MockSplashNode(f"node-{i + 1}", slots=scenario.slots, latency=latency, capacity=capacity)
        for i, (latency, capacity) in enumerate(zip(scenario.latencies, capacities, strict=True))
    ]
    with ThreadPoolExecutor(max_workers=len(nodes)) as pool:
        list(pool.map(lambda node: node.start(), nodes))
    return nodes


def _stop_nodes(nodes: list[MockSplashNode]) -> None:
    for node in nodes:
        with contextlib.suppress(Exception):
            node.stop()


def _apply(node: MockSplashNode, action: str) -> None:
    if action == "kill":
        node.kill()
    elif action == "restart":
        node.restart()
    elif action == "freeze":
        node.freeze()
    elif action == "unfreeze":
        node.unfreeze()
    elif action in ("refuse", "none"):
        node.set_fault(action)
    else:
        raise ValueError(f"unknown fault action {action!r}")


class CrawlProcess:
    """The crawler process, and the threads that watch it and hurt the victim node."""

    def __init__(self, python: Path, config_path: Path, result_path: Path, log_path: Path) -> None:
        self._log = log_path.open("w")
        self.proc = subprocess.Popen(
            [str(python), str(CRAWL_SCRIPT), str(config_path), str(result_path)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=self._log,
            text=True,
            start_new_session=True,
        )
        self.started = threading.Event()
        self.start_time: float | None = None
        self.done = threading.Event()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            if line.startswith("BENCH-STARTED"):
                self.start_time = float(line.split()[1])
                self.started.set()
        self.done.set()

    def wait(self, timeout: float) -> bool:
        """Wait for the crawl to end; False if it ran past ``timeout`` and was stopped."""
        try:
            self.proc.wait(timeout=timeout)
            finished = True
        except subprocess.TimeoutExpired:
            finished = False
            self.stop()
        self.done.set()
        self._reader.join(timeout=5)
        self._log.close()
        return finished

    def stop(self) -> None:
        for signum in (signal.SIGINT, signal.SIGINT, signal.SIGKILL):
            if self.proc.poll() is not None:
                return
            with contextlib.suppress(ProcessLookupError):
                self.proc.send_signal(signum)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(timeout=_STOP_GRACE)


def _run_faults(
    crawl: CrawlProcess,
    victim: MockSplashNode,
    plan: list[FaultEvent],
    applied: list[dict[str, Any]],
) -> None:
    """Apply the plan's events at their times after the crawl's start, until it ends."""
    while not crawl.started.wait(0.1):
        if crawl.done.is_set():
            return
    assert crawl.start_time is not None
    for event in plan:
        delay = crawl.start_time + event.at - time.time()
        if delay > 0 and crawl.done.wait(delay):
            return
        if crawl.done.is_set():
            return
        at = time.time()
        try:
            _apply(victim, event.action)
            ok = True
        except MockSplashNodeError as exc:
            print(f"[bench] fault {event.action} failed: {exc}", file=sys.stderr)
            ok = False
        applied.append(
            {
                "action": event.action,
                "label": event.label,
                "planned": event.at,
                "at": at - crawl.start_time,
                "ok": ok,
            }
        )


def _poll_haproxy(crawl: CrawlProcess, haproxy: HAProxy, changes: list[dict[str, Any]]) -> None:
    """Record HAProxy's view of each server (UP, DOWN...) when it changes."""
    last: dict[str, str] = {}
    while not crawl.done.wait(0.25):
        try:
            rows = haproxy.stats()
        except OSError:
            continue
        now = time.time()
        for row in rows:
            name = row["svname"]
            if name in ("FRONTEND", "BACKEND"):
                continue
            # "UP", "DOWN", or a transition: "UP 1/10" (going down), "DOWN 1/2" (going up).
            status = row["status"].split()[0]
            if last.get(name) not in (None, status):
                changes.append({"t": now, "node": name, "state": status})
            last[name] = status


def run_once(spec: RunSpec, pythons: dict[str, Path], out_dir: Path) -> dict[str, Any]:
    """Runs one crawl and returns its raw record (also written to out_dir/RUN_ID.json)."""
    scenario = spec.scenario
    ours = spec.contender in OURS
    python = pythons["cluster" if ours else "baseline"]
    config_path = out_dir / f"{spec.run_id}.config.json"
    result_path = out_dir / f"{spec.run_id}.result.json"
    log_path = out_dir / f"{spec.run_id}.log"
    result_path.unlink(missing_ok=True)
    plan = scenario.fault_plan(spec.pages, spec.phase)
    applied: list[dict[str, Any]] = []
    haproxy_changes: list[dict[str, Any]] = []
    haproxy_summary: dict[str, Any] | None = None
    haproxy_cpu: float | None = None
    node_stats: dict[str, Any] = {}
    nodes = _start_nodes(scenario)
    haproxy: HAProxy | None = None
    finished = False
    wall = time.time()
    try:
        if spec.contender == HAPROXY:
            haproxy = HAProxy([(n.name, n.port) for n in nodes], scenario.maxconn).start()
            urls = [haproxy.url]
            cpu_before = haproxy.cpu_seconds()
        elif spec.contender == SINGLE:
            urls = [nodes[VICTIM].url]
        else:
            urls = [node.url for node in nodes]
        package = "scrapy_splash_cluster" if ours else "scrapy_splash"
        config = {
            "splash_package": package,
            "splash_urls": urls,
            "pages": spec.pages,
            "url_template": URL_TEMPLATE,
            "endpoint": ENDPOINT,
            "render_args": {**RENDER_ARGS, "timeout": scenario.render_timeout},
            "concurrency": scenario.concurrency,
            "maxconn": scenario.maxconn,
            "sample_interval": 1.0,
            "settings": (
                {**CONTENDER_SETTINGS[spec.contender], **dict(spec.cluster_settings)}
                if ours
                else {}
            ),
        }
        config_path.write_text(json.dumps(config, indent=2))
        crawl = CrawlProcess(python, config_path, result_path, log_path)
        threads = [
            threading.Thread(
                target=_run_faults, args=(crawl, nodes[VICTIM], plan, applied), daemon=True
            )
        ]
        if haproxy is not None:
            threads.append(
                threading.Thread(
                    target=_poll_haproxy, args=(crawl, haproxy, haproxy_changes), daemon=True
                )
            )
        for thread in threads:
            thread.start()
        ideal = spec.pages / scenario.capacity(spec.contender)
        finished = crawl.wait(timeout=60 + 6 * ideal)
        for thread in threads:
            thread.join(timeout=30)
        for node in nodes:
            if node.running and not node.frozen:
                with contextlib.suppress(MockSplashNodeError, OSError):
                    stats = node.stats()
                    node_stats[node.name] = {
                        k: stats.get(k) for k in ("requests", "completed", "cancelled", "dropped")
                    }
                    node_stats[node.name]["answered_504"] = stats["statuses"].get("504", 0)
                    node_stats[node.name]["cpu_s"] = process_cpu_seconds(node.pid)
        if haproxy is not None:
            haproxy_summary = haproxy.summary()
            haproxy_cpu = haproxy.cpu_seconds() - cpu_before
    finally:
        if haproxy is not None:
            haproxy.stop()
        _stop_nodes(nodes)
    result = json.loads(result_path.read_text()) if result_path.exists() else None
    start = (result or {}).get("started") or wall
    record = {
        "run_id": spec.run_id,
        "scenario": scenario.name,
        "contender": spec.contender,
        "repeat": spec.repeat,
        "pages": spec.pages,
        "capacity": scenario.capacity(spec.contender),
        "phase": spec.phase,
        "cluster_settings": dict(spec.cluster_settings),
        "finished": finished,
        "faults": applied,
        "haproxy": haproxy_summary,
        "haproxy_cpu": haproxy_cpu,
        "haproxy_changes": [{**c, "t": c["t"] - start} for c in haproxy_changes],
        "node_stats": node_stats,
        "result": result,
    }
    (out_dir / f"{spec.run_id}.json").write_text(json.dumps(record))
    result_path.unlink(missing_ok=True)
    return record
