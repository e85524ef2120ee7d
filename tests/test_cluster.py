"""The asyncio API over real sockets, against mock Splash nodes that run as
subprocesses: selection, limits, queueing, the outcome table, failures of
nodes (killed, refusing, frozen), probes, cancellation and configuration."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections import Counter
from collections.abc import Callable
from typing import Any
from urllib.parse import quote

import pytest
from scrapy_splash_cluster import (
    AllAttemptsFailed,
    ClusterClosed,
    ClusterError,
    ClusterTimeout,
    NodeConfig,
    NoNodeAvailable,
    PoisonedRequest,
    ResponseTooLarge,
    SplashCluster,
)


def render(page: str = "http://example.com/", **args: object) -> str:
    query = "&".join(f"{k}={quote(str(v), safe='')}" for k, v in {"url": page, **args}.items())
    return f"/render.html?{query}"


def node_of(response) -> str:
    return dict(response.headers)["x-mock-splash-node"].decode()


async def poll(condition: Callable[[], Any], within: float = 10.0) -> Any:
    """Polls `condition` until it returns something truthy, and returns it;
    None if `within` seconds passed first."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if value := condition():
            return value
        await asyncio.sleep(0.02)
    return None


async def wait_for_state(cluster: SplashCluster, index: int, state: str, within: float = 10.0):
    """Polls until node `index` is in `state`; fails the test with the node's
    snapshot otherwise."""
    node = await poll(lambda: (n := cluster.nodes()[index]).state == state and n, within)
    if not node:
        pytest.fail(f"node {index} never became {state}: {cluster.nodes()[index]!r}")
    return node


async def test_answer_carries_node_and_attempts(splash_nodes, make_cluster):
    (a,) = splash_nodes(1)
    cluster = make_cluster([a.url])
    response = await cluster.request("GET", render("http://example.com/x"))
    assert response.status == 200
    assert b"http://example.com/x" in response.body
    assert response.node == a.url
    assert [(n, o) for n, o, _ in response.attempts] == [(a.url, "200")]


async def test_json_post_reaches_the_node(splash_nodes, make_cluster):
    (a,) = splash_nodes(1)
    cluster = make_cluster([a.url])
    body = json.dumps({"url": "http://example.com/post", "html": 1}).encode()
    response = await cluster.request(
        "POST", "/render.json", headers={"Content-Type": "application/json"}, body=body
    )
    assert response.status == 200
    assert json.loads(response.body)["url"] == "http://example.com/post"


async def test_least_conn_spreads_evenly(splash_nodes, make_cluster):
    nodes = splash_nodes(3, latency=0.05)
    cluster = make_cluster([n.url for n in nodes], maxconn=5)
    responses = await asyncio.gather(
        *(cluster.request("GET", render(f"http://example.com/{i}")) for i in range(60))
    )
    served = Counter(node_of(r) for r in responses)
    assert sorted(served) == ["node-1", "node-2", "node-3"]
    assert all(15 <= count <= 25 for count in served.values()), served


async def test_weight_gives_a_node_its_share(splash_nodes, make_cluster):
    a, b = splash_nodes(2, latency=0.05)
    cluster = make_cluster([NodeConfig(a.url, weight=3, maxconn=6), NodeConfig(b.url, maxconn=2)])
    responses = await asyncio.gather(*(cluster.request("GET", render()) for _ in range(80)))
    served = Counter(node_of(r) for r in responses)
    assert served["node-1"] > 2 * served["node-2"], served


async def test_maxconn_is_respected_at_every_instant(splash_nodes, make_cluster):
    nodes = splash_nodes(2, latency=0.1, slots=20)
    cluster = make_cluster([NodeConfig(nodes[0].url, maxconn=2), nodes[1].url], maxconn=3)
    await asyncio.gather(*(cluster.request("GET", render()) for _ in range(40)))
    assert nodes[0].stats()["max_in_progress"] == 2
    assert nodes[1].stats()["max_in_progress"] == 3


async def test_full_cluster_queues_then_no_node_available(splash_nodes, make_cluster):
    (a,) = splash_nodes(1)
    cluster = make_cluster([a.url], maxconn=1, queue_timeout=0.3)
    slow = asyncio.ensure_future(cluster.request("GET", render(wait=1.5)))
    await asyncio.sleep(0.1)
    with pytest.raises(NoNodeAvailable) as caught:
        await cluster.request("GET", render())
    message = str(caught.value)
    assert "after waiting 0.3s in the queue" in message
    assert f"{a.url} UP 1/1 in flight" in message
    assert caught.value.nodes[0].in_flight == 1
    assert cluster.queue()["timeouts"] == 1
    assert (await slow).status == 200


async def test_queued_request_gets_the_freed_slot(splash_nodes, make_cluster):
    (a,) = splash_nodes(1, latency=0.2)
    cluster = make_cluster([a.url], maxconn=1)
    responses = await asyncio.gather(*(cluster.request("GET", render()) for _ in range(4)))
    assert [r.status for r in responses] == [200] * 4
    assert cluster.queue()["waits"] == 3
    assert a.stats()["max_in_progress"] == 1


# The outcome table, row by row: (fault, final status, retried, counted as a node failure).
@pytest.mark.parametrize(
    ("fault", "retried", "node_failure"),
    [
        ("504", True, False),
        ("internal-error", True, True),
        ("internal-error-502", True, True),
        ("proxy-502", True, True),
        ("die", True, True),
        ("invalid-http", True, True),
        ("truncate", True, True),
        ("render-error", False, False),
    ],
)
async def test_outcome_table(splash_nodes, make_cluster, fault, retried, node_failure):
    a, b = splash_nodes(2)
    a.set_fault(fault)
    cluster = make_cluster([a.url, b.url], error_limit=100)
    # Ties go round-robin from the first node, so the first request tries A.
    response = await cluster.request("GET", render())
    first_node, first_outcome, _ = response.attempts[0]
    assert first_node == a.url
    if retried:
        assert response.status == 200
        assert [n for n, _, _ in response.attempts] == [a.url, b.url]
        assert cluster.nodes()[1].redispatches == 1
    else:
        assert response.status == 502
        assert len(response.attempts) == 1
        assert json.loads(response.body)["type"] == "RenderError"
    node_a = cluster.nodes()[0]
    assert node_a.failures == (1 if node_failure else 0), first_outcome
    assert node_a.state == "UP"


async def test_request_errors_are_returned_not_retried(splash_nodes, make_cluster):
    a, b = splash_nodes(2)
    cluster = make_cluster([a.url, b.url])
    missing_url = await cluster.request("GET", "/render.html")
    assert missing_url.status == 400
    assert json.loads(missing_url.body)["type"] == "BadOption"
    form = await cluster.request(
        "POST",
        "/render.html",
        headers={"content-type": "application/x-www-form-urlencoded"},
        body=b"url=http%3A%2F%2Fexample.com",
    )
    assert form.status == 415
    website = await cluster.request("GET", render("http://down.invalid/"))
    assert website.status == 502
    for response in (missing_url, form, website):
        assert len(response.attempts) == 1
    assert sum(n.failures for n in cluster.nodes()) == 0
    assert a.stats()["requests"] + b.stats()["requests"] == 3


async def test_504_everywhere_ends_as_504_after_the_retries(splash_nodes, make_cluster):
    nodes = splash_nodes(2)
    for node in nodes:
        node.set_fault("504")
    cluster = make_cluster([n.url for n in nodes], retries=3)
    response = await cluster.request("GET", render())
    assert response.status == 504
    assert [o for _, o, _ in response.attempts] == ["504 GlobalTimeoutError"] * 4
    assert [n for n, _, _ in response.attempts] == [nodes[0].url, nodes[1].url] * 2
    assert all(n.state == "UP" and n.failures == 0 for n in cluster.nodes())


async def test_all_attempts_failed_lists_every_attempt(splash_nodes, make_cluster):
    nodes = splash_nodes(2)
    for node in nodes:
        node.set_fault("invalid-http")
    cluster = make_cluster([n.url for n in nodes], retries=2, error_limit=100)
    with pytest.raises(AllAttemptsFailed) as caught:
        await cluster.request("GET", render())
    attempts = caught.value.attempts
    assert [n for n, _, _ in attempts] == [nodes[0].url, nodes[1].url, nodes[0].url]
    assert {o for _, o, _ in attempts} == {"invalid HTTP response"}
    assert "all 3 attempts failed" in str(caught.value)


async def test_a_request_two_nodes_died_under_is_poisoned(splash_nodes, make_cluster):
    nodes = splash_nodes(3)
    for node in nodes[:2]:
        node.set_fault("die")
    cluster = make_cluster([n.url for n in nodes], error_limit=100)
    with pytest.raises(PoisonedRequest) as caught:
        await cluster.request("GET", render())
    attempts = caught.value.attempts
    assert [n for n, _, _ in attempts] == [nodes[0].url, nodes[1].url]
    assert not nodes[2].stats()["log"], "a third node was risked"
    assert f"({nodes[0].url}, {nodes[1].url})" in str(caught.value)
    assert isinstance(caught.value, ClusterError)
    # With a higher limit the third node gets its chance.
    roomier = make_cluster([n.url for n in nodes], error_limit=100, poison_limit=3)
    assert (await roomier.request("GET", render())).node == nodes[2].url


async def test_error_limit_failures_take_a_node_down(splash_nodes, make_cluster):
    a, b = splash_nodes(2)
    a.set_fault("internal-error")
    cluster = make_cluster([a.url, b.url], error_limit=2, health_interval=60)
    for _ in range(6):
        assert (await cluster.request("GET", render())).status == 200
    node_a = cluster.nodes()[0]
    assert node_a.state == "DOWN"
    assert "2 node failures in a row" in node_a.reason
    assert node_a.failures == 2


async def test_node_killed_mid_render_costs_nothing(splash_nodes, make_cluster):
    a, b = splash_nodes(2, latency=1.0)
    cluster = make_cluster([a.url, b.url])
    first = asyncio.ensure_future(cluster.request("GET", render()))
    await asyncio.sleep(0.3)
    a.kill()
    response = await first
    assert response.status == 200
    assert node_of(response) == "node-2"
    assert response.attempts[0][0] == a.url
    assert response.attempts[0][1] in {
        "connection closed before a whole response",
        "connection reset",
    }


async def test_a_wave_of_node_deaths_does_not_poison_its_victims(splash_nodes, make_cluster):
    # Nodes die in waves (started together, they exit at the same --maxrss
    # check). A render cut by the first death, retried at once, lands on the
    # next node of the wave and is cut again: two deaths under one request,
    # which the poison limit (2) takes for a query of death. The retry waits
    # 1 s after a death instead. Here the second node dies as soon as the
    # cut render reaches it, or 0.3 s after the first death at the latest.
    nodes = splash_nodes(2, latency=2.0)
    cluster = make_cluster([n.url for n in nodes])
    pending = asyncio.ensure_future(cluster.request("GET", render()))
    busy = await poll(lambda: [i for i in (0, 1) if cluster.nodes()[i].in_flight])
    assert busy, "the request never reached a node"
    first, second = busy[0], 1 - busy[0]
    nodes[first].kill()
    assert await poll(lambda: cluster.nodes()[first].failures), "the cut was not counted"
    # Without the pause the cut render is on the second node within
    # milliseconds; with it, it is not there within 0.3 s.
    await poll(lambda: cluster.nodes()[second].in_flight, within=0.3)
    nodes[second].kill()
    await asyncio.to_thread(nodes[first].restart)
    response = await asyncio.wait_for(pending, 20)
    assert response.status == 200
    assert [a[0] for a in response.attempts] == [nodes[first].url, nodes[first].url]
    assert response.attempts[0][1] in {
        "connection closed before a whole response",
        "connection reset",
    }


async def test_refusing_node_is_down_at_once_and_probes_bring_it_back(
    splash_nodes, make_cluster, caplog
):
    caplog.set_level(logging.INFO, logger="scrapy_splash_cluster")
    a, b = splash_nodes(2)
    a.set_fault("refuse")
    cluster = make_cluster([a.url, b.url], health_interval=0.5)
    first = await cluster.request("GET", render())
    assert [o for _, o, _ in first.attempts] == ["connection refused", "200"]
    node_a = cluster.nodes()[0]
    assert node_a.state == "DOWN"
    assert node_a.reason == "connection refused"
    responses = await asyncio.gather(*(cluster.request("GET", render()) for _ in range(20)))
    assert {node_of(r) for r in responses} == {"node-2"}
    assert all(len(r.attempts) == 1 for r in responses)
    assert cluster.nodes()[0].requests == 1

    a.set_fault("none")
    await wait_for_state(cluster, 0, "UP")
    responses = await asyncio.gather(*(cluster.request("GET", render()) for _ in range(10)))
    assert "node-1" in {node_of(r) for r in responses}

    records = [(r.name, r.levelname, r.getMessage()) for r in caplog.records]
    assert (
        "scrapy_splash_cluster.health",
        "WARNING",
        f"Splash node {a.url} is DOWN: connection refused",
    ) in records
    assert any(
        name == "scrapy_splash_cluster.health" and level == "INFO" and "is UP again" in msg
        for name, level, msg in records
    )


async def test_all_nodes_down_then_one_back(splash_nodes, make_cluster):
    a, b = splash_nodes(2)
    a.set_fault("refuse")
    b.set_fault("refuse")
    cluster = make_cluster([a.url, b.url], retries=3, queue_timeout=20)
    pending = asyncio.ensure_future(cluster.request("GET", render()))
    await wait_for_state(cluster, 0, "DOWN")
    await wait_for_state(cluster, 1, "DOWN")
    await asyncio.sleep(0.3)
    assert not pending.done()
    assert cluster.queue()["waiting"] == 1
    b.set_fault("none")
    response = await asyncio.wait_for(pending, 10)
    assert response.status == 200
    assert [o for _, o, _ in response.attempts] == ["connection refused"] * 2 + ["200"]
    assert cluster.nodes()[0].state == "DOWN"


async def test_nodes_found_gone_cost_no_retry(splash_nodes, make_cluster):
    # Three nodes gone at once (as nodes reaching --maxrss together are) and
    # one retry: the refusals are not counted, so the request waits for a
    # node to come back instead of failing after two refusals in 10 ms.
    # Probes slow enough (three failed, 0.5 s apart) that the request, sent
    # at once, is the one that finds every node gone.
    nodes = splash_nodes(3)
    cluster = make_cluster(
        [n.url for n in nodes], retries=1, queue_timeout=20, health_interval=0.5, fall=3
    )
    for index in range(3):
        await wait_for_state(cluster, index, "UP")
    for node in nodes:
        node.set_fault("refuse")
    pending = asyncio.ensure_future(cluster.request("GET", render()))
    for index in range(3):
        await wait_for_state(cluster, index, "DOWN")
    assert not pending.done()
    assert cluster.queue()["waiting"] == 1
    nodes[2].set_fault("none")
    response = await asyncio.wait_for(pending, 10)
    assert response.status == 200
    assert [o for _, o, _ in response.attempts] == ["connection refused"] * 3 + ["200"]


async def test_all_nodes_down_ends_in_no_node_available(splash_nodes, make_cluster):
    (a,) = splash_nodes(1)
    a.set_fault("refuse")
    cluster = make_cluster([a.url], queue_timeout=0.5)
    with pytest.raises(NoNodeAvailable) as caught:
        await cluster.request("GET", render())
    assert caught.value.attempts[0][1] == "connection refused"
    assert f"{a.url} DOWN 0/5 in flight (connection refused)" in str(caught.value)


async def test_frozen_node_is_left_for_healthy_ones(splash_nodes, make_cluster):
    a, b = splash_nodes(2, latency=0.3)
    cluster = make_cluster([a.url, b.url], maxconn=3, health_timeout=0.3, fall=2)
    requests = [asyncio.ensure_future(cluster.request("GET", render())) for _ in range(6)]
    await asyncio.sleep(0.1)
    a.freeze()
    try:
        # Without redispatch on DOWN, the three on the frozen node would wait
        # until their timeout (ClusterTimeout): the node stays frozen throughout.
        responses = await asyncio.gather(*requests)
        assert cluster.nodes()[0].state == "DOWN"
    finally:
        a.unfreeze()
    assert all(r.status == 200 for r in responses)
    abandoned = [r for r in responses if r.attempts[0][1] == "abandoned: node marked DOWN"]
    assert len(abandoned) == 3
    assert all(node_of(r) == "node-2" for r in abandoned)
    assert cluster.nodes()[0].abandoned == 3
    await wait_for_state(cluster, 0, "UP")


async def test_cancellation_frees_the_slot_and_aborts_the_render(splash_nodes, make_cluster):
    (a,) = splash_nodes(1)
    cluster = make_cluster([a.url], maxconn=1)
    task = asyncio.ensure_future(cluster.request("GET", render(wait=5)))
    await asyncio.sleep(0.3)
    assert cluster.nodes()[0].in_flight == 1
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await asyncio.sleep(0.05)
    assert cluster.nodes()[0].in_flight == 0
    # The slot is free at once: the next request does not wait for the render.
    response = await asyncio.wait_for(cluster.request("GET", render()), 2)
    assert response.status == 200
    deadline = time.monotonic() + 3
    while a.stats()["cancelled"] < 1 and time.monotonic() < deadline:
        await asyncio.sleep(0.02)
    assert a.stats()["cancelled"] == 1


async def test_request_timeout_covers_the_retries(splash_nodes, make_cluster):
    (a,) = splash_nodes(1)
    a.set_fault("hang")
    cluster = make_cluster([a.url], health_interval=60)
    with pytest.raises(ClusterTimeout) as caught:
        await cluster.request("GET", render(), timeout=0.5)
    assert caught.value.attempts[0][1] == "request timeout reached"
    assert "timed out after 0.5s" in str(caught.value)


async def test_max_size_cuts_the_answer_short(splash_nodes, make_cluster):
    (a,) = splash_nodes(1)
    cluster = make_cluster([a.url])
    with pytest.raises(ResponseTooLarge) as caught:
        await cluster.request("GET", render(), max_size=50)
    assert caught.value.attempts[0][1] == "answer larger than 50 bytes"
    assert cluster.nodes()[0].failures == 0
    assert (await cluster.request("GET", render(), max_size=100_000)).status == 200


async def test_close_refuses_new_requests_and_abort_fails_running_ones(splash_nodes):
    (a,) = splash_nodes(1)
    cluster = SplashCluster([a.url])
    running = asyncio.ensure_future(cluster.request("GET", render(wait=5)))
    await asyncio.sleep(0.2)
    await cluster.close(abort=True)
    await cluster.close()
    with pytest.raises(ClusterClosed):
        await running
    with pytest.raises(ClusterClosed):
        await cluster.request("GET", render())
    assert cluster.nodes()[0].in_flight == 0


async def test_context_manager_closes(splash_nodes):
    (a,) = splash_nodes(1)
    async with SplashCluster([a.url], health_interval=0.05) as cluster:
        assert (await cluster.request("GET", render())).status == 200
    pings = a.stats()["pings"]
    await asyncio.sleep(0.3)
    assert a.stats()["pings"] == pings, "probes went on after close"


async def test_passwords_never_show(splash_nodes, make_cluster):
    (a,) = splash_nodes(1)
    secret_url = a.url.replace("http://", "http://scrapy:hunter2@")
    cluster = make_cluster([secret_url])
    response = await cluster.request("GET", render())
    assert response.node == a.url.replace("http://", "http://scrapy:***@")
    assert "hunter2" not in repr(cluster) + repr(cluster.nodes()) + str(response.attempts)
    assert "hunter2" not in repr(NodeConfig(secret_url))


@pytest.mark.parametrize(
    ("nodes", "options", "message"),
    [
        ([], {}, "invalid nodes: []; expected at least one Splash node URL"),
        ("http://a:1", {}, "invalid nodes: a single string"),
        (["ftp://a:1"], {}, "invalid nodes[0].url"),
        (["http://a:1", "a:2"], {}, "invalid nodes[1].url"),
        (["http://u:pw@a:1", "http://u:pw@a:1"], {}, "each node listed once"),
        ([1], {}, "invalid nodes[0]: int; expected a URL string or a NodeConfig"),
        (["http://a:1"], {"maxconn": 0}, "invalid maxconn: 0; expected an integer >= 1"),
        (["http://a:1"], {"fall": 0}, "invalid fall: 0"),
        (["http://a:1"], {"rise": -1}, "invalid rise: -1"),
        (["http://a:1"], {"retries": -1}, "invalid retries: -1; expected an integer >= 0"),
        (["http://a:1"], {"queue_timeout": 0}, "invalid queue_timeout: 0"),
        (["http://a:1"], {"health_interval": float("nan")}, "invalid health_interval: NaN"),
        (["http://a:1"], {"health_path": "_ping"}, "invalid health_path"),
        (["http://a:1"], {"retry_budget": -0.5}, "invalid retry_budget: -0.5"),
    ],
)
def test_bad_configuration_names_the_argument(nodes, options, message):
    with pytest.raises(ValueError) as caught:
        SplashCluster(nodes, **options)
    assert message in str(caught.value)
    assert "pw" not in str(caught.value)


def test_bad_node_config():
    with pytest.raises(ValueError, match="invalid maxconn: 0"):
        NodeConfig("http://a:1", maxconn=0)


async def test_bad_requests_fail_before_any_node(splash_nodes, make_cluster):
    (a,) = splash_nodes(1)
    cluster = make_cluster([a.url])
    with pytest.raises(ValueError, match="must start with '/'"):
        await cluster.request("GET", "render.html")
    with pytest.raises(ValueError, match="not a valid header name"):
        await cluster.request("GET", "/render.html", headers={"bad header": "x"})
    with pytest.raises(ValueError, match="invalid timeout"):
        await cluster.request("GET", "/render.html", timeout=0)
    assert a.stats()["requests"] == 0


async def test_bursts_of_answers_all_reach_their_futures(splash_nodes, make_cluster):
    # Answers cross from the core's threads to the loop through one wake-up
    # socket; a wake-up lost in a burst would leave futures pending forever.
    # A busy loop (as a spider's callbacks make it) widens every race.
    nodes = splash_nodes(3, latency=0, slots=32)
    cluster = make_cluster([n.url for n in nodes], maxconn=32)
    stop = asyncio.Event()

    async def keep_the_loop_busy() -> None:
        while not stop.is_set():
            end = time.process_time() + 0.001
            while time.process_time() < end:
                pass
            await asyncio.sleep(0)

    busy = asyncio.create_task(keep_the_loop_busy())
    try:
        for _ in range(60):
            # asyncio.wait_for, not asyncio.timeout: the wheel is tested on 3.10 too.
            answers = await asyncio.wait_for(
                asyncio.gather(*(cluster.request("GET", render()) for _ in range(96))),
                30,
            )
            assert [a.status for a in answers] == [200] * 96
    finally:
        stop.set()
        await busy
