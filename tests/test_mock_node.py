"""The mock Splash node, over real sockets: API, queue, faults, process control.

These tests pin the behaviour the balancer's own tests rely on: a mock that
drifted from Splash (or whose faults stopped failing the way they claim) would
make those tests pass for the wrong reasons.
"""

from __future__ import annotations

import asyncio
import base64
import http.client
import json
import socket
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

import pytest
from scrapy_splash_cluster.testing import (
    JPEG_BYTES,
    PNG_BYTES,
    RENDER_ENDPOINTS,
    MockSplashNode,
    MockSplashNodeError,
    MockSplashServer,
    start_nodes,
    stop_nodes,
)
from scrapy_splash_cluster.testing._capacity import ProcessorSharing

from tests.crawl_helpers import wait_for

if TYPE_CHECKING:
    # Not imported at run time: pytest_plugins below imports the plugin, and an
    # earlier import would escape pytest's assertion rewriting (a warning).
    from scrapy_splash_cluster.testing.fixtures import SplashNodesFactory

pytest_plugins = ["scrapy_splash_cluster.testing.fixtures"]

PAGE = "http://example.com/page?a=1&b=<2>"


class Reply:
    """A whole answer, read off one connection."""

    def __init__(self, response: http.client.HTTPResponse) -> None:
        self.status = response.status
        self.headers = response.headers
        self.body = response.read()

    def json(self) -> Any:
        assert self.headers["Content-Type"] == "application/json"
        return json.loads(self.body)


def request(
    node: MockSplashNode,
    method: str,
    path: str,
    body: bytes | None = None,
    headers: dict[str, str] | None = None,
    timeout: float = 5.0,
) -> Reply:
    conn = http.client.HTTPConnection("127.0.0.1", node.port, timeout=timeout)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        return Reply(conn.getresponse())
    finally:
        conn.close()


def get(node: MockSplashNode, path: str, timeout: float = 5.0) -> Reply:
    return request(node, "GET", path, timeout=timeout)


def post_json(node: MockSplashNode, path: str, data: Any, timeout: float = 5.0) -> Reply:
    body = json.dumps(data).encode()
    headers = {"Content-Type": "application/json"}
    return request(node, "POST", path, body, headers, timeout=timeout)


def render(node: MockSplashNode, client_timeout: float = 5.0, **args: Any) -> Reply:
    """POST a render.html; ``args`` are Splash arguments (``timeout`` among them)."""
    return post_json(node, "/render.html", {"url": PAGE, **args}, timeout=client_timeout)


def raw_exchange(node: MockSplashNode, data: bytes, timeout: float = 5.0) -> bytes:
    """Send bytes, read until the server closes."""
    with socket.create_connection(("127.0.0.1", node.port), timeout=timeout) as sock:
        sock.sendall(data)
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


@pytest.fixture
def node(splash_nodes: SplashNodesFactory) -> MockSplashNode:
    return splash_nodes(1)[0]


# -- the Splash API ---------------------------------------------------------------


def test_ping_and_debug(node: MockSplashNode) -> None:
    reply = get(node, "/_ping")
    assert reply.status == 200
    data = reply.json()
    assert data["status"] == "ok"
    assert isinstance(data["maxrss"], int) and data["maxrss"] > 1024 * 1024
    debug = get(node, "/_debug").json()
    assert debug["active"] == [] and debug["qsize"] == 0
    assert {"maxrss", "fds", "argcache"} <= set(debug)
    assert node.stats()["pings"] == 1


@pytest.mark.parametrize("method", ["GET", "POST"])
def test_every_endpoint_renders(node: MockSplashNode, method: str) -> None:
    for endpoint in RENDER_ENDPOINTS:
        args = {"url": PAGE}
        if endpoint in ("/execute", "/run"):
            args["lua_source"] = "function main(splash) return splash:html() end"
        if method == "GET":
            from urllib.parse import urlencode

            reply = get(node, f"{endpoint}?{urlencode(args)}")
        else:
            reply = post_json(node, endpoint, args)
        assert reply.status == 200, (endpoint, reply.body)
        assert reply.headers["X-Mock-Splash-Node"] == node.name
        if endpoint == "/render.html":
            assert reply.headers["Content-Type"] == "text/html; charset=utf-8"
            assert (
                b"<title>Rendered http://example.com/page?a=1&amp;b=&lt;2&gt;</title>" in reply.body
            )
            assert f'<div id="node">{node.name}</div>'.encode() in reply.body
        elif endpoint == "/render.png":
            assert reply.headers["Content-Type"] == "image/png"
            assert reply.body == PNG_BYTES and reply.body.startswith(b"\x89PNG\r\n\x1a\n")
        elif endpoint == "/render.jpeg":
            assert reply.headers["Content-Type"] == "image/jpeg"
            assert reply.body == JPEG_BYTES and reply.body[:2] == b"\xff\xd8"
        elif endpoint == "/render.json":
            data = reply.json()
            assert data["url"] == data["requestedUrl"] == PAGE
            assert data["title"] == f"Rendered {PAGE}" and data["node"] == node.name
            assert data["geometry"] == [0, 0, 1024, 768] and "html" not in data
        elif endpoint == "/render.har":
            log = reply.json()["log"]
            assert log["version"] == "1.2" and log["creator"]["name"] == "mock-splash"
            assert log["entries"][0]["request"]["url"] == PAGE and log["pages"]
        else:
            data = reply.json()
            assert data["url"] == PAGE and data["node"] == node.name
            assert data["cookies"] == [] and data["lua_source_length"] == len(args["lua_source"])
            assert "rendered by mock splash" in data["html"]
    stats = node.stats()
    assert stats["requests"] == stats["completed"] == len(RENDER_ENDPOINTS)
    assert stats["by_endpoint"] == dict.fromkeys(RENDER_ENDPOINTS, 1)
    first = stats["log"][0]
    assert {k: first[k] for k in ("endpoint", "url", "status", "method")} == {
        "endpoint": "/render.html",
        "url": PAGE,
        "status": 200,
        "method": method,
    }
    assert first["args"]["url"] == PAGE
    assert first["authorization"] is None
    assert first["received_at"] > 0


def test_render_json_includes_and_execute_cookies(node: MockSplashNode) -> None:
    data = post_json(
        node, "/render.json", {"url": PAGE, "html": 1, "png": 1, "jpeg": 1, "har": 1}
    ).json()
    assert "rendered by mock splash" in data["html"]
    assert base64.b64decode(data["png"]) == PNG_BYTES
    assert base64.b64decode(data["jpeg"]) == JPEG_BYTES
    assert data["har"]["log"]["entries"]
    cookies = [{"name": "session", "value": "1", "domain": "example.com"}]
    script = "function main(splash, args) return 1 end"
    data = post_json(
        node, "/execute", {"lua_source": script, "url": PAGE, "cookies": cookies}
    ).json()
    assert data["cookies"] == cookies


def test_argument_errors(node: MockSplashNode) -> None:
    reply = request(
        node,
        "POST",
        "/render.html",
        b"url=x",
        {"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert reply.status == 415
    # As a real node: the error JSON, then Twisted's page in the same body.
    err, _ = json.JSONDecoder().raw_decode(reply.body.decode())
    assert err["error"] == 415 and err["type"] == "UnsupportedContentType"
    assert "application/json" in err["info"]["supported"]

    err = get(node, "/render.html").json()
    assert err == {
        "error": 400,
        "type": "BadOption",
        "description": "Incorrect HTTP API arguments",
        "info": {
            "type": "argument_required",
            "argument": "url",
            "description": "Required argument is missing: url",
        },
    }
    err = post_json(node, "/execute", {"url": PAGE}).json()
    assert err["info"]["argument"] == "lua_source" and err["info"]["type"] == "argument_required"

    for timeout in ("soon", 91, -1):
        err = render(node, timeout=timeout).json()
        assert err["error"] == 400 and err["type"] == "BadOption", timeout
        assert err["info"]["type"] == "bad_argument" and err["info"]["argument"] == "timeout"
    err = render(node, timeout=1, wait=2).json()
    assert err["info"]["argument"] == "wait"

    headers = {"Content-Type": "application/json"}
    err = request(node, "POST", "/render.html", b"{not json", headers).json()
    assert (
        err["error"] == 400 and err["type"] == "BadOption" and err["info"]["type"] == "invalid_json"
    )

    err = post_json(node, "/render.json", {"url": PAGE, "engine": "chromium"}).json()
    assert err["error"] == 400 and err["info"]["argument"] == "engine"
    assert render(node, engine="chromium").status == 200
    assert node.stats()["statuses"] == {"415": 1, "400": 8, "200": 1}


def test_invalid_host_is_a_render_error(node: MockSplashNode) -> None:
    reply = post_json(node, "/render.html", {"url": "http://no-such-site.invalid/x"})
    assert reply.status == 502
    assert reply.json() == {
        "error": 502,
        "type": "RenderError",
        "description": "Error rendering page",
        "info": {
            "type": "Network",
            "code": 3,
            "text": "Host no-such-site.invalid not found",
            "url": "http://no-such-site.invalid/x",
        },
    }


def test_unknown_path_and_bad_http(node: MockSplashNode) -> None:
    assert get(node, "/nothing-here").status == 404
    assert raw_exchange(node, b"NOT A REQUEST\r\n\r\n").startswith(b"HTTP/1.1 400 ")
    assert raw_exchange(node, b"GET / HTTP/1.1\r\nBad Header\r\n\r\n").startswith(b"HTTP/1.1 400 ")
    chunked = (
        b"POST /render.html HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"
    )
    assert raw_exchange(node, chunked).startswith(b"HTTP/1.1 501 ")


def test_keep_alive_and_connection_close(node: MockSplashNode) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", node.port, timeout=5)
    try:
        for _ in range(3):
            conn.request("GET", "/render.html?url=http://a.example/")
            response = conn.getresponse()
            assert response.status == 200 and response.getheader("Connection") is None
            response.read()
    finally:
        conn.close()
    # Two pipelined requests, the second asking to close: both answered, then EOF.
    ping = b"GET /_ping HTTP/1.1\r\nHost: x\r\n"
    data = raw_exchange(node, ping + b"\r\n" + ping + b"Connection: close\r\n\r\n")
    assert data.count(b"HTTP/1.1 200 OK") == 2 and b"Connection: close" in data


# -- slots, queue, timeouts, cancellation -------------------------------------------


def test_queue_timeout_gives_504(splash_nodes: SplashNodesFactory) -> None:
    (node,) = splash_nodes(1, slots=1, latency=1.0)
    with ThreadPoolExecutor(2) as pool:
        first = pool.submit(render, node)
        time.sleep(0.2)
        started = time.monotonic()
        second = render(node, timeout=0.5)
        elapsed = time.monotonic() - started
        assert first.result().status == 200
    assert second.status == 504
    assert second.json() == {
        "error": 504,
        "type": "GlobalTimeoutError",
        "description": "Timeout exceeded rendering page",
        "info": {"remaining": 0, "timeout": 0.5},
    }
    assert 0.3 < elapsed < 0.9  # answered when its timeout expired, not after the first render
    stats = node.stats()
    assert stats["max_active"] == 1 and stats["max_in_progress"] == 2
    assert stats["statuses"] == {"200": 1, "504": 1} and stats["in_progress"] == 0


def test_slots_and_max_in_progress(splash_nodes: SplashNodesFactory) -> None:
    (node,) = splash_nodes(1, slots=2, latency=0.5)
    with ThreadPoolExecutor(4) as pool:
        futures = [pool.submit(render, node) for _ in range(4)]
        time.sleep(0.25)
        debug = get(node, "/_debug").json()
        replies = [f.result() for f in futures]
    assert [r.status for r in replies] == [200] * 4
    assert debug["qsize"] == 2 and debug["active"] == [PAGE, PAGE]
    stats = node.stats()
    assert stats["max_in_progress"] == 4 and stats["max_active"] == 2 and stats["completed"] == 4
    assert stats["active"] == stats["in_progress"] == stats["queued"] == 0


def test_wait_argument_adds_render_time(node: MockSplashNode) -> None:
    started = time.monotonic()
    assert render(node, wait=0.3).status == 200
    assert time.monotonic() - started >= 0.3


def test_client_disconnect_cancels_the_render(splash_nodes: SplashNodesFactory) -> None:
    (node,) = splash_nodes(1, slots=1, latency=1.0)
    with socket.create_connection(("127.0.0.1", node.port)) as sock:
        sock.sendall(b"GET /render.html?url=http://a.example/ HTTP/1.1\r\nHost: x\r\n\r\n")
        time.sleep(0.2)
        assert node.stats()["active"] == 1
    deadline = time.monotonic() + 2
    while (stats := node.stats())["cancelled"] == 0 and time.monotonic() < deadline:
        time.sleep(0.02)
    assert stats["cancelled"] == 1 and stats["active"] == 0 and stats["in_progress"] == 0
    assert stats["completed"] == 0 and stats["log"][-1]["status"] == "cancelled"
    # The slot is free again: the next render does not wait behind a ghost.
    started = time.monotonic()
    assert render(node).status == 200
    assert time.monotonic() - started < 1.5


# -- faults -------------------------------------------------------------------------


def test_fault_refuse_and_clear(node: MockSplashNode) -> None:
    node.set_fault("refuse")
    with pytest.raises(ConnectionRefusedError):
        get(node, "/_ping")
    assert node.stats()["listening"] is False  # the control port still answers
    node.clear_fault()
    assert get(node, "/_ping").status == 200


def test_fault_refuse_closes_pooled_connections(node: MockSplashNode) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", node.port, timeout=5)
    try:
        conn.request("GET", "/_ping")
        conn.getresponse().read()
        node.set_fault("refuse")
        with pytest.raises(ConnectionError):
            conn.request("GET", "/_ping")
            conn.getresponse()
    finally:
        conn.close()


def test_fault_die(node: MockSplashNode) -> None:
    node.set_fault("die")
    with pytest.raises(http.client.RemoteDisconnected):
        render(node)
    assert get(node, "/_ping").status == 200  # the process is alive
    node.set_fault("die", ping=True)
    with pytest.raises(http.client.RemoteDisconnected):
        get(node, "/_ping")
    stats = node.stats()
    assert stats["dropped"] == 1 and stats["log"][-1]["status"] == "die"


def test_fault_die_drops_renders_in_flight(splash_nodes: SplashNodesFactory) -> None:
    (node,) = splash_nodes(1, latency=2.0)
    with ThreadPoolExecutor(1) as pool:
        future = pool.submit(render, node)
        time.sleep(0.3)
        node.set_fault("die")
        with pytest.raises(http.client.RemoteDisconnected):
            future.result(timeout=1.5)
    stats = node.stats()
    assert stats["dropped"] == 1 and stats["active"] == 0 and stats["in_progress"] == 0


def test_fault_hang(node: MockSplashNode) -> None:
    node.set_fault("hang")
    with pytest.raises(TimeoutError):
        render(node, client_timeout=0.3)
    with pytest.raises(TimeoutError):
        get(node, "/_ping", timeout=0.3)
    node.clear_fault()
    assert render(node).status == 200


def test_fault_invalid_http(node: MockSplashNode) -> None:
    node.set_fault("invalid-http")
    with pytest.raises(http.client.BadStatusLine):
        render(node)
    node.set_fault("invalid-http", garbage="this is not http\r\n\r\n")
    with pytest.raises(http.client.BadStatusLine):
        render(node)


def test_fault_truncate(node: MockSplashNode) -> None:
    node.set_fault("truncate")
    conn = http.client.HTTPConnection("127.0.0.1", node.port, timeout=5)
    try:
        conn.request("GET", "/render.html?url=http://a.example/")
        response = conn.getresponse()
        assert response.status == 200 and response.getheader("Content-Length") == "10000"
        with pytest.raises(http.client.IncompleteRead):
            response.read()
    finally:
        conn.close()


@pytest.mark.parametrize(
    ("mode", "status", "type_"),
    [
        ("504", 504, "GlobalTimeoutError"),
        ("render-error", 502, "RenderError"),
        ("internal-error", 500, "InternalError"),
        ("internal-error-502", 502, "InternalError"),
    ],
)
def test_fault_error_answers(node: MockSplashNode, mode: str, status: int, type_: str) -> None:
    node.set_fault(mode)
    reply = render(node)
    assert reply.status == status
    assert reply.json()["type"] == type_
    if mode == "render-error":
        assert reply.json()["info"] == {
            "type": "HTTP",
            "code": 500,
            "text": "Internal Server Error",
            "url": PAGE,
        }
    assert get(node, "/_ping").status == 200  # render faults leave the ping alone


def test_fault_proxy_502_is_html(node: MockSplashNode) -> None:
    node.set_fault("proxy-502")
    reply = render(node)
    assert reply.status == 502
    assert reply.headers["Content-Type"] == "text/html"
    assert reply.body.startswith(b"<html><body><h1>502 Bad Gateway</h1>")


def test_fault_count_applies_once(node: MockSplashNode) -> None:
    assert node.set_fault("504", count=1) == {"mode": "504", "count_left": 1, "params": {}}
    assert render(node).status == 504
    assert render(node).status == 200
    stats = node.stats()
    assert stats["fault"] == "none" and stats["statuses"] == {"504": 1, "200": 1}
    # A request with bad arguments is still a 400 and does not use up the count.
    node.set_fault("render-error", count=1)
    assert get(node, "/render.html").status == 400
    assert render(node).status == 502


def test_fault_latency(node: MockSplashNode) -> None:
    node.set_fault("latency", latency=0.3)
    started = time.monotonic()
    assert render(node).status == 200
    assert time.monotonic() - started >= 0.3
    node.clear_fault()
    started = time.monotonic()
    assert render(node).status == 200
    assert time.monotonic() - started < 0.25


def test_fault_restart(node: MockSplashNode) -> None:
    node.set_fault("restart", downtime=0.4)
    with pytest.raises(ConnectionRefusedError):
        get(node, "/_ping")
    time.sleep(0.6)
    assert render(node).status == 200
    assert node.stats()["fault"] == "none"


def test_unknown_fault_mode(node: MockSplashNode) -> None:
    with pytest.raises(MockSplashNodeError, match=r"unknown fault mode 'explode'.*refuse"):
        node.set_fault("explode")
    with pytest.raises(MockSplashNodeError, match="count"):
        node.set_fault("die", count=0)


def test_reset_stats_keeps_the_fault(node: MockSplashNode) -> None:
    node.set_fault("504")
    render(node)
    node.reset_stats()
    stats = node.stats()
    assert stats["requests"] == 0 and stats["log"] == [] and stats["statuses"] == {}
    assert stats["fault"] == "504"


# -- the process --------------------------------------------------------------------


def test_kill_and_restart_on_the_same_port(node: MockSplashNode) -> None:
    port, pid = node.port, node.pid
    node.kill()
    assert not node.running
    with pytest.raises(ConnectionRefusedError):
        get(node, "/_ping")
    node.restart()
    assert node.port == port and node.pid != pid and node.running
    assert render(node).status == 200
    node.restart()  # also from a running node
    assert node.port == port and get(node, "/_ping").status == 200


def test_freeze_and_unfreeze(node: MockSplashNode) -> None:
    node.freeze()
    assert node.frozen
    with pytest.raises(TimeoutError):
        get(node, "/_ping", timeout=0.3)  # connects (the kernel accepts), never answered
    node.unfreeze()
    assert get(node, "/_ping").status == 200


def test_terminate_and_idempotent_stop(node: MockSplashNode) -> None:
    node.freeze()
    node.terminate()
    assert not node.running
    node.stop()
    node.stop()


def test_start_failure_reports_stderr(node: MockSplashNode) -> None:
    clash = MockSplashNode("clash", port=node.port)
    with pytest.raises(MockSplashNodeError, match=r"(?s)exited with status 1.*in use"):
        clash.start()
    assert not clash.running


def test_start_nodes_without_pytest_fixture() -> None:
    nodes = start_nodes(2, name_prefix="plain", latency=0.0)
    try:
        assert [n.name for n in nodes] == ["plain-1", "plain-2"]
        assert len({n.port for n in nodes}) == 2
        for n in nodes:
            assert (
                get(n, "/render.html?url=http://a.example/").headers["X-Mock-Splash-Node"] == n.name
            )
    finally:
        stop_nodes(nodes)
    assert not any(n.running for n in nodes)


def test_fixture_names_run_on(splash_nodes: SplashNodesFactory) -> None:
    first = splash_nodes(2)
    second = splash_nodes(1, slots=3)
    assert [n.name for n in first + second] == ["node-1", "node-2", "node-3"]
    assert second[0].stats()["slots"] == 3


@pytest.mark.asyncio
async def test_in_process_server() -> None:
    server = MockSplashServer(name="inproc", slots=1, latency=0.05)
    await server.start()
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        writer.write(b"GET /render.html?url=http://a.example/ HTTP/1.1\r\nHost: x\r\n\r\n")
        head = await reader.readuntil(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200 OK") and b"X-Mock-Splash-Node: inproc" in head
        writer.close()
        await writer.wait_closed()
        await server.set_fault({"mode": "refuse"})
        with pytest.raises(ConnectionRefusedError):
            await asyncio.open_connection("127.0.0.1", server.port)
        assert server.stats()["completed"] == 1
    finally:
        await server.close()


def test_cli_prints_one_ready_line() -> None:
    import os
    import sys
    from pathlib import Path

    import scrapy_splash_cluster.testing as testing

    env = dict(os.environ, PYTHONPATH=str(Path(testing.__file__).resolve().parents[2]))
    proc = subprocess.Popen(
        [sys.executable, "-m", "scrapy_splash_cluster.testing", "--port", "0", "--name", "cli"],
        stdout=subprocess.PIPE,
        env=env,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline().decode()
        assert line.startswith("MOCK-SPLASH READY name=cli port=")
        assert f"pid={proc.pid}" in line
        proc.terminate()
        assert proc.wait(timeout=5) == 0
        assert proc.stdout.read() == b""
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()


def test_answers_checked_against_a_real_node(node: MockSplashNode) -> None:
    """The differences tests/e2e/test_mock_parity.py found, now mocked."""
    assert post_json(node, "/render.html", {"url": PAGE, "engine": "chromium"}).status == 200
    chromium = post_json(
        node, "/render.html", {"url": PAGE, "engine": "chromium", "headers": {"X": "1"}}
    )
    assert chromium.status == 400
    assert chromium.json()["info"] == "headers is not implemented"
    bad_lua = post_json(node, "/execute", {"lua_source": "this is not lua"})
    assert bad_lua.status == 400
    err = bad_lua.json()
    assert err["type"] == "ScriptError" and err["info"]["type"] == "LUA_INIT_ERROR"
    assert sorted(err["info"]) == ["error", "line_number", "message", "source", "type"]


def test_argument_cache_per_process(node: MockSplashNode) -> None:
    script = "function main(splash, args) return 1 end -- " + "x" * 100
    saved = request(
        node,
        "POST",
        "/execute",
        json.dumps({"lua_source": script, "save_args": ["lua_source"]}).encode(),
        {"Content-Type": "application/json"},
    )
    assert saved.status == 200
    header = saved.headers["X-Splash-Saved-Arguments"]
    name, key = header.split("=")
    assert name == "lua_source"
    loaded = post_json(node, "/execute", {"load_args": {"lua_source": key}})
    assert loaded.status == 200
    assert loaded.json()["lua_source_length"] == len(script)
    missing = post_json(node, "/execute", {"load_args": {"lua_source": "0" * 40}})
    assert missing.status == 498
    assert missing.json()["type"] == "ExpiredArguments"
    assert missing.json()["info"] == {"expired": ["lua_source"]}
    node.restart()
    assert post_json(node, "/execute", {"load_args": {"lua_source": key}}).status == 498


# -- capacity: renders past it share the node -----------------------------------------


def test_processor_sharing_two_renders_on_capacity_one() -> None:
    # Two renders of 1 s of work each on one core: both finish at 2 s, not 1.
    cpu = ProcessorSharing(1)
    cpu.add("a", 1.0, now=0.0)
    cpu.add("b", 1.0, now=0.0)
    assert cpu.speed == 0.5 and cpu.min_speed == 0.5
    assert cpu.next_finish() == pytest.approx(2.0)
    assert cpu.finish(1.999) == []
    assert sorted(cpu.finish(2.0)) == ["a", "b"] and len(cpu) == 0
    assert cpu.speed == 1.0


def test_processor_sharing_is_recomputed_at_each_change() -> None:
    cpu = ProcessorSharing(1)
    cpu.add("a", 1.0, now=0.0)
    cpu.add("b", 1.0, now=0.5)  # a has 0.5 left; both at half speed from here
    assert cpu.left("a", 0.5) == pytest.approx(0.5)
    assert cpu.next_finish() == pytest.approx(1.5)
    assert cpu.finish(1.5) == ["a"]
    assert cpu.left("b", 1.5) == pytest.approx(0.5)  # then alone, at full speed
    assert cpu.next_finish() == pytest.approx(2.0)
    assert cpu.finish(2.0) == ["b"]
    # Work is conserved: one core did 2 s of work in 2 s.


def test_processor_sharing_cut_render_speeds_the_others_up() -> None:
    cpu = ProcessorSharing(2)
    for key in ("a", "b", "c"):
        cpu.add(key, 3.0, now=0.0)
    assert cpu.speed == pytest.approx(2 / 3)
    assert cpu.next_finish() == pytest.approx(4.5)
    assert cpu.remove("c", 1.5) == pytest.approx(2.0)  # a timeout or a client gone
    assert cpu.speed == 1.0  # two renders on two cores
    assert cpu.next_finish() == pytest.approx(3.5)
    assert sorted(cpu.finish(3.5)) == ["a", "b"]
    assert cpu.min_speed == pytest.approx(2 / 3)


def test_processor_sharing_unlimited_and_bad_capacity() -> None:
    cpu = ProcessorSharing(None)
    for i in range(50):
        cpu.add(i, 1.0, now=0.0)
    assert cpu.speed == 1.0 and cpu.next_finish() == pytest.approx(1.0)
    for bad in (0, -1, 1.5, True, "2"):
        with pytest.raises(ValueError, match="capacity must be an integer >= 1"):
            ProcessorSharing(bad)  # type: ignore[arg-type]


def _start_long_render(node: MockSplashNode) -> socket.socket:
    """A render that works for 20 s unless its socket is closed; returns once
    the node has it rendering."""
    sock = socket.create_connection(("127.0.0.1", node.port))
    sock.sendall(
        b"GET /render.html?url=http://long.example/&wait=20&timeout=30 HTTP/1.1\r\nHost: x\r\n\r\n"
    )
    wait_for(lambda: node.stats()["active"] == 1, "the long render to start")
    return sock


def _end_long_render(node: MockSplashNode, sock: socket.socket) -> None:
    sock.close()
    wait_for(lambda: node.stats()["in_progress"] == 0, "the long render to be cancelled")
    stats = node.stats()
    assert stats["cancelled"] == 1
    assert stats["requests"] == stats["completed"] + stats["cancelled"] + stats["dropped"]


def test_capacity_stretches_a_render_sharing_the_node(splash_nodes: SplashNodesFactory) -> None:
    (node,) = splash_nodes(1, slots=4, capacity=1)
    assert node.stats()["capacity"] == 1 and node.stats()["min_speed"] == 1.0
    long_render = _start_long_render(node)
    try:
        # 0.3 s of work next to the long render, on one core: it runs at
        # half speed for all of its life, so it cannot end before 0.6 s.
        started = time.monotonic()
        assert render(node, wait=0.3).status == 200
        assert time.monotonic() - started >= 0.6
        stats = node.stats()
        assert stats["min_speed"] == 0.5 and stats["speed"] == 1.0  # the long one, alone again
        assert stats["active"] == 1 and stats["completed"] == 1
    finally:
        _end_long_render(node, long_render)


def test_capacity_beyond_the_timeout_is_a_504(splash_nodes: SplashNodesFactory) -> None:
    # 0.5 s of work fits a 0.8 s timeout alone, not at half speed (1 s).
    (node,) = splash_nodes(1, slots=4, capacity=1, latency=0.5)
    assert render(node, timeout=0.8).status == 200
    long_render = _start_long_render(node)
    try:
        reply = render(node, timeout=0.8)
        assert reply.status == 504
        assert reply.json()["type"] == "GlobalTimeoutError"
        assert reply.json()["info"] == {"remaining": 0, "timeout": 0.8}
        stats = node.stats()
        assert stats["statuses"] == {"200": 1, "504": 1} and stats["active"] == 1
    finally:
        _end_long_render(node, long_render)


def test_capacity_above_the_renders_changes_nothing(splash_nodes: SplashNodesFactory) -> None:
    (node,) = splash_nodes(1, slots=4, capacity=2)
    long_render = _start_long_render(node)
    try:
        assert render(node, wait=0.1).status == 200  # two renders, two cores
        assert node.stats()["min_speed"] == 1.0
    finally:
        _end_long_render(node, long_render)


def test_capacity_is_checked(splash_nodes: SplashNodesFactory) -> None:
    with pytest.raises(ValueError, match="capacity must be an integer >= 1"):
        splash_nodes(1, capacity=0)


# -- --maxrss: the simulated peak RSS, the exit, the supervisor's restart -------------

MB = 1024 * 1024


def _raw_render(node: MockSplashNode, wait: float = 20.0) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", node.port))
    sock.sendall(
        f"GET /render.html?url=http://a.example/&wait={wait}&timeout=30 HTTP/1.1\r\n"
        "Host: x\r\n\r\n".encode()
    )
    return sock


def _cut_without_answer(sock: socket.socket) -> bool:
    """True if the node closed the connection without a byte of answer."""
    sock.settimeout(10)
    try:
        return sock.recv(1) == b""
    except ConnectionResetError:
        return True
    finally:
        sock.close()


def test_simulated_rss_in_ping_and_debug(splash_nodes: SplashNodesFactory) -> None:
    (node,) = splash_nodes(1, base_rss=200, rss_per_render=10)
    # Splash's units: /_ping in bytes, /_debug in KB.
    assert get(node, "/_ping").json()["maxrss"] == 200 * MB
    assert get(node, "/_debug").json()["maxrss"] == 200 * 1024
    for _ in range(3):
        assert render(node).status == 200
    assert post_json(node, "/render.html", {}).status == 400  # no render, no growth
    assert get(node, "/_ping").json()["maxrss"] == 230 * MB
    assert node.stats()["rss_mb"] == 230
    assert node.set_rss(512.5) == {"rss_mb": 512.5, "maxrss": None, "exits": 0}
    assert get(node, "/_ping").json()["maxrss"] == int(512.5 * MB)
    assert get(node, "/_debug").json()["maxrss"] == int(512.5 * 1024)
    with pytest.raises(MockSplashNodeError, match="mb must be a number >= 0"):
        node.set_rss(-1)


def test_maxrss_exit_cuts_every_render_then_the_supervisor_restarts_it(
    splash_nodes: SplashNodesFactory,
) -> None:
    (node,) = splash_nodes(1, slots=1, maxrss=300, maxrss_check=0.1, restart_after=0.3)
    script = "function main(splash, args) return 1 end"
    saved = post_json(node, "/execute", {"lua_source": script, "save_args": "lua_source"})
    key = saved.headers["X-Splash-Saved-Arguments"].split("=")[1]
    in_flight, queued = _raw_render(node), None
    try:
        wait_for(lambda: node.stats()["active"] == 1, "a render in flight")
        queued = _raw_render(node)
        wait_for(lambda: node.stats()["queued"] == 1, "a render queued")
        assert node.stats()["exits"] == 0  # 100 MB: checks pass
        node.set_rss(301)
        wait_for(lambda: node.stats()["exits"] == 1, "the maxrss exit")
        assert _cut_without_answer(in_flight) and _cut_without_answer(queued)
    finally:
        in_flight.close()
        if queued is not None:
            queued.close()
    stats = node.stats()
    assert stats["dropped"] == 2 and stats["completed"] == 1 and stats["cancelled"] == 0
    assert stats["requests"] == stats["completed"] + stats["cancelled"] + stats["dropped"]
    assert [e["status"] for e in stats["log"][-2:]] == ["maxrss", "maxrss"]
    wait_for(lambda: node.stats()["listening"], "the supervisor's restart")
    # A new process: base RSS, an empty argument cache, checks running again.
    assert get(node, "/_ping").json()["maxrss"] == 100 * MB
    assert post_json(node, "/execute", {"load_args": {"lua_source": key}}).status == 498
    assert render(node).status == 200
    node.set_rss(1000)
    wait_for(lambda: node.stats()["exits"] == 2, "the second life's exit")


def test_maxrss_exit_without_a_supervisor_stays_down(splash_nodes: SplashNodesFactory) -> None:
    (node,) = splash_nodes(1, maxrss=105, rss_per_render=2, maxrss_check=0.1)
    assert render(node).status == 200 and render(node).status == 200  # 104 MB: under
    assert render(node).status == 200  # 106 MB: the next check exits
    wait_for(lambda: node.stats()["exits"] == 1, "the maxrss exit")
    with pytest.raises(ConnectionRefusedError):
        get(node, "/_ping")
    stats = node.stats()
    assert stats["alive"] is False and stats["listening"] is False
    assert stats["completed"] == 3 and stats["dropped"] == 0
    # Clearing the faults starts it again, as an operator would: a new process.
    node.clear_fault()
    assert get(node, "/_ping").json()["maxrss"] == 100 * MB
    assert node.stats()["alive"] is True


def test_maxrss_off_never_exits(splash_nodes: SplashNodesFactory) -> None:
    (node,) = splash_nodes(1, maxrss_check=0.05)  # no maxrss: no check at all
    node.set_rss(10**6)
    assert render(node).status == 200
    assert node.stats()["exits"] == 0 and node.stats()["maxrss"] is None


def test_memory_options_are_checked(splash_nodes: SplashNodesFactory) -> None:
    for kwargs, message in [
        ({"maxrss": 0}, "maxrss must be a number > 0 or None"),
        ({"rss_per_render": -1}, "rss_per_render must be a number >= 0"),
        ({"base_rss": float("nan")}, "base_rss must be a number >= 0"),
        ({"maxrss_check": 0}, "maxrss_check must be a number > 0"),
        ({"restart_after": "1"}, "restart_after must be a number >= 0 or None"),
    ]:
        with pytest.raises(ValueError, match=message):
            splash_nodes(1, **kwargs)


def test_crash_restarts_a_new_process(node: MockSplashNode) -> None:
    """The crash fault shares the maxrss exit's downtime: the node comes back
    as a new process (its argument cache empty)."""
    script = "function main(splash, args) return 1 end"
    saved = post_json(node, "/execute", {"lua_source": script, "save_args": "lua_source"})
    key = saved.headers["X-Splash-Saved-Arguments"].split("=")[1]
    node.set_fault("crash", url="/poison", downtime=0.2)
    with pytest.raises((ConnectionError, http.client.RemoteDisconnected)):
        post_json(node, "/render.html", {"url": "http://a.example/poison"})
    wait_for(lambda: node.stats()["listening"], "the supervisor's restart")
    assert post_json(node, "/execute", {"load_args": {"lua_source": key}}).status == 498
    assert node.stats()["exits"] == 0  # a crash is not a maxrss exit
