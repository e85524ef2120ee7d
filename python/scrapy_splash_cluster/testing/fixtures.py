"""pytest plugin: the ``splash_nodes`` fixture.

Enable it in a test module or the root conftest.py::

    pytest_plugins = ["scrapy_splash_cluster.testing.fixtures"]

    def test_spread(splash_nodes):
        nodes = splash_nodes(3, slots=2)      # node-1..node-3, started in parallel
        urls = [node.url for node in nodes]
        nodes[0].set_fault("die")

Every node a test started is stopped at teardown, also when the test failed,
so a failing test cannot leave processes or ports behind.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, Protocol

import pytest

from ._handle import MockSplashNode, start_nodes, stop_nodes

__all__ = ["SplashNodesFactory", "splash_nodes", "start_nodes", "stop_nodes"]


class SplashNodesFactory(Protocol):
    """The type of the ``splash_nodes`` fixture."""

    def __call__(self, n: int = 3, **node_kwargs: Any) -> list[MockSplashNode]:
        """Start ``n`` more nodes (see :func:`start_nodes`)."""
        ...


@pytest.fixture
def splash_nodes() -> Iterator[SplashNodesFactory]:
    """Factory fixture: ``splash_nodes(n=3, **node_kwargs) -> list[MockSplashNode]``.

    Names run on across calls within a test (node-1..node-3, then node-4...),
    so every node of a test has its own name.
    """
    started: list[MockSplashNode] = []

    def factory(n: int = 3, **node_kwargs: Any) -> list[MockSplashNode]:
        nodes = start_nodes(n, first_index=len(started) + 1, **node_kwargs)
        started.extend(nodes)
        return nodes

    try:
        yield factory
    finally:
        stop_nodes(started)
