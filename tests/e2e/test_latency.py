"""How long a render takes through the cluster, per engine: the median of 20
render.html of the JavaScript pages, one at a time (so that no render waits
for another), as the attempt's own time (the add-on's node, outcome, seconds
in ``response.meta["splash_cluster"]["attempts"]``)."""

from __future__ import annotations

from typing import Any

import pytest

from scripts.splash import RealSplashNode
from tests.crawl_helpers import run_crawl
from tests.e2e.helpers import assert_nothing_lost, js_pages, median_ms, settings_for
from tests.e2e.site import JsSite

pytestmark = pytest.mark.e2e

RENDERS = 20


@pytest.mark.parametrize("engine", ["webkit", "chromium"])
def test_render_latency_through_the_cluster(
    engine: str, nodes: list[RealSplashNode], site: JsSite, measurements: dict[str, Any]
) -> None:
    args = {"engine": "chromium"} if engine == "chromium" else {}
    pages = js_pages(site, RENDERS, args=args)
    settings = settings_for(nodes, CONCURRENT_REQUESTS=1, CONCURRENT_REQUESTS_PER_DOMAIN=1)
    result = run_crawl(settings, pages)
    assert_nothing_lost(result, RENDERS)
    seconds = [item["attempts"][-1][2] for item in result.items]
    assert all(len(item["attempts"]) == 1 for item in result.items)
    measurements[f"latency_{engine}_render_html_ms"] = {
        "median": median_ms(seconds),
        "min": round(min(seconds) * 1000, 1),
        "max": round(max(seconds) * 1000, 1),
        "renders": len(seconds),
    }
    # A sanity bound, far above what this machine shows: a render of a small
    # local page that takes seconds means something is wrong with the node.
    assert median_ms(seconds) < 2000, seconds
