"""Runs one real crawl in its own process and writes what happened as JSON:
the items, the stats, the finish reason. A process per crawl gives each
crawl its own reactor and proves the crawler exits clean.

    python -m tests.crawl.run OUT.json SETTINGS.json PAGES.json
"""

from __future__ import annotations

import json
import sys

import scrapy.downloadermiddlewares.cookies as scrapy_cookies
from scrapy.crawler import CrawlerProcess
from tldextract import TLDExtract

from tests.crawl.spiders import PagesSpider

# No network here (nor in CI): tldextract, which Scrapy's CookiesMiddleware
# uses, would download the public suffix list on the first Set-Cookie and log
# a traceback; the list it ships is the one to use.
scrapy_cookies._split_domain = TLDExtract(include_psl_private_domains=True, suffix_list_urls=())


def main() -> None:
    out, settings_path, pages_path = sys.argv[1:4]
    with open(settings_path) as f:
        settings_json = f.read()
    with open(pages_path) as f:
        pages_json = f.read()
    crawl_settings = json.loads(settings_json)
    # Spider attributes (http_user, ...), given with the settings.
    spider_args = crawl_settings.pop("TEST_SPIDER_ARGS", {})
    settings = {
        "LOG_LEVEL": "INFO",
        "TELNETCONSOLE_ENABLED": False,
        "ROBOTSTXT_OBEY": False,
        "ADDONS": {"scrapy_splash_cluster.SplashClusterAddon": 0},
        **crawl_settings,
    }
    items: list[dict] = []
    process = CrawlerProcess(settings)
    crawler = process.create_crawler(PagesSpider)

    def collect(item, response, spider):
        items.append(dict(item))

    from scrapy import signals

    crawler.signals.connect(collect, signal=signals.item_scraped)
    process.crawl(crawler, pages=pages_json, **spider_args)
    process.start()
    stats = {k: v for k, v in (crawler.stats.get_stats() or {}).items()}
    with open(out, "w") as f:
        json.dump(
            {"items": items, "stats": stats, "finish_reason": stats.get("finish_reason")},
            f,
            default=str,
        )


if __name__ == "__main__":
    main()
