"""The end-to-end tier: real Scrapy crawls through real Splash 3.5 nodes.

Run it with ``.venv/bin/python -m pytest tests/e2e -q`` (naming the folder or a
file in it asks for it), or add it to a whole run with ``SPLASH_E2E=1``. A
plain ``pytest`` (``testpaths = tests``) does not collect this folder: the
tier installs Debian packages and a Splash venv on first use and takes a few
minutes, which the unit tier must not. ``--e2e`` asks for it too, where pytest
sees this file before parsing the command line (when the folder is named).

Asked for, the tier never skips: if Splash cannot be installed or a node
cannot start, every test fails with the reason (a session fixture that fails
fails each test that uses it, without trying again).

Fixtures: ``splash_install`` (idempotent install, timed), ``site`` (the local
JavaScript site), ``real_nodes`` (two real nodes for the whole session),
``nodes`` (the same nodes, repaired before each test: unfrozen, restarted),
``measurements`` (numbers printed at the end of the run, and written as JSON to
``$SPLASH_E2E_REPORT`` when set).
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from scripts.splash import (
    RealSplashNode,
    SplashError,
    SplashInstall,
    SplashInstallError,
    free_ports,
    install,
    start_in_parallel,
)
from tests.e2e.site import JsSite

E2E_DIR = Path(__file__).resolve().parent
#: Per test, fixtures included: the first test pays a cold install (about a
#: minute with downloads) and the maxrss test waits for Splash's 60 s check.
TEST_TIMEOUT = 600
NODE_COUNT = 2
NODE_SLOTS = 5

_MEASUREMENTS = pytest.StashKey[dict[str, Any]]()


def pytest_addoption(parser: pytest.Parser) -> None:
    # ValueError: tests/conftest.py registered it already (so that a run from
    # the root understands ``pytest --e2e``).
    with contextlib.suppress(ValueError):
        parser.addoption(
            "--e2e", action="store_true", default=False, help="run the real-Splash tier (tests/e2e)"
        )


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "e2e: end-to-end test against real Splash nodes (tests/e2e; slow)"
    )


def _inside(path: Path) -> bool:
    return path == E2E_DIR or E2E_DIR in path.parents


def e2e_requested(config: pytest.Config) -> bool:
    """True when this run asked for the tier: SPLASH_E2E=1, --e2e, or a path into it."""
    if os.environ.get("SPLASH_E2E", "") not in ("", "0"):
        return True
    if config.getoption("--e2e", default=False):
        return True
    if config.args_source != pytest.Config.ArgsSource.ARGS:
        return False
    base = config.invocation_params.dir
    return any(_inside((base / arg.split("::")[0]).resolve()) for arg in config.args)


def pytest_ignore_collect(collection_path: Path, config: pytest.Config) -> bool | None:
    """Keeps the tier out of a plain ``pytest`` run; None lets other rules decide."""
    if _inside(collection_path.resolve()) and not e2e_requested(config):
        return True
    return None


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if _inside(Path(item.path).resolve()):
            item.add_marker(pytest.mark.timeout(TEST_TIMEOUT))


# -- measurements -------------------------------------------------------------------


@pytest.fixture(scope="session")
def measurements(pytestconfig: pytest.Config) -> dict[str, Any]:
    """Numbers the tests measured; printed in the terminal summary."""
    return pytestconfig.stash.setdefault(_MEASUREMENTS, {})


def pytest_terminal_summary(terminalreporter: Any, config: pytest.Config) -> None:
    data = config.stash.get(_MEASUREMENTS, None)
    if not data:
        return
    terminalreporter.write_sep("-", "real Splash measurements")
    for key, value in data.items():
        terminalreporter.write_line(f"{key}: {json.dumps(value, default=str)}")
    report = os.environ.get("SPLASH_E2E_REPORT")
    if report:
        Path(report).write_text(json.dumps(data, indent=2, default=str))
        terminalreporter.write_line(f"written to {report}")


# -- Splash ---------------------------------------------------------------------------


@pytest.fixture(scope="session")
def splash_install(measurements: dict[str, Any]) -> SplashInstall:
    """Splash 3.5 installed (or found installed) under the cache directory."""
    failure: SplashInstallError | None = None
    try:
        result = install()
    except SplashInstallError as error:
        failure = error
    if failure is not None:  # outside the except: one message, not a chained pair
        pytest.fail(f"SPLASH INSTALL FAILED, the e2e tier cannot run:\n{failure}", pytrace=False)
    measurements["install"] = {
        "home": str(result.home),
        "reused": result.reused,
        "seconds": round(result.seconds, 2),
    }
    return result


def start_nodes(nodes: list[RealSplashNode]) -> None:
    """Starts nodes in parallel (each waits for its own /_ping); raises the first failure."""
    start_in_parallel(nodes)


def make_node(
    install: SplashInstall, log_dir: Path, name: str, port: int = 0, **kwargs: Any
) -> RealSplashNode:
    """A node of this test run: it ends itself if the run dies (parent_pid)."""
    return RealSplashNode(
        port,
        slots=NODE_SLOTS,
        home=install.home,
        log_dir=log_dir,
        name=name,
        parent_pid=os.getpid(),
        **kwargs,
    )


@pytest.fixture(scope="session")
def splash_logs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Where the nodes of this run write their logs (kept by pytest's tmp_path rules)."""
    return tmp_path_factory.mktemp("splash-logs")


@pytest.fixture(scope="session")
def real_nodes(
    splash_install: SplashInstall, splash_logs: Path, measurements: dict[str, Any]
) -> Iterator[list[RealSplashNode]]:
    """Two real nodes for the session, stopped (with their Xvfb) even if tests fail."""
    ports = free_ports(NODE_COUNT)
    nodes = [
        make_node(splash_install, splash_logs, f"node-{i + 1}", port)
        for i, port in enumerate(ports)
    ]
    try:
        failure: SplashError | None = None
        try:
            start_nodes(nodes)
        except SplashError as error:
            failure = error
        if failure is not None:
            pytest.fail(f"A REAL SPLASH NODE DID NOT START:\n{failure}", pytrace=False)
        measurements["node_start_seconds"] = [round(n.start_seconds or 0, 2) for n in nodes]
        yield nodes
    finally:
        for node in nodes:
            node.stop()


@pytest.fixture
def nodes(real_nodes: list[RealSplashNode]) -> list[RealSplashNode]:
    """The session's nodes, each running, unfrozen and answering /_ping: a test
    that hurt a node leaves the next one a healthy cluster."""
    for node in real_nodes:
        if node.frozen:
            node.unfreeze()
        if not node.running:
            node.restart()
        assert node.ping(timeout=5.0), f"{node} does not answer /_ping:\n{node.log_tail()}"
    return real_nodes


@pytest.fixture(scope="session")
def site() -> Iterator[JsSite]:
    """The local JavaScript site, on a free loopback port."""
    server = JsSite()
    try:
        yield server
    finally:
        server.stop()
