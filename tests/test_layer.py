"""The Splash request layer without sockets: requests and their meta, the
node call, responses (magic, error codes), fingerprints, settings."""

from __future__ import annotations

import base64
import json

import pytest
from scrapy import Request
from scrapy.http import Headers, Response
from scrapy.settings import Settings
from scrapy.utils.request import RequestFingerprinter
from scrapy_splash_cluster import (
    NodeConfig,
    SplashFormRequest,
    SplashJsonResponse,
    SplashRequest,
    SplashRequestFingerprinter,
    SplashResponse,
    SplashTextResponse,
)
from scrapy_splash_cluster._call import SplashRequestError, build_call
from scrapy_splash_cluster._settings import ClusterSettings, SplashSettingsError
from scrapy_splash_cluster.response import make_splash_response


def answer(request: Request, body: bytes, content_type: bytes, status: int = 200) -> Response:
    return Response(
        request.url,
        status=status,
        headers=Headers({"Content-Type": content_type}),
        body=body,
        request=request,
    )


def test_splash_request_meta_has_scrapy_splash_shape():
    request = SplashRequest(
        "http://example.com/a", endpoint="render.json", args={"html": 1}, meta={"k": 1}
    )
    splash = request.meta["splash"]
    assert splash["endpoint"] == "render.json"
    assert splash["args"] == {"html": 1, "url": "http://example.com/a"}
    assert splash["slot_policy"] == "per_domain"
    assert splash["magic_response"] is True
    assert splash["http_status_from_error_code"] is True
    assert request.meta["k"] == 1
    assert request.url == "http://example.com/a"


def test_url_less_request_for_scripts():
    request = SplashRequest(endpoint="execute", args={"lua_source": "return 1"})
    assert request.url == "about:blank"
    call = build_call(request)
    assert "url" not in call.args
    assert call.path == "/execute"


def test_build_call_fills_in_the_page_request():
    request = SplashRequest(
        "http://example.com/api",
        method="POST",
        body=b'{"q": 1}',
        headers={"X-Page": "1"},
        splash_headers={"X-Node": "2"},
    )
    call = build_call(request)
    assert call.args["url"] == "http://example.com/api"
    assert call.args["http_method"] == "POST"
    assert call.args["body"] == '{"q": 1}'
    assert call.args["headers"]["X-Page"] == "1"
    assert call.headers == {"Content-Type": "application/json", "X-Node": "2"}
    assert json.loads(call.body) == call.args


def test_session_requests_take_cookies_from_the_jar_only():
    request = SplashRequest(
        "http://example.com/s",
        endpoint="execute",
        args={"lua_source": "x"},
        headers={"Cookie": "stale=1", "X-Page": "1"},
    )
    request.meta["_splash_session_cookies"] = [{"name": "sid", "value": "2"}]
    call = build_call(request)
    assert call.args["cookies"] == [{"name": "sid", "value": "2"}]
    assert call.args["headers"] == {"X-Page": "1"}
    plain = SplashRequest("http://example.com/p", headers={"Cookie": "a=1"})
    assert build_call(plain).args["headers"]["Cookie"] == "a=1"


def test_chromium_gets_no_headers_it_would_refuse():
    request = SplashRequest(
        "http://example.com/c", args={"engine": "chromium"}, headers={"X-Page": "1"}
    )
    assert "headers" not in build_call(request).args


def test_form_request_becomes_body_and_method():
    request = SplashFormRequest("http://example.com/login", formdata={"user": "a b"})
    call = build_call(request)
    assert call.args["http_method"] == "POST"
    assert call.args["body"] == "user=a+b"


@pytest.mark.parametrize(
    ("splash", "message"),
    [
        ("render.html", 'meta["splash"] must be a dict'),
        ({"endpoint": "render.pdf"}, "unknown Splash endpoint 'render.pdf'"),
        ({"slot_policy": "fast"}, "unknown slot_policy 'fast'"),
        ({"args": [1]}, 'meta["splash"]["args"] must be a dict'),
    ],
)
def test_bad_splash_meta_is_named(splash, message):
    with pytest.raises(SplashRequestError, match=message.replace("[", r"\[").replace("]", r"\]")):
        build_call(Request("http://example.com", meta={"splash": splash}))


def test_response_classes_by_content_type():
    request = SplashRequest("http://example.com/p")
    options = request.meta["splash"]
    html = make_splash_response(
        request, answer(request, b"<html>hi</html>", b"text/html"), "http://n/render.html", options
    )
    assert type(html) is SplashTextResponse
    assert html.url == "http://example.com/p"
    assert html.real_url == "http://n/render.html"
    assert html.splash_response_status == 200
    png = make_splash_response(request, answer(request, b"\x89PNG", b"image/png"), "r", options)
    assert type(png) is SplashResponse
    replaced = html.replace(status=201)
    assert replaced.real_url == "http://n/render.html"


def test_magic_response_takes_the_page_from_json():
    request = SplashRequest("http://example.com/start", endpoint="execute")
    data = {
        "url": "http://example.com/final",
        "http_status": 203,
        "headers": [
            {"name": "X-Page", "value": "1"},
            {"name": "Content-Encoding", "value": "gzip"},
        ],
        "html": "<html><p id='x'>page</p></html>",
    }
    body = json.dumps(data).encode()
    response = make_splash_response(
        request, answer(request, body, b"application/json"), "r", request.meta["splash"]
    )
    assert type(response) is SplashJsonResponse
    assert response.data == data
    assert response.url == "http://example.com/final"
    assert response.status == 203
    assert response.css("#x::text").get() == "page"
    assert response.headers[b"X-Page"] == b"1"
    assert b"Content-Encoding" not in response.headers
    assert response.splash_response_status == 200


def test_magic_body_is_base64_and_can_be_turned_off():
    request = SplashRequest("http://example.com/img", endpoint="execute")
    body = json.dumps({"body": base64.b64encode(b"\x00\x01").decode()}).encode()
    response = make_splash_response(
        request, answer(request, body, b"application/json"), "r", request.meta["splash"]
    )
    assert response.body == b"\x00\x01"
    off = SplashRequest("http://example.com/img", endpoint="execute", magic_response=False)
    response = make_splash_response(
        off, answer(off, body, b"application/json"), "r", off.meta["splash"]
    )
    assert json.loads(response.body) == json.loads(body)


def test_http_status_from_error_code():
    request = SplashRequest("http://example.com/missing", endpoint="execute")
    error = {
        "error": 400,
        "type": "ScriptError",
        "description": "Error happened while executing Lua script",
        "info": {"error": "http404", "type": "LUA_ERROR", "message": "..."},
    }
    body = json.dumps(error).encode()
    response = make_splash_response(
        request, answer(request, body, b"application/json", 400), "r", request.meta["splash"]
    )
    assert response.status == 404
    assert response.data["type"] == "ScriptError"
    off = SplashRequest("http://example.com/x", http_status_from_error_code=False)
    response = make_splash_response(
        off, answer(off, body, b"application/json", 400), "r", off.meta["splash"]
    )
    assert response.status == 400


def test_fingerprint_covers_page_and_args_never_the_node():
    fingerprinter = SplashRequestFingerprinter()
    scrapy_default = RequestFingerprinter()
    a = SplashRequest("http://example.com/p", args={"wait": 1})
    same = SplashRequest("http://example.com/p", args={"wait": 1}, splash_url="http://other:8050")
    other_args = SplashRequest("http://example.com/p", args={"wait": 2})
    other_endpoint = SplashRequest("http://example.com/p", endpoint="render.json", args={"wait": 1})
    assert fingerprinter.fingerprint(a) == fingerprinter.fingerprint(same)
    assert fingerprinter.fingerprint(a) != fingerprinter.fingerprint(other_args)
    assert fingerprinter.fingerprint(a) != fingerprinter.fingerprint(other_endpoint)
    plain = Request("http://example.com/p")
    assert fingerprinter.fingerprint(plain) == scrapy_default.fingerprint(plain)
    assert fingerprinter.fingerprint(a) != scrapy_default.fingerprint(plain)


def test_settings_resolve_nodes_and_credentials():
    settings = Settings(
        {
            "SPLASH_URLS": [
                "http://a:8050",
                {"url": "http://b:8050", "maxconn": 2, "weight": 3},
                "http://own:pw@c:8050",
            ],
            "SPLASH_USER": "scrapy",
            "SPLASH_PASS": "p@ss",
            "SPLASH_CLUSTER_MAXCONN": "4",
        }
    )
    parsed = ClusterSettings.from_settings(settings)
    a, b, c = parsed.nodes
    assert a == "http://scrapy:p%40ss@a:8050"
    assert isinstance(b, NodeConfig)
    assert (b.url, b.maxconn, b.weight) == ("http://scrapy:p%40ss@b:8050", 2, 3)
    assert c == "http://own:pw@c:8050"
    assert parsed.maxconn == 4
    assert parsed.node_labels == ["a:8050", "b:8050", "c:8050"]


def test_retry_budget_can_be_turned_off():
    on = ClusterSettings.from_settings(Settings({"SPLASH_URL": "http://a:8050"}))
    assert on.retry_budget == 0.2
    off = ClusterSettings.from_settings(
        Settings({"SPLASH_URL": "http://a:8050", "SPLASH_CLUSTER_RETRY_BUDGET": "off"})
    )
    assert off.retry_budget == float("inf")


def test_single_splash_url_is_a_cluster_of_one():
    parsed = ClusterSettings.from_settings(Settings({"SPLASH_URL": "http://a:8050"}))
    assert parsed.nodes == ["http://a:8050"]


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"SPLASH_URLS": "http://a:1,,http://b:2"}, "comma-separated node URLs, none empty"),
        ({"SPLASH_URLS": [{"url": "http://a:1", "maxconn": 0}]}, "SPLASH_URLS[0].maxconn: 0"),
        ({"SPLASH_URLS": [{"host": "a"}]}, "invalid SPLASH_URLS[0]"),
        ({"SPLASH_URLS": ["http://u:secret@:1"]}, "invalid SPLASH_URLS[0]"),
        ({"SPLASH_URLS": ["http://a:1"], "SPLASH_PASS": "x"}, "SPLASH_PASS: set without"),
        ({"SPLASH_URLS": ["http://a:1"], "SPLASH_CLUSTER_FALL": 0}, "SPLASH_CLUSTER_FALL: 0"),
        ({"SPLASH_URLS": ["http://a:1"], "SPLASH_CLUSTER_HEALTH_PATH": "x"}, "HEALTH_PATH"),
        ({"SPLASH_URLS": ["http://a:1"], "SPLASH_CLUSTER_RETRIES": 1.5}, "RETRIES: 1.5"),
        ({"SPLASH_URLS": ["http://a:1"], "SPLASH_CLUSTER_RETRY_BUDGET": -1}, "BUDGET: -1"),
    ],
)
def test_bad_settings(values, message):
    with pytest.raises(SplashSettingsError) as caught:
        ClusterSettings.from_settings(Settings(values))
    assert message in str(caught.value)
    assert "secret" not in str(caught.value)
