"""The stats page in a real browser: headless Chromium loads it with
credentials while a Scrapy crawl runs against mock nodes, one of which was
killed and went DOWN, another answered 504s and the third was drained through
the page's control API; the node table must show what the core reports, the
charts of the last minutes must be there with the DOWN and the DRAIN marked,
and the browser must block nothing under the page's Content-Security-Policy.

`STATS_SCREENSHOT=docs/stats-page.png STATS_SCREENSHOT_SECONDS=240` makes the
picture for the README: the same events spread over four minutes of crawl, so
that the charts show a stretch of history."""

from __future__ import annotations

import base64
import json
import os
import shutil
import socket
import subprocess
import urllib.request
import xml.etree.ElementTree as ElementTree
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from parsel import Selector

from tests.crawl_helpers import Crawl, wait_for

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
USER, PASSWORD = "scrapy", "browser-test-pw"
CSP = "default-src 'none'; style-src 'unsafe-inline'"

pytestmark = pytest.mark.skipif(
    CHROMIUM is None and not os.environ.get("CI"),
    reason="chromium is not installed (make test installs it when run as root)",
)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def get(url: str, method: str = "GET") -> tuple[bytes, Any]:
    token = base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
    request = urllib.request.Request(
        url, headers={"Authorization": f"Basic {token}"}, method=method
    )
    with urllib.request.urlopen(request, timeout=5) as answer:
        return answer.read(), answer.headers


def stats_json(page: str) -> dict[str, Any]:
    return json.loads(get(page + "stats.json")[0])


def answers(page: str) -> bool:
    try:
        stats_json(page)
    except OSError:
        return False
    return True


def chromium(*args: str) -> subprocess.CompletedProcess[str]:
    """Headless Chromium, its console on stderr (where CSP violations show)."""
    assert CHROMIUM, "chromium is required for this test in CI"
    return subprocess.run(
        [
            CHROMIUM,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--hide-scrollbars",
            "--enable-logging=stderr",
            "--v=0",
            *args,
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )


def csp_violations(run: subprocess.CompletedProcess[str]) -> list[str]:
    return [line for line in run.stderr.splitlines() if "Content Security Policy" in line]


def node(page: str, url: str) -> dict[str, Any]:
    return next(n for n in stats_json(page)["nodes"] if n["url"] == url)


def card(dom: Selector, name: str) -> Selector:
    cards = [c for c in dom.css("#charts .card") if c.css("h3::text").get("").strip() == name]
    assert len(cards) == 1, [c.css("h3::text").get() for c in dom.css("#charts .card")]
    return cards[0]


def test_browser_shows_the_table_and_charts_of_a_crawl_with_a_node_killed(splash_nodes, tmp_path):
    # Slow renders, so that the crawl outlasts the events (a fault with a
    # count falls back to this); sped up at the end.
    a, b, c = splash_nodes(3, latency=0.3)
    port = free_port()
    page = f"http://127.0.0.1:{port}/"
    with_credentials = f"http://{USER}:{PASSWORD}@127.0.0.1:{port}/"
    screenshot = Path(os.environ.get("STATS_SCREENSHOT", tmp_path / "stats-page.png"))
    # For the README's picture: events spread over this much crawl.
    spread = float(os.environ.get("STATS_SCREENSHOT_SECONDS", "0"))
    pages = 600 if not spread else int(spread * 40)

    def hold(fraction: float) -> None:
        if spread:
            wait_for(
                lambda: stats_json(page)["uptime_seconds"] >= spread * fraction,
                f"{spread * fraction:.0f} s of crawl",
                timeout=spread + 60,
            )

    crawl = Crawl(
        {
            "SPLASH_URLS": [a.url, b.url, c.url],
            "SPLASH_CLUSTER_STATS_PORT": port,
            "SPLASH_CLUSTER_STATS_USER": USER,
            "SPLASH_CLUSTER_STATS_PASSWORD": PASSWORD,
            "SPLASH_CLUSTER_HEALTH_INTERVAL": 0.5,
            "CONCURRENT_REQUESTS": 10,
            "CONCURRENT_REQUESTS_PER_DOMAIN": 10,
        },
        [{"url": f"http://example.com/{i}"} for i in range(pages)],
    )
    try:
        wait_for(lambda: answers(page), "the stats page")
        wait_for(
            lambda: all(n["responses"]["2xx"] > 0 for n in stats_json(page)["nodes"]),
            "every node rendering",
        )
        hold(0.25)
        # Five renders of b end in 504s (the cluster redispatches them).
        b.set_fault("504", count=5)
        wait_for(lambda: node(page, b.url)["render_timeouts"] >= 5, "b's 504s")
        hold(0.5)
        # a dies with renders in flight, as a crashed Splash does.
        wait_for(lambda: node(page, a.url)["in_flight"] > 0, "renders in flight on a")
        a.kill()
        wait_for(lambda: node(page, a.url)["state"] == "DOWN", "a DOWN")
        # The charts are drawn from samples taken every second: wait until
        # one saw a DOWN (its state strip carries the state's name).
        wait_for(
            lambda: b"<title>DOWN</title>" in get(page)[0],
            "a sample of a DOWN on the charts",
        )
        hold(0.75)
        # The operator takes c out: its renders finish, it gets no new one.
        get(f"{page}nodes/{quote(c.url, safe='')}/drain", method="POST")
        wait_for(lambda: node(page, c.url)["state"] == "DRAIN", "c DRAIN")
        wait_for(lambda: b"<title>DRAIN</title>" in get(page)[0], "a sample of the DRAIN")
        hold(1.0)
        # The crawl must still run while the browser looks: renders slow
        # down meanwhile, so pages are left whatever the browser's pace.
        for n in (b, c):
            n.set_fault("latency", latency=3.0)
        seen: dict[str, Any] = {"before": stats_json(page)}
        html, headers = get(page)
        seen["html"], seen["csp"] = html.decode(), headers["Content-Security-Policy"]
        seen["dom"] = chromium("--dump-dom", with_credentials)
        seen["after"] = stats_json(page)
        seen["shot"] = chromium(
            "--window-size=1280,820", f"--screenshot={screenshot}", with_credentials
        )
    finally:
        for n in (b, c):
            n.set_fault("latency", latency=0.0)
        if answers(page):
            get(f"{page}nodes/{quote(c.url, safe='')}/ready", method="POST")
        result = crawl.result(timeout=120 + spread * 2)
    assert result.returncode == 0, result.log[-2000:]
    assert seen["dom"].returncode == 0, seen["dom"].stderr[-2000:]
    dom = Selector(seen["dom"].stdout)

    # The table: what the core reported before and after the browser looked.
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
    assert set(rows) == {a.url, b.url, c.url}
    assert rows[a.url]["state"] == before[a.url]["state"] == after[a.url]["state"] == "DOWN"
    # Refused, or closed under the renders in flight: whichever came first.
    assert "connection" in rows[a.url]["reason"], rows[a.url]["reason"]
    assert rows[b.url]["state"] == "UP"
    assert rows[c.url]["state"] == "DRAIN"
    for url, row in rows.items():
        assert before[url]["requests"] <= row["requests"] <= after[url]["requests"]
        assert row["in_flight"].endswith(f"/{before[url]['maxconn']}")
    assert dom.css("#nodes-up::text").get() == "2/3"

    # The charts: the cluster's card and one per node, three charts each.
    cards = dom.css("#charts .card")
    assert len(cards) == 4
    assert cards[0].css("h3::text").get().strip() == "the cluster"
    for each in cards:
        assert len(each.css("svg.spark")) == 3
    a_card = card(dom, a.url)
    down = state_colour_of(seen["html"], "DOWN")
    assert a_card.xpath(".//*[local-name()='rect'][@fill=$c]", c=down), "a's DOWN strip"
    assert a_card.xpath(".//*[local-name()='path'][@stroke=$c]", c=down), "a's change line"
    drain = state_colour_of(seen["html"], "DRAIN")
    c_card = card(dom, c.url)
    assert c_card.xpath(".//*[local-name()='rect'][@fill=$c]", c=drain), "c's DRAIN strip"
    assert c_card.xpath(".//*[local-name()='path'][@stroke=$c]", c=drain), "c's change line"
    assert int(card(dom, b.url).css("b.timeouts::text").get()) >= 5
    assert int(cards[0].css("b.timeouts::text").get()) >= 5
    # A line of renders per second, in the renders chart of the live node.
    assert card(dom, b.url).css("svg.spark")[0].xpath(".//*[local-name()='path'][@d]")
    # Every chart, as the server sent it, is well-formed XML with no style
    # attribute, and the page the strict policy it had.
    charts = seen["html"].split("<svg")[1:]
    assert len(charts) == 6 + 4 * 3  # a legend of six states, then the cards
    for chart in charts:
        tree = ElementTree.fromstring("<svg" + chart.split("</svg>")[0] + "</svg>")
        assert all("style" not in e.attrib for e in tree.iter())
    assert seen["csp"] == CSP

    # Nothing blocked: no CSP violation on the console, where Chromium
    # reports one (a page that breaks the same policy shows it does).
    assert csp_violations(seen["dom"]) == [] and csp_violations(seen["shot"]) == []
    breaking = chromium(
        "--dump-dom",
        "data:text/html,<meta http-equiv='Content-Security-Policy' "
        f'content="{CSP}">'
        "<link rel=stylesheet href='http://127.0.0.1:1/x.css'>",
    )
    assert csp_violations(breaking), breaking.stderr[-2000:]

    assert seen["shot"].returncode == 0 and screenshot.stat().st_size > 10_000
    # The crawl itself lost nothing while a node was down and the page was read.
    assert len(result.items) == pages
    assert not [i for i in result.items if "error" in i]


def state_colour_of(html: str, state: str) -> str:
    """The colour the page's legend gives a state."""
    key = Selector(html).xpath(
        "//span[@class='key'][normalize-space(.)=$s]//*[local-name()='rect']/@fill", s=state
    )
    assert key, f"no legend key for {state}"
    return key.get()
