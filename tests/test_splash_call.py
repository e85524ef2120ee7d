"""The node call built for one request: its proxy argument, the headers it
keeps from the site, and the bodies Splash cannot carry."""

from __future__ import annotations

import base64

import pytest
from scrapy_splash_cluster import SplashRequest
from scrapy_splash_cluster._call import SplashRequestError, build_call


def _request(proxy: str | None = None, **kwargs) -> SplashRequest:
    meta = {"proxy": proxy} if proxy is not None else {}
    return SplashRequest("http://example.com/p", meta=meta, **kwargs)


def _proxy_authorization(credentials: str) -> dict[str, str]:
    return {"Proxy-Authorization": "Basic " + base64.b64encode(credentials.encode()).decode()}


@pytest.mark.parametrize(
    ("proxy", "headers", "expected"),
    [
        # Scrapy assumes the scheme's port; Splash would assume 1080.
        ("http://127.0.0.1", {}, "http://127.0.0.1:80"),
        ("127.0.0.1:3128", {}, "http://127.0.0.1:3128"),
        ("socks5://127.0.0.1", {}, "socks5://127.0.0.1:1080"),
        # Splash does not unquote: the credentials go as they read.
        ("http://u:p%3Ass@127.0.0.1:3128", {}, "http://u:p:ss@127.0.0.1:3128"),
        (
            "http://127.0.0.1:3128",
            _proxy_authorization("u:s3cret"),
            "http://u:s3cret@127.0.0.1:3128",
        ),
        ("http://[::1]:3128", {}, "http://[::1]:3128"),
    ],
)
def test_the_proxy_argument(proxy, headers, expected):
    call = build_call(_request(proxy, headers=headers))
    assert call.args["proxy"] == expected
    assert "Proxy-Authorization" not in call.args.get("headers", {})


@pytest.mark.parametrize(
    ("proxy", "headers", "expected"),
    [
        ("http://127.0.0.1:3128", {"Proxy-Authorization": "Bearer t0ken"}, "not basic auth"),
        ("http://u%2F:p@127.0.0.1:3128", {}, "cannot carry"),
        ("ftp://127.0.0.1:21", {}, "http:// or socks5://"),
    ],
)
def test_a_proxy_splash_cannot_take_is_refused_without_its_secret(proxy, headers, expected):
    with pytest.raises(SplashRequestError, match=expected) as caught:
        build_call(_request(proxy, headers=headers))
    assert "t0ken" not in str(caught.value)


def test_no_proxy_no_argument_and_no_proxy_header_to_the_site():
    call = build_call(_request(headers=_proxy_authorization("u:p")))
    assert "proxy" not in call.args
    assert "Proxy-Authorization" not in call.args.get("headers", {})


def test_headers_named_by_connection_stay_off_the_site():
    call = build_call(
        _request(headers={"Connection": "X-Hop, Keep-Alive", "X-Hop": "1", "X-Page": "2"})
    )
    assert {k.lower() for k in call.args["headers"]} == {"x-page"}


def test_a_body_that_is_not_utf8_is_refused():
    request = SplashRequest("http://example.com/form", method="POST", body="café".encode("latin-1"))
    with pytest.raises(SplashRequestError, match="not UTF-8"):
        build_call(request)
    utf8 = SplashRequest("http://example.com/form", method="POST", body="café".encode())
    assert build_call(utf8).args["body"] == "café"


def test_the_middlewares_check_refuses_what_sending_refuses_and_leaves_only_the_headers_out():
    # The middleware checks a request with the site headers left out (the
    # handler converts them, once); the check must still catch every bad
    # request, and differ from the call sent by nothing but those headers.
    check = {"with_proxy": False, "with_site_headers": False}
    latin1 = SplashRequest("http://example.com/form", method="POST", body="café".encode("latin-1"))
    with pytest.raises(SplashRequestError, match="not UTF-8"):
        build_call(latin1, **check)
    with pytest.raises(SplashRequestError, match="unknown Splash endpoint"):
        build_call(_request(endpoint="render.nope"), **check)
    request = _request(headers={"X-Page": "1", "Accept-Encoding": "gzip"}, args={"wait": 1})
    checked, sent = build_call(request, **check), build_call(request)
    assert "headers" not in checked.args
    assert sent.args["headers"] == {"X-Page": "1"}
    assert {k: v for k, v in sent.args.items() if k != "headers"} == checked.args
    assert (checked.endpoint, checked.headers) == (sent.endpoint, sent.headers)
