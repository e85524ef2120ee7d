"""From one run's raw record to the figures the report shows."""

from __future__ import annotations

import math
import statistics
from typing import Any

from scenarios import HAPROXY, OURS


def percentile(values: list[float], q: float) -> float | None:
    """The q-th percentile (0-100), linear interpolation; None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    position = (len(ordered) - 1) * q / 100
    low, high = math.floor(position), math.ceil(position)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def summarize(record: dict[str, Any]) -> dict[str, Any]:
    """The figures of one run; ``valid`` is False when the crawl wrote no result."""
    result = record.get("result")
    pages = record["pages"]
    if not result or result.get("started") is None:
        return {"valid": False, "finished": record.get("finished", False), "lost": pages}
    start = result["started"]
    ok_rows = {row[0]: row for row in result["ok"]}
    error_rows = {row[0]: row for row in result["errors"] if row[0] not in ok_rows}
    times = [row[1] for row in result["ok"]] + [row[1] for row in result["errors"]]
    end = max(times) if times else start
    completion = max(end - start, 1e-9)
    ok = len(ok_rows)
    latencies = [row[2] for row in ok_rows.values() if row[2] is not None]
    done = sorted(row[1] for row in ok_rows.values())
    first, last = len(done) // 8, len(done) * 7 // 8
    steady = None
    if last - first >= 10 and done[last] > done[first]:
        steady = (last - first) / (done[last] - done[first]) / record["capacity"]
    stats = result.get("stats", {})
    figures: dict[str, Any] = {
        "valid": True,
        "finished": record["finished"],
        "completion_s": completion,
        "ok": ok,
        "lost": pages - ok,
        "errors": len(error_rows),
        "missing": pages - ok - len(error_rows),
        "error_kinds": _count(row[3] for row in error_rows.values()),
        "throughput": ok / completion,
        "share": ok / completion / record["capacity"],
        # The rate between the 1/8th and the 7/8th page: without the start and the end.
        "steady_share": steady,
        "p50_ms": _ms(percentile(latencies, 50)),
        "p95_ms": _ms(percentile(latencies, 95)),
        "p99_ms": _ms(percentile(latencies, 99)),
        "max_ms": _ms(max(latencies) if latencies else None),
        "cpu_per_1000": (result["cpu_total"] - result["cpu_at_open"]) * 1000 / pages,
        "cpu_total": result["cpu_total"],
        "peak_rss_mb": result["maxrss_bytes"] / 2**20,
        "scrapy_retries": int(stats.get("retry/count", 0)),
        "retries": None,
        "redispatches": None,
        "downs": None,
        "haproxy_cpu_per_1000": None,
        # 504s the nodes answered (renders thrown away), where the nodes were asked.
        "answered_504": _answered_504(record),
    }
    if record["contender"] in OURS:
        figures["retries"] = int(stats.get("splash_cluster/retries", 0))
        figures["redispatches"] = int(stats.get("splash_cluster/redispatches", 0))
        figures["downs"] = sum(
            int(v)
            for k, v in stats.items()
            if k.startswith("splash_cluster/nodes/") and k.endswith("/downs")
        )
    elif record["contender"] == HAPROXY and record.get("haproxy"):
        figures["retries"] = record["haproxy"]["retries"]
        figures["redispatches"] = record["haproxy"]["redispatches"]
        figures["downs"] = record["haproxy"]["downs"]
        if record.get("haproxy_cpu") is not None:
            figures["haproxy_cpu_per_1000"] = record["haproxy_cpu"] * 1000 / pages
    return figures


def per_second(record: dict[str, Any]) -> list[int]:
    """Pages answered (callback) in each second since the crawl's first request."""
    result = record.get("result") or {}
    start = result.get("started")
    if start is None:
        return []
    bins: list[int] = []
    for row in result["ok"]:
        second = int(row[1] - start)
        while len(bins) <= second:
            bins.append(0)
        bins[second] += 1
    return bins


def latencies_ms(record: dict[str, Any]) -> list[float]:
    result = record.get("result") or {}
    return [row[2] * 1000 for row in result.get("ok", []) if row[2] is not None]


def detections(record: dict[str, Any]) -> list[dict[str, Any]]:
    """When the contender's balancer marked node-1 DOWN or UP, in seconds since the start."""
    result = record.get("result") or {}
    start = result.get("started")
    if start is None:
        return []
    if record["contender"] in OURS:
        return [
            {"t": t - start, "node": node, "state": state}
            for t, node, state, _ in result.get("node_events", [])
        ]
    return [
        {"t": c["t"], "node": c["node"], "state": c["state"]}
        for c in record.get("haproxy_changes", [])
    ]


def median_figures(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Median of each figure over the runs; losses and errors as the worst run."""
    valid = [r for r in runs if r["valid"]]
    out: dict[str, Any] = {"runs": len(runs), "valid_runs": len(valid)}
    if not valid:
        out["lost_max"] = max((r["lost"] for r in runs), default=None)
        return out
    for key in (
        "completion_s",
        "throughput",
        "share",
        "steady_share",
        "p50_ms",
        "p95_ms",
        "p99_ms",
        "answered_504",
        "max_ms",
        "cpu_per_1000",
        "peak_rss_mb",
        "retries",
        "redispatches",
        "scrapy_retries",
        "downs",
        "haproxy_cpu_per_1000",
        "ok",
    ):
        values = [r[key] for r in valid if r.get(key) is not None]
        out[key] = statistics.median(values) if values else None
    for key in ("completion_s", "share"):
        values = [r[key] for r in valid]
        out[key + "_min"], out[key + "_max"] = min(values), max(values)
    out["lost_max"] = max(r["lost"] for r in runs)
    out["lost_total"] = sum(r["lost"] for r in runs)
    out["errors_max"] = max(r.get("errors", 0) for r in valid)
    out["missing_max"] = max(r.get("missing", 0) for r in valid)
    out["unfinished"] = sum(1 for r in runs if not r["finished"])
    kinds: dict[str, int] = {}
    for r in valid:
        for kind, n in r["error_kinds"].items():
            kinds[kind] = kinds.get(kind, 0) + n
    out["error_kinds"] = kinds
    return out


def _answered_504(record: dict[str, Any]) -> int | None:
    """504s answered by the nodes (their own counts; None if a node could not tell)."""
    counts = [n.get("answered_504") for n in record.get("node_stats", {}).values()]
    if not counts or any(c is None for c in counts):
        return None
    return sum(counts)


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else seconds * 1000


def _count(values: Any) -> dict[str, int]:
    counts: dict[str, int] = {}
    for value in values:
        counts[value] = counts.get(value, 0) + 1
    return counts
