"""The mock node checked against a real one: the same request to both, and
the answers compared where the project's tests rely on the mock.

What is compared: the status, the content type, whether the body is one JSON
document, and for errors the shape of Splash's error JSON (its keys, ``error``,
``type``, the keys of ``info`` and its ``type``, or the kind of value ``info``
is). For a
JSON 200 the mock must give at least the keys the real node gives. Bodies are
not compared: the mock answers fixed content by design.

Where the mock differs, the comparison is marked ``xfail(strict=True)`` with
the difference as its reason: the mock is another file's business, and a
strict xfail turns into a failure the day the mock is fixed, so the mark is
removed then.
"""

from __future__ import annotations

import http.client
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from scrapy_splash_cluster.testing import MockSplashNode, start_nodes, stop_nodes

from scripts.splash import RealSplashNode
from tests.e2e.site import JsSite

pytestmark = pytest.mark.e2e

LUA = """
function main(splash, args)
  assert(splash:go(args.url))
  splash:wait(0.1)
  return {html=splash:html(), title=splash:evaljs("document.title")}
end
"""
MOCK_SLOW_LATENCY = 2.0


@dataclass
class Case:
    """One request, sent as is to a real node and to a mock node."""

    path: str
    args: dict[str, Any] | None = None
    method: str = "POST"
    form: str | None = None  # a form-encoded body instead of JSON args
    slow_mock: bool = False  # the mock's stand-in for a slow page: a slow node
    differs: str | None = None  # the known difference: the case is a strict xfail
    headers: dict[str, str] = field(default_factory=dict)


PAGE = "{page}"
SLOW = "{slow}"

CASES: dict[str, Case] = {
    "ping 200": Case("/_ping", method="GET"),
    "render.html 200": Case("/render.html", {"url": PAGE}),
    "render.json html+png 200": Case("/render.json", {"url": PAGE, "html": 1, "png": 1}),
    "render.png 200": Case("/render.png", {"url": PAGE}),
    "execute 200": Case(
        "/execute",
        {"url": PAGE, "lua_source": LUA},
        differs="mock runs no Lua: it answers a fixed summary {url, html, node, cookies, "
        "lua_source_length} instead of the script's return value {html, title}",
    ),
    "400 missing url": Case("/render.html", {}),
    "400 bad Lua": Case(
        "/execute",
        {"lua_source": "this is not lua"},
    ),
    "400 missing lua_source": Case("/execute", {"url": PAGE}),
    "400 chromium with headers": Case(
        "/render.html",
        {"url": PAGE, "engine": "chromium", "headers": {"User-Agent": "e2e"}},
    ),
    "415 form POST": Case(
        "/render.html",
        form="url=http%3A%2F%2Fexample.com%2F",
    ),
    "502 RenderError .invalid host": Case("/render.html", {"url": "http://site.invalid/"}),
    "504 GlobalTimeoutError": Case(
        "/render.html",
        {"url": SLOW, "timeout": 0.5},
        slow_mock=True,
    ),
}


@dataclass
class Answer:
    status: int
    content_type: str
    body: bytes

    def shape(self) -> dict[str, Any]:
        """What is compared (see the module docstring)."""
        shape: dict[str, Any] = {"status": self.status, "content_type": self.content_type}
        if self.content_type != "application/json":
            return shape
        text = self.body.decode("utf-8", "replace")
        try:
            data = json.loads(text)
            shape["one_json_document"] = True
        except ValueError:
            data, _ = json.JSONDecoder().raw_decode(text)
            shape["one_json_document"] = False
        if self.status >= 400 and isinstance(data, dict):
            info = data.get("info")
            shape.update(
                keys=sorted(data),
                error=data.get("error"),
                type=data.get("type"),
                info=sorted(info) if isinstance(info, dict) else type(info).__name__,
                info_type=info.get("type") if isinstance(info, dict) else None,
            )
        elif isinstance(data, dict):
            shape["keys"] = sorted(data)
        return shape


def send(port: int, case: Case, page: str, slow: str) -> Answer:
    def fill(value: Any) -> Any:
        return {PAGE: page, SLOW: slow}.get(value, value) if isinstance(value, str) else value

    headers = dict(case.headers)
    body: bytes | None = None
    path = case.path
    if case.form is not None:
        body = case.form.encode()
        headers["Content-Type"] = "application/x-www-form-urlencoded"
    elif case.method == "POST":
        body = json.dumps({k: fill(v) for k, v in (case.args or {}).items()}).encode()
        headers["Content-Type"] = "application/json"
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        conn.request(case.method, path, body=body, headers=headers)
        response = conn.getresponse()
        data = response.read()
    finally:
        conn.close()
    content_type = (response.getheader("Content-Type") or "").split(";")[0].strip()
    return Answer(response.status, content_type, data)


def differences(real: dict[str, Any], mock: dict[str, Any]) -> dict[str, Any]:
    """Every compared item that is not the same, as {item: (real, mock)}."""
    found: dict[str, Any] = {}
    for key in sorted(set(real) | set(mock)):
        if key == "keys" and real["status"] < 400:
            missing = sorted(set(real.get("keys", ())) - set(mock.get("keys", ())))
            if missing:
                found["keys missing in the mock"] = missing
        elif real.get(key) != mock.get(key):
            found[key] = (real.get(key), mock.get(key))
    return found


@pytest.fixture(scope="module")
def mocks() -> Iterator[dict[str, MockSplashNode]]:
    """A mock node as the tests use it, and one whose renders are slow."""
    plain = start_nodes(1, name_prefix="parity")
    slow = start_nodes(1, name_prefix="parity-slow", latency=MOCK_SLOW_LATENCY)
    try:
        yield {"plain": plain[0], "slow": slow[0]}
    finally:
        stop_nodes(plain + slow)


def _params() -> list[Any]:
    params = []
    for name, case in CASES.items():
        # raises=AssertionError: only the comparison may fail as expected; a
        # node that did not start must still show as an error.
        marks = []
        if case.differs:
            marks.append(pytest.mark.xfail(strict=True, raises=AssertionError, reason=case.differs))
        params.append(pytest.param(case, id=name, marks=marks))
    return params


@pytest.mark.parametrize("case", _params())
def test_mock_answers_like_a_real_node(
    case: Case, nodes: list[RealSplashNode], mocks: dict[str, MockSplashNode], site: JsSite
) -> None:
    page, slow = site.page(1), site.slow(5)
    real = send(nodes[0].port, case, page, slow).shape()
    mock_node = mocks["slow" if case.slow_mock else "plain"]
    mock = send(mock_node.port, case, page, slow).shape()
    assert not differences(real, mock), {"real": real, "mock": mock}
