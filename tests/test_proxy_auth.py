"""What a Splash request takes along and what it leaves behind, in real
crawls against mock nodes (the node's log shows the arguments it got, which
real Splash turns into the page's request; tests/e2e/test_proxy.py checks
that real Splash then fetches through the proxy):

- the request's proxy (meta["proxy"], http_proxy/https_proxy) becomes Splash's
  ``proxy`` argument, with the credentials HttpProxyMiddleware moved into
  Proxy-Authorization, and no proxy or hop-by-hop header goes to the site;
- the proxy's credentials show in no log line, stat or response.meta;
- an Authorization in splash_headers wins over SPLASH_USER and a node URL's;
- a spider's http_user/http_pass go to Splash, not to the sites, and
  robots.txt is off for its Splash requests only.
"""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest

from tests.crawl_helpers import CrawlResult, run_crawl
from tests.recording_site import RecordingSite
from tests.test_scrapy import assert_clean, errors, settings_for

SECRET = "pr0xy-s3cret"
# Nothing listens there: static mock nodes never fetch the page, so the
# proxy is only an argument here.
PROXY = "127.0.0.1:3128"
HOP_BY_HOP = {
    "proxy-authorization",
    "proxy-connection",
    "connection",
    "keep-alive",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "host",
    "content-length",
    "accept-encoding",
}


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def received(nodes) -> dict[str, dict[str, Any]]:
    """What the nodes got, by page URL: the arguments and the Authorization."""
    return {e["url"]: e for node in nodes for e in node.stats()["log"] if e.get("url")}


def assert_secret_nowhere(result: CrawlResult, *secrets: str) -> None:
    for secret in secrets:
        assert secret not in result.log
        assert secret not in json.dumps(result.stats)
        for item in result.items:
            assert secret not in item["meta_repr"]
            assert secret not in item.get("message", "")


def test_meta_proxy_goes_to_splash_with_its_credentials_and_nothing_to_the_site(splash_nodes):
    (node,) = splash_nodes(1)
    page_headers = {
        "Connection": "X-Hop",
        "X-Hop": "1",
        "Keep-Alive": "300",
        "TE": "trailers",
        "Upgrade": "h2c",
        "Proxy-Connection": "keep-alive",
        "Host": "elsewhere.example",
        "X-Page": "kept",
    }
    result = run_crawl(
        settings_for([node]),
        [
            {
                "url": "http://example.com/auth",
                "meta": {"proxy": f"http://user:{SECRET}@{PROXY}"},
                "headers": page_headers,
            },
            {"url": "http://example.com/plain", "meta": {"proxy": "http://127.0.0.1:3129"}},
            {
                "url": "http://example.com/own",
                "meta": {"proxy": f"http://user:{SECRET}@{PROXY}"},
                "args": {"proxy": "socks5://127.0.0.1:1080"},
            },
            {"url": "http://example.com/none"},
        ],
    )
    assert_clean(result)
    assert not errors(result), errors(result)
    got = received([node])
    authed = got["http://example.com/auth"]["args"]
    # HttpProxyMiddleware moved the credentials into Proxy-Authorization;
    # they are back in the one place Splash takes them.
    assert authed["proxy"] == f"http://user:{SECRET}@{PROXY}"
    sent = {name.lower() for name in authed["headers"]}
    assert "x-page" in sent and "user-agent" in sent
    assert not sent & (HOP_BY_HOP | {"x-hop"}), sent
    assert got["http://example.com/plain"]["args"]["proxy"] == "http://127.0.0.1:3129"
    assert got["http://example.com/own"]["args"]["proxy"] == "socks5://127.0.0.1:1080"
    assert "proxy-authorization" not in {
        n.lower() for n in got["http://example.com/own"]["args"]["headers"]
    }
    assert "proxy" not in got["http://example.com/none"]["args"]
    token = base64.b64encode(f"user:{SECRET}".encode()).decode()
    assert_secret_nowhere(result, SECRET, token)


def test_environment_proxies_go_to_splash_as_scrapy_resolves_them(splash_nodes, monkeypatch):
    (node,) = splash_nodes(1)
    monkeypatch.setenv("http_proxy", f"http://user:{SECRET}@{PROXY}")
    monkeypatch.setenv("https_proxy", "http://127.0.0.1:3130")
    monkeypatch.setenv("no_proxy", "direct.example")
    result = run_crawl(
        settings_for([node]),
        [
            {"url": "http://example.com/env"},
            {"url": "https://example.com/tls"},
            {"url": "http://direct.example/skip"},
        ],
    )
    assert_clean(result)
    assert not errors(result), errors(result)
    got = received([node])
    assert got["http://example.com/env"]["args"]["proxy"] == f"http://user:{SECRET}@{PROXY}"
    assert got["https://example.com/tls"]["args"]["proxy"] == "http://127.0.0.1:3130"
    assert "proxy" not in got["http://direct.example/skip"]["args"]
    for entry in got.values():
        assert "proxy-authorization" not in {n.lower() for n in entry["args"].get("headers", {})}
    assert_secret_nowhere(result, SECRET)


@pytest.mark.parametrize(
    ("proxy", "args", "expected"),
    [
        # Splash 3.5's chromium ignores the proxy argument: it would fetch
        # the page from the node's own address.
        (f"http://user:{SECRET}@{PROXY}", {"engine": "chromium"}, "chromium engine ignores"),
        # Splash knows http and socks5 proxies only.
        (f"https://user:{SECRET}@{PROXY}", {}, "takes http:// or socks5:// proxies"),
    ],
)
def test_a_proxy_splash_would_not_use_is_refused_by_name(splash_nodes, proxy, args, expected):
    (node,) = splash_nodes(1)
    result = run_crawl(
        settings_for([node]),
        [{"url": "http://example.com/x", "meta": {"proxy": proxy}, "args": args}],
    )
    assert_clean(result)
    (error,) = errors(result)
    assert error["error"] == "SplashRequestError"
    assert expected in error["message"] and "127.0.0.1:3128" in error["message"]
    assert node.stats()["requests"] == 0
    assert_secret_nowhere(result, SECRET)


def test_splash_headers_authorization_wins_over_configured_credentials(splash_nodes):
    a, b = splash_nodes(2)
    own = basic("own", "pw-own")
    host_b = b.url.split("://", 1)[1]
    result = run_crawl(
        settings_for(
            [a, b],
            SPLASH_URLS=[a.url, f"http://urluser:url-pw@{host_b}"],
            SPLASH_USER="conf",
            SPLASH_PASS="conf-pw",
        ),
        [
            {"url": f"http://example.com/own/{i}", "splash_headers": {"Authorization": own}}
            for i in range(6)
        ]
        + [{"url": f"http://example.com/configured/{i}"} for i in range(6)],
    )
    assert_clean(result)
    assert not errors(result), errors(result)
    for node, configured in ((a, basic("conf", "conf-pw")), (b, basic("urluser", "url-pw"))):
        by_url = received([node])
        assert by_url, f"{node.url} rendered nothing"
        for url, entry in by_url.items():
            assert entry["authorization"] == (own if "/own/" in url else configured), url


def test_http_user_spider_sends_its_credentials_to_splash_and_not_to_sites(splash_nodes):
    (node,) = splash_nodes(1)
    spider_secret = "sp1der-s3cret"
    with RecordingSite() as splash_site, RecordingSite() as plain_site:
        result = run_crawl(
            settings_for(
                [node],
                ROBOTSTXT_OBEY=True,
                TEST_SPIDER_ARGS={
                    "http_user": "spider",
                    "http_pass": spider_secret,
                    "http_auth_domain": None,
                },
            ),
            [
                {"url": f"{splash_site.url}/page/0"},
                {"url": f"{splash_site.url}/page/1"},
                {"kind": "plain", "url": f"{plain_site.url}/plain"},
            ],
        )
        assert_clean(result)
        assert not errors(result), errors(result)
        for entry in received([node]).values():
            assert entry["authorization"] == basic("spider", spider_secret)
            assert "authorization" not in {n.lower() for n in entry["args"]["headers"]}
        # No robots.txt for the Splash requests' site: it would have got the
        # credentials; the spider's other requests keep HttpAuthMiddleware's ways.
        assert splash_site.paths() == []
        assert sorted(plain_site.paths()) == ["/plain", "/robots.txt"]
        plain = next(r for r in plain_site.seen if r.path == "/plain")
        assert plain.headers["authorization"] == basic("spider", spider_secret)
    warnings = [
        line for line in result.log.splitlines() if "WARNING" in line and "SPLASH_USER" in line
    ]
    assert len(warnings) == 1, warnings
    assert "sent to the Splash nodes" in warnings[0]
    assert spider_secret not in result.log


def test_http_user_spider_with_splash_user_sends_the_configured_credentials(splash_nodes):
    (node,) = splash_nodes(1)
    result = run_crawl(
        settings_for(
            [node],
            SPLASH_USER="conf",
            SPLASH_PASS="conf-pw",
            TEST_SPIDER_ARGS={"http_user": "spider", "http_pass": "x", "http_auth_domain": None},
        ),
        [{"url": "http://example.com/a"}],
    )
    assert_clean(result)
    (entry,) = received([node]).values()
    assert entry["authorization"] == basic("conf", "conf-pw")
    assert "authorization" not in {n.lower() for n in entry["args"]["headers"]}
