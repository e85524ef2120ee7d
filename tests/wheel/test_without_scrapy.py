"""The package installed without Scrapy: the asyncio API and the command
line work, and each Scrapy component says that it needs Scrapy.

`make test-wheels` runs this file, with the core's asyncio tests, in venvs
that hold the wheel and no Scrapy; where Scrapy is installed those tests are
skipped. The check that the asyncio API never imports Scrapy runs everywhere."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest
import scrapy_splash_cluster
from scrapy_splash_cluster import _core

SCRAPY_INSTALLED = importlib.util.find_spec("scrapy") is not None
needs_no_scrapy = pytest.mark.skipif(
    SCRAPY_INSTALLED,
    reason="Scrapy is installed; `make test-wheels` runs this in a venv without it",
)
# The package's names that the Rust core does not provide: the Scrapy parts.
SCRAPY_NAMES = [n for n in scrapy_splash_cluster.__all__ if not hasattr(_core, n)]


def test_the_asyncio_api_and_the_mock_nodes_do_not_import_scrapy():
    code = (
        "import sys, scrapy_splash_cluster.testing, scrapy_splash_cluster.cli\n"
        "from scrapy_splash_cluster import SplashCluster, NodeConfig, ClusterError\n"
        "print(sorted(m for m in sys.modules if m == 'scrapy' or m.startswith('scrapy.')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


@needs_no_scrapy
@pytest.mark.parametrize("name", SCRAPY_NAMES)
def test_each_scrapy_component_says_that_it_needs_scrapy(name):
    with pytest.raises(ModuleNotFoundError) as raised:
        getattr(scrapy_splash_cluster, name)
    message = str(raised.value)
    assert f"scrapy_splash_cluster.{name} needs Scrapy, which is not installed" in message
    assert "pip install 'scrapy>=2.19'" in message
    assert raised.value.name == "scrapy"


@needs_no_scrapy
def test_from_import_of_a_scrapy_component_says_that_it_needs_scrapy():
    with pytest.raises(ImportError, match=r"SplashClusterAddon needs Scrapy"):
        from scrapy_splash_cluster import SplashClusterAddon  # noqa: F401


@needs_no_scrapy
def test_the_command_line_runs():
    command = Path(sys.executable).parent / "splash-cluster"
    out = subprocess.run([command, "--help"], capture_output=True, text=True, check=True)
    assert "status" in out.stdout
