"""StatsFile: the crawl's final stats as a JSON file, for the demo's report.

Why an extension, and why at ``engine_stopped``: the cluster's per-node stats
(``splash_cluster/nodes/<host:port>/...``: requests, downs, ups...) are set
when the spider closes, by a receiver connected after the extensions were
built; receivers run in connection order, so a ``spider_closed`` receiver here
would see the stats without them. ``engine_stopped`` comes after all of that.
"""

from __future__ import annotations

import json
from pathlib import Path

from scrapy import signals
from scrapy.crawler import Crawler
from scrapy.exceptions import NotConfigured


class StatsFile:
    """Writes every stat to the file named by DEMO_STATS_FILE once the crawl is over."""

    def __init__(self, crawler: Crawler, path: Path) -> None:
        self.crawler = crawler
        self.path = path

    @classmethod
    def from_crawler(cls, crawler: Crawler) -> StatsFile:
        path = crawler.settings.get("DEMO_STATS_FILE")
        if not path:
            raise NotConfigured("DEMO_STATS_FILE is not set")
        extension = cls(crawler, Path(path))
        crawler.signals.connect(extension.engine_stopped, signal=signals.engine_stopped)
        return extension

    def engine_stopped(self) -> None:
        assert self.crawler.stats is not None
        stats = self.crawler.stats.get_stats()
        # Written whole, then renamed: a reader never sees half a file.
        partial = self.path.with_name(self.path.name + ".partial")
        partial.write_text(json.dumps(stats, default=str, indent=2, sort_keys=True))
        partial.replace(self.path)
