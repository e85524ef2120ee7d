"""SplashCluster.request is a coroutine function, as aiohttp's and httpx's
are: asyncio.create_task and TaskGroup take it, nothing is sent before it
runs, and cancelling its task still aborts the render and frees the slot."""

from __future__ import annotations

import asyncio
import inspect
import time

import pytest
from scrapy_splash_cluster import SplashCluster

from tests.test_cluster import render


async def _until(condition, what: str, within: float = 5.0) -> None:
    deadline = time.monotonic() + within
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        await asyncio.sleep(0.01)


def test_request_is_a_coroutine_function():
    assert inspect.iscoroutinefunction(SplashCluster.request)
    assert inspect.iscoroutinefunction(SplashCluster.close)


async def test_create_task_and_task_group_take_requests(splash_nodes, make_cluster):
    a, b = splash_nodes(2)
    cluster = make_cluster([a.url, b.url])
    single = await asyncio.create_task(cluster.request("GET", render()))
    assert single.status == 200
    async with asyncio.TaskGroup() as group:
        tasks = [
            group.create_task(cluster.request("GET", render(f"http://e.com/{i}"))) for i in range(6)
        ]
    assert [t.result().status for t in tasks] == [200] * 6


async def test_nothing_is_sent_before_the_coroutine_runs(splash_nodes, make_cluster):
    (a,) = splash_nodes(1)
    cluster = make_cluster([a.url])
    pending = cluster.request("GET", render())
    await asyncio.sleep(0)  # the loop turns; the coroutine has not been awaited
    assert a.stats()["requests"] == 0
    assert (await pending).status == 200
    assert a.stats()["requests"] == 1


async def test_cancelling_the_task_aborts_the_render_and_frees_the_slot(splash_nodes, make_cluster):
    (a,) = splash_nodes(1)
    cluster = make_cluster([a.url], maxconn=1)
    task = asyncio.create_task(cluster.request("GET", render(wait=5)))
    await _until(lambda: a.stats()["in_progress"] == 1, "the render to start on the node")
    assert cluster.nodes()[0].in_flight == 1
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await _until(lambda: cluster.nodes()[0].in_flight == 0, "the slot to be freed")
    response = await asyncio.wait_for(asyncio.create_task(cluster.request("GET", render())), 2)
    assert response.status == 200
    await _until(lambda: a.stats()["cancelled"] == 1, "the node to see the render cancelled")
