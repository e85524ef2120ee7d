"""Many crawler processes, one Splash fleet, through a real Redis: real
Scrapy crawls in their own processes, mock Splash nodes, Debian's
redis-server (killed and restarted for real)."""

from __future__ import annotations

import base64
import json
import subprocess
import time
import urllib.request
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from scrapy_splash_cluster.cli import main as cli_main

from tests.crawl_helpers import Crawl, CrawlResult, wait_for
from tests.redis_server import RedisServer, free_port
from tests.test_scrapy import assert_clean, errors, pages, settings_for


@pytest.fixture
def redis() -> Iterator[RedisServer]:
    server = RedisServer()
    try:
        yield server
    finally:
        server.stop()


def fleet_settings(nodes, redis: RedisServer, prefix: str, **extra: Any) -> dict[str, Any]:
    defaults = {
        "SPLASH_CLUSTER_MAXCONN": 3,
        "CONCURRENT_REQUESTS": 8,
        "CONCURRENT_REQUESTS_PER_DOMAIN": 8,
    }
    return settings_for(
        nodes,
        SPLASH_CLUSTER_REDIS_URL=redis.url,
        SPLASH_CLUSTER_REDIS_KEY_PREFIX=prefix,
        **{**defaults, **extra},
    )


def new_prefix() -> str:
    return f"test-{uuid.uuid4().hex[:8]}"


def in_progress(nodes) -> int:
    return sum(n.stats()["in_progress"] for n in nodes)


def redis_cli(redis: RedisServer, *args: str) -> str:
    return subprocess.run(
        ["redis-cli", "-p", str(redis.port), *args], capture_output=True, text=True, check=True
    ).stdout.strip()


def leases(redis: RedisServer, prefix: str) -> list[str]:
    """Every lease of the fleet in Redis, expired or not."""
    out: list[str] = []
    for key in redis_cli(redis, "--scan", "--pattern", f"{{{prefix}}}:leases:*").split():
        out.extend(redis_cli(redis, "ZRANGE", key, "0", "-1").split())
    return out


def assert_every_page(result: CrawlResult, count: int) -> None:
    assert_clean(result)
    assert not errors(result), errors(result)[:3]
    assert sorted(i["index"] for i in result.items) == list(range(count))


def test_four_crawlers_never_put_more_than_maxconn_on_a_node(splash_nodes, redis):
    # Nodes accept 20 at once, as a Splash with --slots 20 queues them: only
    # the fleet's count can keep each at maxconn 3 (alone, each crawler's
    # own balancer would put up to 4 x 3 = 12 on every node).
    nodes = splash_nodes(3, latency=0.15, slots=20)
    prefix = new_prefix()
    crawls = [
        Crawl(fleet_settings(nodes, redis, prefix), pages(45, domain=f"site{i}.com"))
        for i in range(4)
    ]
    results = [c.result() for c in crawls]
    for result in results:
        assert_every_page(result, 45)
        assert "shared with every crawler of the fleet" in result.log
    assert [n.stats()["max_in_progress"] for n in nodes] == [3, 3, 3]
    assert leases(redis, prefix) == [], "every lease was given back"


def test_a_crawler_killed_mid_crawl_frees_its_slots_by_ttl(splash_nodes, redis):
    nodes = splash_nodes(3, latency=0.3, slots=20)
    prefix = new_prefix()
    ttl = 2.0
    settings = fleet_settings(nodes, redis, prefix, SPLASH_CLUSTER_REDIS_LEASE_TTL=ttl)
    victim = Crawl(settings, pages(200, domain="victim.com"))
    # The victim alone fills the fleet (9 slots) before the others start.
    wait_for(lambda: len(leases(redis, prefix)) == 9, "the victim's 9 leases")
    others = [Crawl(settings, pages(60, domain=f"site{i}.com")) for i in range(3)]
    victim.kill()
    victim.result()
    killed_at = time.monotonic()
    # Its leases stay until they expire: nobody gave them back.
    gone_after = wait_for(
        lambda: not any(f"/{victim.proc.pid}/" in lease for lease in leases(redis, prefix)),
        "the killed crawler's leases to expire",
    )
    assert gone_after <= ttl + 1.0, gone_after
    for node in nodes:
        node.reset_stats()
    results = [c.result() for c in others]
    for result in results:
        assert_every_page(result, 60)
    # The survivors used the freed slots: every node at maxconn again, no more.
    assert [n.stats()["max_in_progress"] for n in nodes] == [3, 3, 3]
    assert time.monotonic() - killed_at > gone_after


def stats_seen_by(port: int) -> dict[str, Any] | None:
    """One crawler's /stats.json (None before its page listens)."""
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/stats.json",
        headers={"Authorization": "Basic " + base64.b64encode(b"scrapy:pw").decode()},
    )
    try:
        with urllib.request.urlopen(request, timeout=2) as answer:
            return json.loads(answer.read())
    except OSError:
        return None


def fleet_seen_by(port: int) -> dict[str, Any] | None:
    """The fleet as one crawler's stats page shows it (None before it listens)."""
    stats = stats_seen_by(port)
    return None if stats is None else stats["fleet"]


def test_redis_killed_mid_crawl_and_back_loses_nothing(splash_nodes, redis):
    nodes = splash_nodes(3, latency=0.15, slots=20)
    prefix = new_prefix()
    ports = [free_port() for _ in range(4)]
    crawls = [
        Crawl(
            fleet_settings(
                nodes,
                redis,
                prefix,
                SPLASH_CLUSTER_REDIS_LEASE_TTL=3.0,
                SPLASH_CLUSTER_STATS_PORT=port,
                SPLASH_CLUSTER_STATS_PASSWORD="pw",
            ),
            pages(150, domain=f"site{i}.com"),
        )
        for i, port in enumerate(ports)
    ]
    # Redis dies once every crawler has seen the four of them: the shares
    # are split among the processes each last saw alive.
    for port in ports:
        wait_for(
            lambda port=port: len((fleet_seen_by(port) or {}).get("processes", [])) == 4,
            "every crawler to see the whole fleet",
        )
    redis.kill()
    # Each crawler falls back on its share (3 slots among 4 crawlers: 1, 1,
    # 1, 0 per node). The renders a crawler held above its share when Redis
    # died end within one render (0.15 s) while the others take theirs, so
    # the count starts once they have: from then on, through Redis coming
    # back, no node runs more than maxconn.
    time.sleep(0.5)
    for node in nodes:
        node.reset_stats()
    time.sleep(0.5)
    redis.start()
    results = [c.result() for c in crawls]
    for result in results:
        assert_every_page(result, 150)
        assert result.log.count("Redis does not answer") == 1, result.log[-2000:]
        assert "Redis answers again" in result.log
    assert max(n.stats()["max_in_progress"] for n in nodes) <= 3


def verdict(redis: RedisServer, prefix: str, node) -> str:
    return redis_cli(redis, "HGET", f"{{{prefix}}}:verdicts", node.url)


def test_a_node_one_crawler_found_dead_is_down_for_every_crawler(splash_nodes, redis):
    nodes = splash_nodes(3, latency=0.2, slots=20)
    prefix = new_prefix()
    settings = fleet_settings(nodes, redis, prefix)
    first = Crawl(settings, pages(120, domain="first.com"))
    wait_for(lambda: len(leases(redis, prefix)) >= 6, "the first crawler at work")
    nodes[0].kill()
    wait_for(lambda: verdict(redis, prefix, nodes[0]).startswith("DOWN"), "the fleet's verdict")
    # Crawlers that start now never met the dead node: they must not try it.
    later = [Crawl(settings, pages(40, domain=f"site{i}.com")) for i in range(2)]
    results = [c.result() for c in [first, *later]]
    for result, count in zip(results, [120, 40, 40], strict=True):
        assert_every_page(result, count)
    for result in results[1:]:
        tried_dead = [
            attempt
            for item in result.items
            for attempt in item["attempts"]
            if attempt[0] == nodes[0].url
        ]
        assert tried_dead == [], tried_dead[:3]
        assert f"Splash node {nodes[0].url} is DOWN: DOWN for the fleet" in result.log


def prober(redis: RedisServer, prefix: str) -> str:
    return redis_cli(redis, "GET", f"{{{prefix}}}:prober")


def test_when_the_prober_dies_another_crawler_probes(splash_nodes, redis):
    nodes = splash_nodes(3, latency=0.2, slots=20)
    prefix = new_prefix()
    settings = fleet_settings(nodes, redis, prefix)
    first = Crawl(settings, pages(400, domain="first.com"))
    wait_for(lambda: f"/{first.proc.pid}/" in prober(redis, prefix), "the first crawler to probe")
    second = Crawl(settings, pages(150, domain="second.com"))
    wait_for(lambda: len(leases(redis, prefix)) >= 6, "both at work")
    first.kill()
    first.result()
    # The lock lives two probe intervals (0.4 s): the second takes it over.
    wait_for(lambda: f"/{second.proc.pid}/" in prober(redis, prefix), "the second to probe")
    # A frozen node answers nothing and refuses nothing: only probes find it.
    nodes[0].freeze()
    try:
        wait_for(lambda: verdict(redis, prefix, nodes[0]).startswith("DOWN"), "DOWN by probes")
    finally:
        nodes[0].unfreeze()
    result = second.result()
    assert_every_page(result, 150)
    assert "this process now runs the fleet's Splash probes" in result.log
    assert f"Splash node {nodes[0].url} is DOWN: 2 failed probes in a row" in result.log


def test_status_prints_the_fleet_as_redis_holds_it(splash_nodes, redis, capsys):
    nodes = splash_nodes(3, latency=0.3, slots=20)
    prefix = new_prefix()
    crawls = [
        Crawl(fleet_settings(nodes, redis, prefix), pages(60, domain=f"site{i}.com"))
        for i in range(2)
    ]
    wait_for(lambda: len(leases(redis, prefix)) >= 6, "the fleet at work")
    # One crawler alone can hold six leases before the other has joined, and
    # the prober lock lives two probe intervals (on a loaded machine it can
    # lapse between two renewals): read until the fleet shows both crawlers
    # and a prober.
    seen: dict[str, Any] = {}

    def status_with_both_and_a_prober() -> bool:
        seen["code"] = cli_main(["status", "--redis", redis.url, "--prefix", prefix, "--json"])
        seen["fleet"] = json.loads(capsys.readouterr().out)
        fleet = seen["fleet"]
        return len(fleet["processes"]) == 2 and fleet["prober"] is not None

    wait_for(status_with_both_and_a_prober, "both crawlers and a prober in the fleet's status")
    code, fleet = seen["code"], seen["fleet"]
    for crawl in crawls:
        assert_every_page(crawl.result(), 60)
    assert code == 0
    assert sorted(n["url"] for n in fleet["nodes"]) == sorted(n.url for n in nodes)
    assert all(n["maxconn"] == 3 and n["in_flight"] <= 3 for n in fleet["nodes"])
    assert sum(n["in_flight"] for n in fleet["nodes"]) >= 6
    assert len(fleet["processes"]) == 2 and fleet["prober"] in fleet["processes"]
    # A Redis that is not there: exit 2, the setting named, no password shown.
    code = cli_main(["status", "--redis", f"redis://:pw-secret@127.0.0.1:{free_port()}/0"])
    err = capsys.readouterr().err
    assert code == 2
    assert "SPLASH_CLUSTER_REDIS_URL" in err and "pw-secret" not in err, err


@pytest.mark.parametrize(
    ("url", "says"),
    [
        ("http://127.0.0.1:6379/0", "redis:// or rediss:// URL"),
        ("redis://:pw-secret@127.0.0.1:{closed}/0", "SPLASH_CLUSTER_REDIS_URL"),
        ("redis://:wrong-secret@127.0.0.1:{auth}/0", "SPLASH_CLUSTER_REDIS_URL"),
    ],
    ids=["bad-scheme", "refused", "auth-failed"],
)
def test_a_fleet_that_cannot_be_joined_stops_the_crawl_before_its_first_request(
    splash_nodes, url, says
):
    (node,) = splash_nodes(1)
    guarded = RedisServer(password="right-secret")
    try:
        url = url.format(closed=free_port(), auth=guarded.port)
        result = Crawl(settings_for([node], SPLASH_CLUSTER_REDIS_URL=url), pages(3)).result()
    finally:
        guarded.stop()
    assert result.returncode != 0 or result.finish_reason != "finished"
    assert says in result.log, result.log[-2000:]
    assert "secret" not in result.log
    assert node.stats()["requests"] == 0, "a request went out"


def nodes_seen_by(port: int) -> list[dict[str, Any]]:
    """One crawler's view of its nodes, from its stats page ([] before it listens)."""
    stats = stats_seen_by(port)
    return [] if stats is None else stats["nodes"]


def test_drains_hold_for_every_crawler_of_the_fleet(splash_nodes, redis):
    # Node c's --maxrss check is far off: it stays up, drained, all along.
    a, b, c = splash_nodes(3, slots=3, latency=0.02, maxrss=300, maxrss_check=300)
    prefix = new_prefix()
    ports = [free_port(), free_port()]
    crawls = [
        Crawl(
            fleet_settings(
                [a, b, c],
                redis,
                prefix,
                SPLASH_CLUSTER_STATS_PORT=port,
                SPLASH_CLUSTER_STATS_PASSWORD="pw",
                SPLASH_CLUSTER_NODE_MAXRSS=300,
            ),
            pages(500, domain=f"site{i}.com", args={"wait": 0.05}),
        )
        for i, port in enumerate(ports)
    ]

    def drains(index: int, idle: bool = True) -> list[list[str] | None]:
        """Node `index`'s drain causes as each crawler sees it; with `idle`,
        None while the crawler has renders in flight there."""
        seen = [nodes_seen_by(port) for port in ports]
        return [
            n[index]["drain"] if n and (n[index]["in_flight"] == 0 or not idle) else None
            for n in seen
        ]

    wait_for(lambda: all(len(nodes_seen_by(p)) == 3 for p in ports), "both stats pages")
    wait_for(lambda: a.stats()["requests"] > 20, "renders on node a")
    # An operator drains node a on the first crawler's page: both stop.
    stats = f"http://scrapy:pw@127.0.0.1:{ports[0]}"
    assert cli_main(["drain", "--stats", stats, a.url]) == 0
    wait_for(lambda: drains(0) == [["operator"], ["operator"]], "node a drained for both")
    at_drain = a.stats()["requests"]
    # Node c passes its --maxrss: the fleet's prober drains it for both.
    c.set_rss(400)
    wait_for(lambda: drains(2) == [["maxrss"], ["maxrss"]], "node c drained for both")
    at_c_drain = c.stats()["requests"]
    wait_for(lambda: b.stats()["requests"] > at_drain + 50, "renders going on, on node b")
    assert a.stats()["requests"] == at_drain and c.stats()["requests"] == at_c_drain
    # Ready on the other crawler's page: both take node a again.
    other = f"http://scrapy:pw@127.0.0.1:{ports[1]}"
    assert cli_main(["ready", "--stats", other, a.url]) == 0
    wait_for(lambda: drains(0, idle=False) == [[], []], "node a ready for both")
    wait_for(lambda: a.stats()["requests"] > at_drain, "renders on node a again")
    for crawl in crawls:
        result = crawl.result()
        assert_every_page(result, 500)
    assert c.stats()["requests"] == at_c_drain


def test_adaptive_limits_are_the_fleets_not_each_crawlers(splash_nodes, redis):
    # Node a accepts 8 renders but runs 1 at full speed (a CPU-bound Splash
    # on a small host); b has room for all 8. Two crawlers share them. With
    # a limit per crawler, a would get up to twice its limit; the fleet's
    # limit holds for both together: a starts at 1 (slow start, fleet-wide),
    # jumps to half its slots once one render ran alone, and only comes down.
    a = splash_nodes(1, slots=8, latency=0.2, capacity=1)[0]
    b = splash_nodes(1, slots=8, latency=0.2, capacity=8)[0]
    prefix = new_prefix()
    settings = fleet_settings(
        [a, b],
        redis,
        prefix,
        SPLASH_CLUSTER_MAXCONN=8,
        SPLASH_CLUSTER_ADAPTIVE=True,
        CONCURRENT_REQUESTS=16,
        CONCURRENT_REQUESTS_PER_DOMAIN=16,
        LOG_LEVEL="DEBUG",
    )
    crawls = [
        Crawl(settings, pages(150, domain=f"site{i}.com", args={"timeout": 1.0})) for i in range(2)
    ]
    results = [c.result() for c in crawls]
    for result in results:
        assert_every_page(result, 150)
    assert a.stats()["max_in_progress"] <= 4, a.stats()
    # b was given more than a process's share of a's limit would allow.
    assert b.stats()["max_in_progress"] > 4, b.stats()
    held = redis_cli(redis, "HGET", f"{{{prefix}}}:verdicts", f"limit:{a.url}")
    limit, best = held.split()
    assert 1 <= int(limit) <= 3 and float(best) > 0, held
    # One crawler decided (the fleet's prober), the other adopted.
    decided = [r for r in results if f"Splash node {a.url} limit 1 -> 4" in r.log]
    adopted = [r for r in results if "the fleet's limit" in r.log]
    assert len(decided) >= 1 and adopted, [r.log[-2000:] for r in results]
    for result in results:
        assert result.stats[f"splash_cluster/nodes/127.0.0.1:{a.port}/limit"] <= 4


def test_a_crawler_whose_adaptive_setting_differs_from_the_fleets_is_refused(splash_nodes, redis):
    # The fleet's limits cap every crawler: one without adaptive limits
    # would be held at limits nobody moves. The first to join decides.
    (node,) = splash_nodes(1, latency=0.5)
    prefix = new_prefix()
    first = Crawl(fleet_settings([node], redis, prefix, SPLASH_CLUSTER_ADAPTIVE=True), pages(40))
    try:
        wait_for(
            lambda: redis_cli(redis, "ZCARD", f"{{{prefix}}}:processes") == "1",
            "the first crawler to join",
        )
        second = Crawl(fleet_settings([node], redis, prefix), pages(3)).result()
    finally:
        first.kill()
        first.result()  # reaps it
    assert second.returncode != 0 or second.finish_reason != "finished"
    assert "runs with SPLASH_CLUSTER_ADAPTIVE = True" in second.log, second.log[-2000:]
    assert "this crawler has False" in second.log
    assert not second.items, "a request of the refused crawler went out"
