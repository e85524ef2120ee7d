"""A request body Splash's ``body`` argument (text in JSON) cannot carry
unchanged is refused by name in a real crawl, never sent mangled."""

from __future__ import annotations

from tests.crawl_helpers import run_crawl
from tests.test_scrapy import assert_clean, errors, settings_for


def test_a_body_that_is_not_utf8_fails_by_name_and_reaches_no_node(splash_nodes):
    (node,) = splash_nodes(1)
    form = {"url": "http://example.com/form", "method": "POST", "body": "name=café"}
    result = run_crawl(
        settings_for([node]),
        [{**form, "body_encoding": "latin-1"}, {**form, "body_encoding": "utf-8"}],
    )
    assert_clean(result)
    (error,) = errors(result)
    assert error["index"] == 0 and error["error"] == "SplashRequestError"
    assert "not UTF-8" in error["message"]
    (entry,) = node.stats()["log"]
    assert entry["args"]["body"] == "name=café"
