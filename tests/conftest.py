"""Shared fixtures: mock Splash nodes (real subprocesses on loopback) and
clusters that must leave every node with nothing in flight."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import pytest
from scrapy_splash_cluster import SplashCluster

from tests.sites import serve_login_site

pytest_plugins = ["scrapy_splash_cluster.testing.fixtures"]


def pytest_addoption(parser: pytest.Parser) -> None:
    # Here, not only in tests/e2e/conftest.py: pytest reads options from the
    # conftest files of the folders it was given, and `pytest --e2e` gives
    # the root.
    parser.addoption(
        "--e2e",
        action="store_true",
        help="also run tests/e2e against real Splash nodes (installs Splash)",
    )


# Probes fast enough that a test sees a node go DOWN and come back in
# well under a second, instead of HAProxy-like seconds.
FAST_HEALTH: dict[str, Any] = {
    "health_interval": 0.1,
    "health_timeout": 0.5,
    "fall": 2,
    "rise": 2,
}


@pytest.fixture
async def make_cluster() -> AsyncIterator[Callable[..., SplashCluster]]:
    """A factory of clusters that are closed at teardown, after checking
    that every node's in-flight count went back to zero."""
    clusters: list[SplashCluster] = []

    def make(nodes: list[Any], **options: Any) -> SplashCluster:
        cluster = SplashCluster(nodes, **{**FAST_HEALTH, **options})
        clusters.append(cluster)
        return cluster

    yield make
    for cluster in clusters:
        leaked = [(n.url, n.in_flight) for n in cluster.nodes() if n.in_flight]
        await cluster.close(abort=True)
        assert not leaked, f"in-flight counts did not return to zero: {leaked}"


@pytest.fixture
def login_site() -> Iterator[str]:
    """A site whose /login sets a session cookie that /account needs."""
    with serve_login_site() as url:
        yield url
