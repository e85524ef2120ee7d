"""Draining nodes: by an operator through the stats page's control API and
``splash-cluster drain|ready``, and before Splash exits at its ``--maxrss``
(the node's peak RSS read from its real ``/_ping`` answer)."""

from __future__ import annotations

import asyncio
import base64
import json
import urllib.error
import urllib.request
from urllib.parse import quote

import pytest
from scrapy_splash_cluster.cli import main as cli_main

from tests.crawl_helpers import wait_for

USER, PASSWORD = "scrapy", "s3cret-pw"


def render(page: str = "http://example.com/", wait: float = 0) -> str:
    return f"/render.html?url={quote(page, safe='')}&wait={wait}"


def node_of(response) -> str:
    return dict(response.headers)["x-mock-splash-node"].decode()


def post(url: str, credentials: str | None = f"{USER}:{PASSWORD}", method: str = "POST", **headers):
    if credentials is not None:
        headers["Authorization"] = "Basic " + base64.b64encode(credentials.encode()).decode()
    data = b"" if method == "POST" else None
    request = urllib.request.Request(url, data=data, method=method, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=5) as answer:
            return answer.status, answer.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()


def state(cluster, index: int) -> dict:
    return json.loads(cluster.report_json())["nodes"][index]


@pytest.fixture
def drained_pair(splash_nodes, make_cluster):
    a, b = splash_nodes(2, slots=4, latency=0.02)
    cluster = make_cluster(
        [a.url, b.url], maxconn=4, stats_port=0, stats_user=USER, stats_password=PASSWORD
    )
    stats = cluster.stats_url.replace("http://", f"http://{USER}:{PASSWORD}@").rstrip("/")
    return cluster, a, b, stats


async def test_an_operator_drain_lets_renders_finish_and_starts_none_until_ready(
    drained_pair, capsys
):
    cluster, a, b, stats = drained_pair
    # Four long renders on a (maxconn 4 each: least-conn spreads eight).
    slow = [asyncio.ensure_future(cluster.request("GET", render(wait=1.5))) for _ in range(8)]
    await asyncio.to_thread(wait_for, lambda: a.stats()["active"] == 4, "renders on node a")
    code = await asyncio.to_thread(cli_main, ["drain", "--stats", stats, a.url])
    assert code == 0
    out = capsys.readouterr().out
    assert f"{a.url} DRAIN: drained by an operator" in out and "(4 in flight)" in out
    node = state(cluster, 0)
    assert node["state"] == "DRAIN" and node["drain"] == ["operator"]
    received = a.stats()["requests"]
    quick = await asyncio.gather(*(cluster.request("GET", render()) for _ in range(20)))
    assert {node_of(r) for r in quick} == {b.name}
    assert a.stats()["requests"] == received, "a drained node got a new render"
    # The renders it had finish there, answered in full.
    finished = await asyncio.gather(*slow)
    assert all(r.status == 200 for r in finished)
    assert sorted(node_of(r) for r in finished).count(a.name) == 4
    assert state(cluster, 0)["state"] == "DRAIN", "a drain outlives its renders"

    assert await asyncio.to_thread(cli_main, ["ready", "--stats", stats, a.url]) == 0
    assert state(cluster, 0)["state"] == "UP" and state(cluster, 0)["drain"] == []
    again = await asyncio.gather(*(cluster.request("GET", render(wait=0.2)) for _ in range(8)))
    assert {node_of(r) for r in again} == {a.name, b.name}


async def test_the_control_api_refuses_what_it_should(drained_pair, capsys):
    cluster, a, _, stats = drained_pair
    base = cluster.stats_url.rstrip("/")
    target = f"{base}/nodes/{quote(a.url, safe='')}/drain"
    # GET never changes anything; no credentials, no drain.
    assert (await asyncio.to_thread(post, target, method="GET"))[0] == 405
    assert (await asyncio.to_thread(post, target, None))[0] == 401
    # A form on another site's page, sent with the browser's cached credentials.
    code, text = await asyncio.to_thread(post, target, Origin="http://evil.example")
    assert code == 403 and "Origin" in text
    code, _ = await asyncio.to_thread(post, target, **{"Sec-Fetch-Site": "cross-site"})
    assert code == 403
    assert state(cluster, 0)["drain"] == []
    # An unknown node: 404 with the nodes there are, and the CLI says it.
    code, text = await asyncio.to_thread(post, f"{base}/nodes/10.9.9.9:8050/drain")
    assert code == 404 and a.url in text
    assert await asyncio.to_thread(cli_main, ["drain", "--stats", stats, "10.9.9.9:8050"]) == 1
    assert "no Splash node is named" in capsys.readouterr().err
    # By address, and from the page itself (same Origin) it works.
    host_port = a.url.removeprefix("http://")
    same_origin = {"Origin": base}
    code, text = await asyncio.to_thread(post, f"{base}/nodes/{host_port}/drain", **same_origin)
    assert code == 200 and json.loads(text)["state"] == "DRAIN"
    # A wrong password or an unreachable page: non-zero, password never shown.
    wrong = stats.replace(PASSWORD, "nope-pw")
    assert await asyncio.to_thread(cli_main, ["ready", "--stats", wrong, a.url]) == 1
    err = capsys.readouterr().err
    assert "401" in err and "nope-pw" not in err
    assert cli_main(["ready", "--stats", "http://u:pw@127.0.0.1:9", a.url]) == 2
    assert "pw@" not in capsys.readouterr().err


async def test_the_cli_takes_the_password_from_the_environment(drained_pair, monkeypatch):
    cluster, _, b, _ = drained_pair
    monkeypatch.setenv("SPLASH_CLUSTER_STATS_PASSWORD", PASSWORD)
    code = await asyncio.to_thread(cli_main, ["drain", "--stats", cluster.stats_url, b.url])
    assert code == 0 and state(cluster, 1)["state"] == "DRAIN"
    monkeypatch.delenv("SPLASH_CLUSTER_STATS_PASSWORD")
    assert cli_main(["ready", "--stats", cluster.stats_url, b.url]) == 2


async def test_a_node_past_its_maxrss_is_drained_from_its_ping(splash_nodes, make_cluster):
    # The mock reports its process's real peak RSS in /_ping (bytes, as
    # Splash does): tens of MB, far over a 1 MB limit, far under 100 GB.
    a, b = splash_nodes(2)
    from scrapy_splash_cluster import NodeConfig

    cluster = make_cluster([NodeConfig(a.url, maxrss=1), b.url], node_maxrss=100_000)
    await asyncio.to_thread(
        wait_for, lambda: state(cluster, 0)["state"] == "DRAIN", "node a drained by its RSS"
    )
    node = state(cluster, 0)
    assert node["drain"] == ["maxrss"] and node["maxrss_bytes"] == 1024 * 1024
    assert node["peak_rss_bytes"] > node["maxrss_bytes"]
    assert "--maxrss 1 MB" in node["reason"]
    assert state(cluster, 1)["state"] == "UP" and state(cluster, 1)["maxrss_bytes"] == 100_000 << 20
    answers = await asyncio.gather(*(cluster.request("GET", render()) for _ in range(10)))
    assert {node_of(r) for r in answers} == {b.name}
    assert a.stats()["requests"] == 0


async def test_a_node_over_its_maxrss_drains_exits_with_nothing_cut_and_comes_back(
    splash_nodes, make_cluster
):
    # Mock nodes that exit as Splash does at --maxrss (checked every 0.5 s
    # here, 60 s in Splash) and come back 0.3 s later as a new process.
    a, b = splash_nodes(2, slots=3, latency=0.02, maxrss=300, maxrss_check=1.5, restart_after=0.3)
    cluster = make_cluster([a.url, b.url], maxconn=3, node_maxrss=300)
    load = asyncio.gather(*(cluster.request("GET", render(wait=0.05)) for _ in range(600)))
    # Just after one of its checks (the next is over a second away, ten
    # probes and many renders' time), its peak passes the limit.
    await asyncio.to_thread(
        wait_for,
        lambda: a.stats()["requests"] > 10 and a.stats()["next_maxrss_check_in"] > 1.2,
        "renders on node a, just after a check",
    )
    a.set_rss(400)
    await asyncio.to_thread(
        wait_for,
        lambda: state(cluster, 0)["drain"] == ["maxrss"] and state(cluster, 0)["in_flight"] == 0,
        "node a drained, its renders done",
    )
    at_drain = a.stats()["requests"]
    await asyncio.to_thread(wait_for, lambda: a.stats()["exits"] == 1, "node a's --maxrss exit")
    # Between the drain and the exit nothing new was sent to it, and the
    # renders it had finished before the check: nothing was cut.
    assert a.stats()["requests"] == at_drain
    assert a.stats()["dropped"] == 0
    await asyncio.to_thread(
        wait_for,
        lambda: state(cluster, 0)["state"] == "UP" and a.stats()["requests"] > at_drain,
        "node a back, with renders",
    )
    answers = await load
    assert all(r.status == 200 for r in answers)
    assert a.stats()["exits"] == 1 and a.stats()["dropped"] == 0
