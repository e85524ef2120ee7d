"""The stats page in a real browser: headless Chromium loads it with
credentials while a Scrapy crawl runs against mock nodes, one of which went
DOWN, and the node table must show what the core reports."""

from __future__ import annotations

import base64
import json
import os
import shutil
import socket
import subprocess
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from parsel import Selector

from tests.crawl_helpers import Crawl, wait_for

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
USER, PASSWORD = "scrapy", "browser-test-pw"

pytestmark = pytest.mark.skipif(
    CHROMIUM is None and not os.environ.get("CI"),
    reason="chromium is not installed (make test installs it when run as root)",
)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def stats_json(url: str) -> dict[str, Any]:
    token = base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
    request = urllib.request.Request(
        url + "stats.json", headers={"Authorization": f"Basic {token}"}
    )
    with urllib.request.urlopen(request, timeout=5) as answer:
        return json.loads(answer.read())


def answers(page: str) -> bool:
    try:
        stats_json(page)
    except OSError:
        return False
    return True


def chromium(*args: str) -> subprocess.CompletedProcess[str]:
    assert CHROMIUM, "chromium is required for this test in CI"
    return subprocess.run(
        [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", *args],
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_browser_shows_the_states_and_counts_the_core_reports(splash_nodes, tmp_path):
    a, b = splash_nodes(2, latency=0.2)
    port = free_port()
    page = f"http://127.0.0.1:{port}/"
    with_credentials = f"http://{USER}:{PASSWORD}@127.0.0.1:{port}/"
    seen: dict[str, Any] = {}
    screenshot = Path(os.environ.get("STATS_SCREENSHOT", tmp_path / "stats-page.png"))

    def look() -> None:
        seen["before"] = stats_json(page)
        seen["dom"] = chromium("--dump-dom", with_credentials)
        seen["after"] = stats_json(page)
        seen["shot"] = chromium(
            "--window-size=1280,520", f"--screenshot={screenshot}", with_credentials
        )

    crawl = Crawl(
        {
            "SPLASH_URLS": [a.url, b.url],
            "SPLASH_CLUSTER_STATS_PORT": port,
            "SPLASH_CLUSTER_STATS_USER": USER,
            "SPLASH_CLUSTER_STATS_PASSWORD": PASSWORD,
            "SPLASH_CLUSTER_HEALTH_INTERVAL": 0.5,
            "CONCURRENT_REQUESTS": 10,
            "CONCURRENT_REQUESTS_PER_DOMAIN": 10,
        },
        [{"url": f"http://example.com/{i}"} for i in range(150)],
    )
    try:
        wait_for(lambda: answers(page), "the stats page")
        a.set_fault("refuse")
        wait_for(
            lambda: any(n["state"] == "DOWN" for n in stats_json(page)["nodes"]),
            "node a DOWN on the page",
        )
        # The crawl must still run while the browser looks: node b renders
        # slowly meanwhile, so pages are left whatever the browser's pace.
        b.set_fault("latency", latency=3.0)
        look()
    finally:
        b.set_fault("none")
        result = crawl.result()
    assert result.returncode == 0, result.log[-2000:]
    assert seen["dom"].returncode == 0, seen["dom"].stderr[-2000:]
    dom = Selector(seen["dom"].stdout)
    rows = {
        row.css("td.node::text").get(): {
            "state": row.css(".state::text").get(),
            "reason": row.css(".reason::text").get(),
            "requests": int(row.css("td.requests::text").get()),
            "in_flight": row.css("td.in-flight::text").get(),
        }
        for row in dom.css("table#nodes tbody tr")
    }
    before = {n["url"]: n for n in seen["before"]["nodes"]}
    after = {n["url"]: n for n in seen["after"]["nodes"]}
    assert set(rows) == {a.url, b.url}
    assert rows[a.url]["state"] == before[a.url]["state"] == after[a.url]["state"] == "DOWN"
    assert rows[a.url]["reason"].startswith("connection refused")
    assert rows[b.url]["state"] == "UP"
    for url, row in rows.items():
        assert before[url]["requests"] <= row["requests"] <= after[url]["requests"]
        assert row["in_flight"].endswith(f"/{before[url]['maxconn']}")
    assert rows[b.url]["requests"] > 0
    assert dom.css("#nodes-up::text").get() == "1/2"
    assert seen["shot"].returncode == 0 and screenshot.stat().st_size > 10_000
    # The crawl itself lost nothing while a node was down and the page was read.
    assert len(result.items) == 150
    assert not [i for i in result.items if "error" in i]
