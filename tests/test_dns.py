"""DNS discovery through the system's real resolver: a real crawl runs in its
own mount namespace whose /etc/hosts the test rewrites while it runs (glibc
reads the file on every lookup, as it reads Docker's or Kubernetes' DNS), over
mock Splash nodes on 127.0.0.x addresses that share one port."""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

from tests.crawl_helpers import Crawl, wait_for
from tests.redis_server import RedisServer, free_port
from tests.test_scrapy import assert_clean, errors, pages, settings_for

NAME = "splashfleet"
PASSWORD = "dns-test-pw"


def can_own_a_mount_namespace() -> bool:
    if os.geteuid() != 0 or shutil.which("unshare") is None:
        return False
    probe = subprocess.run(
        ["unshare", "--mount", "true"], capture_output=True, text=True, check=False
    )
    return probe.returncode == 0


if not can_own_a_mount_namespace():
    if os.environ.get("CI"):
        raise RuntimeError("the DNS tests need root and unshare(1) for a mount namespace")
    pytest.skip("needs root and unshare(1) for a mount namespace", allow_module_level=True)


class ResolverView:
    """The files a crawl's resolver reads: /etc/hosts (rewritten in place, so
    the bind mount keeps seeing it), /etc/resolv.conf pointing at a port
    nothing listens on (a name not in the file fails at once, as in a DNS
    outage) and /etc/host.conf with `multi on` (every address of a name)."""

    def __init__(self, tmp: Path) -> None:
        self.hosts = tmp / "hosts"
        self.resolv = tmp / "resolv.conf"
        self.host_conf = tmp / "host.conf"
        self.resolv.write_text("nameserver 127.0.0.1\noptions timeout:1 attempts:1\n")
        self.host_conf.write_text("multi on\n")
        self.set()

    def set(self, *addresses: str) -> None:
        lines = ["127.0.0.1 localhost"] + [f"{a} {NAME}" for a in addresses]
        with open(self.hosts, "r+" if self.hosts.exists() else "w") as f:
            f.seek(0)
            f.truncate()
            f.write("\n".join(lines) + "\n")

    def prefix(self) -> list[str]:
        script = (
            'mount --bind "$1" /etc/hosts && mount --bind "$2" /etc/resolv.conf && '
            'mount --bind "$3" /etc/host.conf && shift 3 && exec "$@"'
        )
        files = [str(self.hosts), str(self.resolv), str(self.host_conf)]
        return [
            "unshare",
            "--mount",
            "--propagation",
            "private",
            "sh",
            "-c",
            script,
            "view",
            *files,
        ]

    def getent(self) -> str:
        command = [*self.prefix(), "getent", "ahostsv4", NAME]
        return subprocess.run(command, capture_output=True, text=True, check=False).stdout


def stats_json(port: int) -> dict:
    token = base64.b64encode(f"scrapy:{PASSWORD}".encode()).decode()
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/stats.json", headers={"Authorization": f"Basic {token}"}
    )
    with urllib.request.urlopen(request, timeout=5) as answer:
        return json.loads(answer.read())


def nodes_by_address(port: int) -> dict[str, dict]:
    """The crawl's nodes now, by the address in their `url (address)`."""
    try:
        report = stats_json(port)
    except OSError:
        return {}
    return {n["url"].rsplit("(", 1)[-1].rstrip(")"): n for n in report["nodes"]}


@pytest.fixture
def fleet_of_addresses(splash_nodes):
    """Mock nodes on 127.0.0.11, .12 and .13, all on one port, as replicas
    of a scaled service are."""
    first = splash_nodes(1, host="127.0.0.11", latency=0.05)[0]
    port = first.port
    others = [splash_nodes(1, host=f"127.0.0.{i}", port=port, latency=0.05)[0] for i in (12, 13)]
    return port, [first, *others]


def test_a_name_follows_dns_while_the_crawl_runs(fleet_of_addresses, tmp_path):
    port, (n11, n12, n13) = fleet_of_addresses
    view = ResolverView(tmp_path)
    view.set("127.0.0.11", "127.0.0.12")
    seen = view.getent()
    assert "127.0.0.11" in seen and "127.0.0.12" in seen, f"the namespace's resolver: {seen}"
    stats_port = free_port()
    settings = settings_for(
        [],
        SPLASH_URLS=[f"http://{NAME}:{port}"],
        SPLASH_CLUSTER_MAXCONN=2,
        SPLASH_CLUSTER_DNS_INTERVAL=0.1,
        SPLASH_CLUSTER_STATS_PORT=stats_port,
        SPLASH_CLUSTER_STATS_PASSWORD=PASSWORD,
        CONCURRENT_REQUESTS=6,
        CONCURRENT_REQUESTS_PER_DOMAIN=6,
    )
    crawl = Crawl(settings, pages(240, args={"wait": 0.05}), prefix=view.prefix())
    wait_for(
        lambda: all(
            nodes_by_address(stats_port).get(a, {}).get("requests", 0) > 0
            for a in ("127.0.0.11", "127.0.0.12")
        ),
        "both addresses of the name taking renders",
    )
    assert n13.stats()["requests"] == 0
    # Scaled: .13 added, .11 gone.
    view.set("127.0.0.12", "127.0.0.13")
    wait_for(
        lambda: nodes_by_address(stats_port).get("127.0.0.13", {}).get("requests", 0) > 0,
        "the new address taking renders",
    )
    # The gone address drained: its renders finished, then it was forgotten.
    wait_for(lambda: "127.0.0.11" not in nodes_by_address(stats_port), "the gone address forgotten")
    gone_total = n11.stats()["requests"]
    # The name stops resolving: its known addresses stay.
    view.set()
    wait_for(
        lambda: stats_json(stats_port)["dns"][0]["error"] is not None,
        "the failed resolution to show",
    )
    assert set(nodes_by_address(stats_port)) == {"127.0.0.12", "127.0.0.13"}
    result = crawl.result()
    assert_clean(result)
    assert len(result.items) == 240 and not errors(result)
    assert n11.stats()["requests"] == gone_total, "a gone address got a new render"
    assert n11.stats()["cancelled"] == 0 and n11.stats()["dropped"] == 0
    served = {i["node_div"] for i in result.items}
    assert served == {n11.name, n12.name, n13.name}
    assert "joins once its probes pass" in result.log
    assert f"cannot resolve {NAME}" in result.log and result.log.count("cannot resolve") == 1


def test_a_shared_fleet_follows_dns_in_every_crawler(fleet_of_addresses, tmp_path):
    # Two crawlers share the fleet through Redis; the name gains an address
    # mid-crawl. Both follow it, and the new node's slots are the fleet's:
    # maxconn 2 for both crawlers together on a node that accepts 20.
    port, (n11, n12, _) = fleet_of_addresses
    view = ResolverView(tmp_path)
    view.set("127.0.0.11")
    redis = RedisServer()
    try:
        ports = [free_port(), free_port()]
        crawls = [
            Crawl(
                settings_for(
                    [],
                    SPLASH_URLS=[f"http://{NAME}:{port}"],
                    SPLASH_CLUSTER_MAXCONN=2,
                    SPLASH_CLUSTER_DNS_INTERVAL=0.1,
                    SPLASH_CLUSTER_REDIS_URL=redis.url,
                    SPLASH_CLUSTER_STATS_PORT=stats_port,
                    SPLASH_CLUSTER_STATS_PASSWORD=PASSWORD,
                    CONCURRENT_REQUESTS=6,
                    CONCURRENT_REQUESTS_PER_DOMAIN=6,
                ),
                pages(200, domain=f"site{i}.com", args={"wait": 0.1}),
                prefix=view.prefix(),
            )
            for i, stats_port in enumerate(ports)
        ]
        wait_for(lambda: n11.stats()["requests"] > 10, "renders on the one address")
        view.set("127.0.0.11", "127.0.0.12")
        wait_for(
            lambda: all(
                nodes_by_address(p).get("127.0.0.12", {}).get("requests", 0) > 0 for p in ports
            ),
            "both crawlers sending renders to the new address",
        )
        results = [c.result() for c in crawls]
    finally:
        redis.stop()
    for result in results:
        assert_clean(result)
        assert len(result.items) == 200 and not errors(result)
        assert "joins once its probes pass" in result.log
    assert n11.stats()["max_in_progress"] == 2 and n12.stats()["max_in_progress"] == 2


def test_a_name_that_resolves_to_nothing_stops_the_start(tmp_path):
    # In its own process: the name must fail in the namespace's resolver.
    view = ResolverView(tmp_path)
    code = (
        "from scrapy_splash_cluster import SplashCluster\n"
        "try:\n"
        f"    SplashCluster(['http://{NAME}:8050'])\n"
        "except ValueError as e:\n"
        "    print(e)\n"
    )
    out = subprocess.run(
        [*view.prefix(), sys.executable, "-c", code], capture_output=True, text=True, check=False
    )
    assert f"invalid nodes[0].url: {NAME!r} does not resolve".replace("'", '"') in out.stdout, (
        out.stdout + out.stderr
    )


async def test_a_name_is_one_node_per_address_shown_with_it(splash_nodes, make_cluster):
    (node,) = splash_nodes(1)
    named = node.url.replace("127.0.0.1", "localhost")
    cluster = make_cluster([named], dns_interval=0)
    # localhost's ::1 twin is not a second node: one family per name.
    assert [n.url for n in cluster.nodes()] == [f"{named} (127.0.0.1)"]
    response = await cluster.request("GET", "/render.html?url=http://example.com/")
    assert response.status == 200 and response.node == f"{named} (127.0.0.1)"
    # The same address named twice is one node.
    both = make_cluster([node.url, named], dns_interval=0)
    assert [n.url for n in both.nodes()] == [node.url]
