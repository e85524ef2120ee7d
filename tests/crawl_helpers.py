"""Runs a real crawl in a subprocess and returns what it did."""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent


@dataclass
class CrawlResult:
    items: list[dict[str, Any]]
    stats: dict[str, Any]
    finish_reason: str | None
    log: str
    returncode: int

    def by_index(self) -> dict[int, dict[str, Any]]:
        return {item["index"]: item for item in self.items}


def wait_for(condition: Callable[[], object], what: str, timeout: float = 30.0) -> float:
    """Polls `condition` until it holds; the seconds that took. An event a
    test needs is waited for, never slept for; the timeout only keeps a bug
    from hanging the suite."""
    started = time.monotonic()
    while not condition():
        if time.monotonic() - started > timeout:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.01)
    return time.monotonic() - started


def _limit_open_files(limit: int) -> Callable[[], None]:
    def apply() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (limit, limit))

    return apply


class Crawl:
    """One real crawl in its own process, started now: `result()` waits for
    it, `kill()` ends it as SIGKILL does (no goodbye to anyone)."""

    def __init__(
        self,
        settings: dict[str, Any],
        pages: list[dict[str, Any]],
        *,
        max_open_files: int | None = None,
        prefix: Sequence[str] = (),
    ) -> None:
        """`prefix` goes before the crawl's command line (a wrapper that
        runs it in its own mount namespace, say)."""
        self._tmp = tempfile.TemporaryDirectory()
        tmp = Path(self._tmp.name)
        self._out = tmp / "result.json"
        # Files, not arguments: a crawl of 200 pages with a 10 KB script
        # each is longer than a command line may be.
        settings_file = tmp / "settings.json"
        settings_file.write_text(json.dumps(settings))
        pages_file = tmp / "pages.json"
        pages_file.write_text(json.dumps(pages))
        command = [
            *prefix,
            sys.executable,
            "-m",
            "tests.crawl.run",
            str(self._out),
            str(settings_file),
            str(pages_file),
        ]
        self.proc = subprocess.Popen(
            command,
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ, "PYTHONPATH": str(ROOT), "PYTHONFAULTHANDLER": "1"},
            preexec_fn=None if max_open_files is None else _limit_open_files(max_open_files),
        )

    def kill(self) -> None:
        self.proc.kill()

    def result(self, timeout: float = 120) -> CrawlResult:
        try:
            _, log = self.proc.communicate(timeout=timeout)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.communicate()
        out = self._out
        data = json.loads(out.read_text()) if out.exists() else {"items": [], "stats": {}}
        self._tmp.cleanup()
        return CrawlResult(
            items=data["items"],
            stats=data["stats"],
            finish_reason=data.get("finish_reason"),
            log=log,
            returncode=self.proc.returncode,
        )


def run_crawl(
    settings: dict[str, Any],
    pages: list[dict[str, Any]],
    *,
    during: Sequence[tuple[float, Callable[[], None]]] = (),
    timeout: float = 120,
    max_open_files: int | None = None,
) -> CrawlResult:
    """Crawls `pages` with the add-on and `settings`; each `during` action
    runs that many seconds after the crawl started, from another thread (the
    real-Splash tier's faults, which then wait for what they need; a test
    that needs an event mid-crawl starts a `Crawl` and waits for it with
    `wait_for`). `max_open_files` lowers the crawl process's RLIMIT_NOFILE."""
    crawl = Crawl(settings, pages, max_open_files=max_open_files)
    timers = [threading.Timer(delay, action) for delay, action in during]
    for timer in timers:
        timer.start()
    try:
        return crawl.result(timeout)
    finally:
        for timer in timers:
            timer.cancel()
